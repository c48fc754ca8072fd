"""The dashboard's JSON, the pilot report and the trackers, on real tiny runs and on half-written
directories; every bad input is one line and exit 2."""

import json
import re
import socket
import urllib.request

import pytest

from onebyte.board import find_runs, read_run, state
from onebyte.cli import main
from onebyte.dashboard import Dashboard

TINY = ["--model", "tiny-gpt2", "--task", "vader", "--eval-size", "64", "--samples", "2", "--batch-size", "4"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("board") / "r"
    tb = out.parent / "tb"
    rc = main(["simulate", *TINY, "--peers", "3", "--rounds", "4", "--eval-every", "2", "--no-progress",
               "--out", str(out), "--log-to", f"tensorboard:{tb}"])
    assert rc == 0
    return out


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def test_state_endpoint_matches_the_summary(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    with Dashboard([tiny_run], port=0) as board:
        board.start()
        status, kind, body = _get(board.url + "api/state")
        assert status == 200 and kind == "application/json"
        s = json.loads(body)
        status, _, page = _get(board.url)
        assert status == 200 and b"/plotly.min.js" in page and b"https://" not in page  # nothing from a CDN
        status, _, js = _get(board.url + "plotly.min.js")
        assert status == 200 and len(js) > 1_000_000 and b"plotly" in js[:2000].lower()
        assert json.loads(_get(board.url + "api/runs")[2])["runs"][0]["problems"] == []
    run = s["runs"][0]
    assert run["problems"] == [] and run["run_tag"] == summary["run_tag"]
    assert run["traffic"]["payload_bytes"] == summary["payload_bytes"]
    assert run["traffic"]["payload_per_peer_per_round"] == summary["payload_bytes"] / (3 * 4)
    assert run["traffic"]["data_parallel_per_peer_per_round"] == 2 * 2 / 3 * 4 * summary["tuned_parameters"]
    evals = run["learning"]["evals"]
    assert evals[0]["accuracy"] == summary["eval_before"]["accuracy"]
    assert evals[-1]["accuracy"] == summary["eval_after"]["accuracy"] and [e["round"] for e in evals] == [0, 2, 4]
    row = s["swarm"]["rows"][0]
    assert (row["state_hash"], row["set_digest"], row["records_accepted"]) == (
        summary["state_hash"], summary["set_digest"], summary["records"])
    assert s["swarm"]["consistent"] is True and s["privacy"][0]["private"] is False
    assert run["defences"].startswith("Defences: batches drawn by class, in proportion to the root")
    assert 'id="defences"' in page.decode() and "differential privacy: off" in run["defences"]


def test_half_written_directories_show_what_they_can(tmp_path, tiny_run):
    live = tmp_path / "live"
    live.mkdir()
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    # two complete lines, one bad line in the middle, and a last line cut mid-write; no summary yet
    (live / "metrics.jsonl").write_text(lines[0] + "\n{not json\n" + lines[1] + "\n" + lines[2][:25])
    (live / "run.json").write_text((tiny_run / "run.json").read_text())
    view = read_run(live)
    assert [ln["round"] for ln in view.metrics] == [0, 1]
    assert any("1 line(s) skipped" in p for p in view.problems)
    assert any("summary.json: not written yet" in p for p in view.problems)
    s = state([view])
    assert s["runs"][0]["traffic"]["rounds"] == 2 and s["runs"][0]["traffic"]["payload_per_peer_per_round"] > 0
    assert s["swarm"]["consistent"] is None  # no hash yet: neither green nor red
    (live / "summary.json").write_text('{"state_hash": ')  # being rewritten
    view = read_run(live)
    assert view.summary is None and any(p.startswith("summary.json: unreadable") for p in view.problems)
    json.dumps(state([view]), allow_nan=False)


def test_divergent_replicas_are_red(tmp_path, tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    for i, h in enumerate([summary["state_hash"], "f" * 64]):
        d = tmp_path / "swarm" / f"peer-{i}"
        d.mkdir(parents=True)
        fields = {"state_hash": h, "peer_id": f"{i:x}", "rounds_completed": 4}
        (d / "summary.json").write_text(json.dumps({**summary, **fields}))
    views = [read_run(p) for p in find_runs([tmp_path / "swarm"])]
    s = state(views)
    assert s["swarm"]["consistent"] is False and [r["consistent"] for r in s["swarm"]["rows"]] == [False, False]


def test_report_holds_the_summary_figures_and_fetches_nothing(tmp_path, tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    out = tmp_path / "report.html"
    assert main(["report", str(tiny_run), "--out", str(out)]) == 0
    text = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # every figure is a data: URI
    assert text.count('src="data:image/png;base64,') == 2
    fields = dict(re.findall(r"data-field=(\w+)(?: data-value=\S+)?>([^<]*)<", text))
    assert re.search(rf"data-field=payload_bytes data-value={summary['payload_bytes']}>", text)
    assert fields["accuracy_before"] == f"{100 * summary['eval_before']['accuracy']:.1f} %"
    assert fields["accuracy_after"] == f"{100 * summary['eval_after']['accuracy']:.1f} %"
    assert fields["macro_f1_after"] == f"{100 * summary['eval_after']['macro_f1']:.1f} %"
    assert fields["peers"] == "3" and fields["rounds"] == "4"
    assert fields["payload_bytes"] == f"{summary['payload_bytes']:,} B"
    run = json.loads((tiny_run / "run.json").read_text())["spec"]["train"]
    assert run["balance"] == "sqrt" and run["weighting"] == "examples" and fields["defences"] == (
        "Defences: batches drawn by class, in proportion to the root of its examples (balance = sqrt); sites "
        "weighted by their examples (weighting = examples); records combined by sum; authorship by the swarm "
        "secret (HMAC); differential privacy: off (what each costs: "
        "BENCHMARKS.md: Imbalanced labels, Label skew, Hostile insiders, Accuracy against the privacy budget).")
    recall = summary["eval_after"]["recall"]
    assert [f"{100 * x:.1f} %" for x in recall.values()] == re.findall(r"data-field=recall_after>([^<]*)<", text)


def test_tensorboard_holds_the_metrics_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run.parent / "tb"))
    acc.Reload()
    lines = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "payload_bytes", "forward_passes", "eval/accuracy", "eval/macro_f1"} <= tags
    for tag, key in (("train_loss", ("train_loss",)), ("payload_bytes", ("payload_bytes",)),
                     ("eval/accuracy", ("eval", "accuracy"))):
        expected = {}
        for ln in lines:
            v = ln
            for k in key:
                v = v.get(k) if isinstance(v, dict) else None
            if v is not None:
                expected[ln["round"]] = v
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert got.keys() == expected.keys()
        for step, v in expected.items():
            assert got[step] == pytest.approx(v, rel=1e-6)  # stored as float32


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, tiny_run, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["dashboard", str(tmp_path / "empty")]) == 2
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", str(tiny_run), "--port", str(port)]) == 2
    other = tmp_path / "other"
    other.mkdir()
    summary = json.loads((tiny_run / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**summary, "run_tag": "0" * 32}))
    assert main(["report", str(tiny_run), str(other), "--out", str(tmp_path / "r.html")]) == 2
    assert main(["simulate", *TINY, "--out", str(tmp_path / "x"), "--log-to", "wandb:x", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("onebyte: error: ") for line in err)
    assert "is not a run directory" in err[0] and "is not a directory" in err[1]
    assert f"{port} on 127.0.0.1 is in use" in err[2] and "different run tags" in err[3] and "--log-to" in err[4]
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "x").exists()


def test_defences_name_the_site_weighting_of_runs_written_before_it_had_a_name(tmp_path):
    """A run.json without ``weighting`` counted sites equally, unless it pinned a reference count."""
    from onebyte.board import RunView, defences

    def line(train: dict) -> str:
        return defences(RunView(tmp_path, "r", run={"spec": {"train": train}}), privacy=[])

    assert "sites weighted equally (weighting = equal)" in line({})
    assert "sites weighted by their examples (a site of 40 counting once) (weighting = examples)" in line(
        {"reference_examples": 40})
    assert "sites weighted by their examples (weighting = examples)" in line({"weighting": "examples"})
