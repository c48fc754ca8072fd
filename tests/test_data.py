import json

import numpy as np
import pytest

from onebyte.errors import DataError
from onebyte.tasks.data import load_dataset, split_shards


def test_vader_counts_and_fixed_split():
    ds = load_dataset("vader")
    labels = [e.label for e in ds.train + ds.test]
    assert ds.label_names == ["negative", "positive"]
    assert labels.count(1) == 2580 and labels.count(0) == 3250
    again = load_dataset("vader")
    assert [e.text for e in again.test] == [e.text for e in ds.test]
    assert not {e.text for e in ds.train} & {e.text for e in ds.test}


def test_jsonl_and_csv_with_named_and_given_labels(tmp_path):
    rows = [{"text": f"t{i}", "label": ["bad", "good"][i % 2]} for i in range(10)]
    j = tmp_path / "d.jsonl"
    j.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = tmp_path / "d.csv"
    c.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    for path in (j, c):
        ds = load_dataset(str(path))
        assert ds.label_names == ["bad", "good"] and len(ds.train) + len(ds.test) == 10
    ds = load_dataset(str(j), label_names=["good", "bad"])
    assert {e.text: e.label for e in ds.train + ds.test}["t0"] == 1


@pytest.mark.parametrize("content,needle", [
    ('{"text": "a"}\n', "missing 'label'"),
    ('{"label": "x"}\n', "'text'"),
    ('[1, 2]\n', "JSON object"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', "two labels"),
    ("", "no examples"),
])
def test_malformed_files(tmp_path, content, needle):
    p = tmp_path / "d.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match=needle):
        load_dataset(str(p))


def test_unknown_label_with_given_names(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "maybe"}\n{"text": "b", "label": "yes"}\n')
    with pytest.raises(DataError, match="d.jsonl:1: label 'maybe'"):
        load_dataset(str(p), label_names=["no", "yes"])


def test_shards_partition_the_data():
    ds = load_dataset("vader")
    for alpha in (None, 0.3):
        shards = split_shards(ds.train, 8, alpha, seed=1)
        assert sorted(e.text for s in shards for e in s) == sorted(e.text for e in ds.train)
        assert all(shards)


def test_dirichlet_skews_labels_iid_does_not():
    ds = load_dataset("vader")

    def spread(shards):
        return np.std([np.mean([e.label for e in s]) for s in shards])

    assert spread(split_shards(ds.train, 8, None, 0)) < 0.05
    assert spread(split_shards(ds.train, 8, 0.3, 0)) > 0.15
