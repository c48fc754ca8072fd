"""The Python API: the README's snippet as written, in-memory models and data, and agreement
with the command line."""

import re
import sys
from pathlib import Path

import pytest
import torch

import onebyte
from onebyte.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_RUN = ["--model", "tiny-gpt2", "--task", "vader", "--samples", "2", "--batch-size", "8", "--tune", "all"]


def _snippet() -> str:
    text = README.read_text()
    m = re.search(r"<!-- python-api -->\n```python\n(.*?)```", text, re.S)
    assert m, "the README lost its Python API snippet"
    return m.group(1)


def test_import_does_not_load_torch():
    import subprocess

    code = "import onebyte, sys; onebyte.RunSpec(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_readme_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("hivemind")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "run.toml", *TINY_RUN]) == 0
    (tmp_path / "swarm.key").write_bytes(b"k" * 32)
    scope: dict = {}
    exec(compile(_snippet(), "README.md", "exec"), scope)
    result, tuned, summary = scope["result"], scope["tuned"], scope["summary"]
    # result.model is the fine-tuned model: its tuned weights are the final state's view
    state = tuned.state
    assert result.state_hash == tuned.state_hash == result.summary["state_hash"]
    params = dict(result.model.named_parameters())
    for name, t in state.tensors().items():  # the view is float32(A) * 2^-f, exactly
        assert torch.equal(params[name].detach(), t.float() * 2.0 ** -state.frac_bits[name]), name
    assert result.summary["eval_after"]["loss"] != result.summary["eval_before"]["loss"]
    # the command line's replay gives the same hash
    capsys.readouterr()
    assert main(["replay", "--run", "runs/x"]) == 0
    assert f"state_hash {result.state_hash}" in capsys.readouterr().out
    assert (tmp_path / "finetuned" / "config.json").exists()
    assert summary["rounds_completed"] == 100 and summary["records"] == 100  # the lone peer trained


def test_in_memory_model_and_python_examples(tmp_path):
    from onebyte.models import load_model

    base = load_model("tiny-gpt2")
    data = [(f"text number {i} is {'good' if i % 2 else 'bad'}", "good" if i % 2 else "bad") for i in range(60)]
    spec = onebyte.RunSpec(model="tiny-gpt2", task="mine", train=onebyte.TrainConfig(samples=2, batch_size=8))
    result = onebyte.simulate(spec, out=tmp_path / "r", peers=2, rounds=3, model=(base.model, base.tokenizer),
                              train_data=data)
    assert result.model is base.model  # trained in place, no copy
    assert result.summary["records"] == 6
    fresh = load_model("tiny-gpt2")
    tuned = onebyte.replay(tmp_path / "r", (fresh.model, fresh.tokenizer), shuffle=3)
    assert tuned.state_hash == result.state_hash


def test_in_memory_data_errors_are_data_errors(tmp_path):
    spec = onebyte.RunSpec(model="tiny-gpt2")
    with pytest.raises(onebyte.DataError, match="train_data"):
        onebyte.simulate(spec, out=tmp_path / "r", peers=1, rounds=1, train_data=[object()])
    with pytest.raises(onebyte.ConfigError, match="model"):
        onebyte.simulate(spec, out=tmp_path / "r", peers=1, rounds=1, model="not a pair")


def test_replay_with_another_base_is_a_model_error(tmp_path):
    spec = onebyte.RunSpec(model="tiny-gpt2", train=onebyte.TrainConfig(samples=1, batch_size=4))
    onebyte.simulate(spec, out=tmp_path / "r", peers=1, rounds=1, eval_size=4)
    from onebyte.models import load_model

    other = load_model("tiny-gpt2")
    next(other.model.parameters()).data.add_(1.0)
    with pytest.raises(onebyte.ModelError, match="not this run's base"):
        onebyte.replay(tmp_path / "r", (other.model, other.tokenizer))


def test_a_learning_rate_beyond_the_update_cap_is_a_config_error(tmp_path):
    spec = onebyte.RunSpec(model="tiny-gpt2", train=onebyte.TrainConfig(lr=1e9, samples=1, batch_size=4))
    with pytest.raises(onebyte.ConfigError, match=r"train\.lr: 1000000000\.0 is too large"):
        onebyte.simulate(spec, out=tmp_path / "r", peers=1, rounds=2, eval_size=4)
    from onebyte.ledger import read_ledger

    assert read_ledger(tmp_path / "r" / "ledger.obl") == []  # nothing it could not apply was written


def test_simulate_keeps_every_setting_of_the_run_spec(tmp_path):
    """A data file's columns, the template and chat wrapping reach the run (they were once dropped
    between RunSpec and the simulator, so a TSV with its own column names was refused)."""
    import json

    from onebyte.simulator import SimConfig

    data = tmp_path / "reviews.tsv"
    rows = [f"{'great stuff' if i % 2 else 'awful stuff'} {i}\t{'pos' if i % 2 else 'neg'}\tx" for i in range(40)]
    data.write_text("review\trating\tshop\n" + "\n".join(rows) + "\n")
    spec = onebyte.RunSpec(model="tiny-gpt2", task=str(data), text_column="review", label_column="rating",
                           template="Shop {shop}. Review: {review}\nSentiment:", chat=False,
                           train=onebyte.TrainConfig(samples=2, batch_size=4))
    assert SimConfig.from_spec(spec).spec == spec
    result = onebyte.simulate(spec, out=tmp_path / "r", peers=2, rounds=1, eval_size=4)
    saved = json.loads((tmp_path / "r" / "run.json").read_text())["spec"]
    assert saved["template"] == spec.template and result.summary["records"] == 2
