"""The command line: real runs on tiny-gpt2, and every bad input is one line and exit 2."""

import json
import subprocess
import sys

import pytest

from onebyte.cli import main

TINY = ["--model", "tiny-gpt2", "--task", "vader", "--eval-size", "64"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    rc = main(["simulate", *TINY, "--peers", "3", "--rounds", "3", "--samples", "4", "--no-progress",
               "--out", str(out)])
    assert rc == 0
    return out


def test_simulate_writes_summary_metrics_curve_ledger(tiny_run):
    s = json.loads((tiny_run / "summary.json").read_text())
    for key in ["peers", "rounds", "samples_per_round", "records", "gradients", "payload_bytes", "codec",
                "eval_before", "eval_after", "state_hash", "set_digest", "forward_passes", "seconds"]:
        assert key in s, key
    assert s["records"] == 9 and s["gradients"] == 36 and s["forward_passes"] == 9 * 3  # grad: a backward pass = 2
    assert s["payload_bytes"] == s["gradients"] + s["records"]  # one byte each + one exponent per record
    assert set(s["eval_after"]) == {"loss", "accuracy", "balanced_accuracy", "macro_f1", "recall"}
    lines = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1, 2] and "eval" in lines[-1]
    assert (tiny_run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_reproduces_state_hash_in_any_order(tiny_run, capsys):
    s = json.loads((tiny_run / "summary.json").read_text())
    for extra in ([], ["--shuffle", "3"], ["--shuffle", "11"]):
        assert main(["replay", "--base", "tiny-gpt2", "--run", str(tiny_run), *extra]) == 0
        out = capsys.readouterr().out
        assert f"state_hash {s['state_hash']}" in out


def test_replay_exports_a_model_that_evaluates_like_the_run(tiny_run, tmp_path, capsys):
    s = json.loads((tiny_run / "summary.json").read_text())
    assert main(["replay", "--base", "tiny-gpt2", "--run", str(tiny_run), "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()
    capsys.readouterr()
    # the run evaluated on eval_subset(test, 64)
    from onebyte.models import load_model
    from onebyte.tasks.data import eval_subset, load_dataset
    from onebyte.tasks.objectives import ObjectiveKind, build_objective

    loaded = load_model(str(tmp_path / "m"))
    ds = load_dataset("vader")
    ev = build_objective(loaded, ds, ObjectiveKind.AUTO, 32).evaluate(eval_subset(ds.test, 64))
    assert ev["accuracy"] == s["eval_after"]["accuracy"]
    assert abs(ev["loss"] - s["eval_after"]["loss"]) < 1e-5


def test_replay_refuses_another_base(tiny_run, capsys):
    assert main(["replay", "--base", "minilm", "--run", str(tiny_run)]) == 2
    assert "not this run's base" in capsys.readouterr().err


def test_ledger_verify(tiny_run, tmp_path, capsys):
    assert main(["ledger", "verify", str(tiny_run / "ledger.obl")]) == 0
    bad = tmp_path / "bad.obl"
    bad.write_bytes((tiny_run / "ledger.obl").read_bytes()[:-3])
    assert main(["ledger", "verify", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torn" in err


def test_simulate_refuses_to_overwrite_a_run(tiny_run, capsys):
    before = (tiny_run / "ledger.obl").read_bytes()
    assert main(["simulate", *TINY, "--rounds", "1", "--no-progress", "--out", str(tiny_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tiny_run / "ledger.obl").read_bytes() == before


@pytest.mark.parametrize("argv,needle", [
    (["simulate", "--out", "x", "--lr", "-1"], "--lr"),
    (["simulate", "--out", "x", "--peers", "0"], "--peers"),
    (["simulate", "--out", "x", "--codec", "fp8"], "--codec"),
    (["simulate", "--out", "x", "--split", "dirichlet:-2"], "--split"),
    (["simulate", "--out", "x", "--tune", "regex:("], "--tune"),
    (["simulate", "--out", "x", "--model", "/no/such/model"], "not a directory"),
    (["simulate", "--out", "x", "--model", "tiny-gpt2", "--task", "/no/such.jsonl"], "no such file"),
    (["simulate", "--out", "x", "--model", "tiny-gpt2", "--task", "data.txt"], ".tsv or .parquet"),
    (["simulate", "--out", "x", "--model", "tiny-gpt2", "--tune", "regex:^nothing$"], "selects no parameters"),
    (["replay", "--base", "tiny-gpt2", "--run", "/no/such/run"], "run.json"),
    (["ledger", "verify", "/no/such/ledger"], "no such ledger"),
    (["eval", "--model", "/nope"], "not a directory"),
    (["frobnicate"], "invalid choice"),
    (["peer", "--out", "x", "--secret-file", "/no/such/secret"], "--secret-file"),
    (["peer", "--out", "x", "--model", "tiny-gpt2", "--shard", "5/2"], "--shard"),
    (["peer", "--out", "x", "--model", "tiny-gpt2", "--dp-epsilon", "3"], "--dp-epsilon: needs --rounds"),
    (["peer", "--out", "x", "--model", "tiny-gpt2", "--peer-id", "-3"], "--peer-id"),
    (["simulate", "--out", "x", "--config", "/no/such/run.toml"], "onebyte init"),
    (["simulate", "--out", "x", "--dp-delta", "2"], "--dp-delta"),
    (["simulate", "--out", "x", "--model", "tiny-gpt2", "--density", "1/3"], "--density: must be 1, 0.5"),
    (["simulate", "--out", "x", "--density", "half"], "--density"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x" / "ledger.obl").exists()


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse exits by itself for unparseable flags
        return exc.code


def test_malformed_data_file_reports_line(tmp_path, capsys):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"\n')
    assert main(["eval", "--model", "tiny-gpt2", "--task", str(f)]) == 2
    assert "d.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onebyte", "ledger", "verify", str(tmp_path / "none.obl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("onebyte: error:") and "Traceback" not in proc.stderr
