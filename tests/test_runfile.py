"""The run file every site shares: template, round trip, overrides, canonical run tag, errors."""

import json

import pytest

from onebyte.cli import main
from onebyte.config import Run, RunSpec, TrainConfig, differing_fields
from onebyte.errors import ConfigError

FLAGS = ["--model", "tiny-gpt2", "--task", "vader", "--samples", "2", "--batch-size", "8", "--lr", "0.002",
         "--tune", "all", "--run-id", "site-test"]


def test_template_loads_to_the_defaults(tmp_path):
    path = tmp_path / "run.toml"
    RunSpec().save(path)
    text = path.read_text()
    assert "[math]" in text and "[train]" in text
    assert RunSpec.load(path) == RunSpec()


def test_every_setting_round_trips(tmp_path):
    spec = RunSpec(run_id="line-7", model="/models/base", task="site-a.csv", objective="lm", labels=("no", "yes"),
                   eval_file="held.jsonl", train=TrainConfig(lr=2e-4, eps=1e-2, samples=16, tune="regex:^h\\.0\\."))
    spec.save(tmp_path / "run.toml")
    assert RunSpec.load(tmp_path / "run.toml") == spec


def test_run_tag_is_a_hash_of_the_canonical_config_and_ignores_site_paths():
    a = Run(RunSpec(model="/site-a/model", task="a.csv"), "00" * 32)
    b = Run(RunSpec(model="/site-b/model", task="b.csv", eval_file="x.csv"), "00" * 32)
    assert a.run_tag == b.run_tag  # where each site keeps its files does not change the math
    c = Run(RunSpec(train=TrainConfig(lr=2e-3)), "00" * 32)
    assert c.run_tag != a.run_tag
    assert differing_fields(a.canonical(), c.canonical()) == [f"train.lr: {TrainConfig().lr} here, 0.002 there"]
    assert Run(RunSpec(), "11" * 32).run_tag != a.run_tag


@pytest.mark.parametrize("body,needle", [
    ('[train]\nlr = -1\n', "train.lr"),
    ('[train]\nlearning_rate = 0.1\n', "train.learning_rate: is not a setting"),
    ('modle = "x"\n', "modle: is not a setting"),
    ('[train]\ncodec = "fp8"\n', "train.codec"),
    ('[train]\nsamples = "four"\n', "train.samples"),
    ('objective = "regress"\n', "objective"),
    ('this is not toml\n', "not valid TOML"),
])
def test_bad_run_files_name_the_field(tmp_path, body, needle):
    path = tmp_path / "run.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        RunSpec.load(path)


def test_bad_run_file_on_the_command_line_is_one_line_naming_the_flag(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nlr = -1\nsamples = 0\n")
    assert main(["simulate", "--config", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr" in err and "--samples" in err  # every problem, as flags
    assert not (tmp_path / "x").exists()


def test_init_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "run.toml"
    assert main(["init", str(path)]) == 0
    assert main(["init", str(path), "--lr", "0.5"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["init", str(path), "--lr", "0.5", "--force"]) == 0
    assert RunSpec.load(path).train.lr == 0.5


def test_simulate_from_a_run_file_equals_the_same_flags(tmp_path, capsys):
    path = tmp_path / "run.toml"
    assert main(["init", str(path), *FLAGS]) == 0
    common = ["--peers", "2", "--rounds", "2", "--eval-size", "8", "--no-progress"]
    assert main(["simulate", "--config", str(path), *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["simulate", *FLAGS, *common, "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["state_hash"] == b["state_hash"] and a["run_tag"] == b["run_tag"]
    # a flag overrides the file: another learning rate is another run
    assert main(["simulate", "--config", str(path), "--lr", "0.004", *common, "--out", str(tmp_path / "c")]) == 0
    c = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert c["run_tag"] != a["run_tag"] and c["state_hash"] != a["state_hash"]
    assert RunSpec.load(path).train.lr == 0.002  # the file itself is untouched


def test_a_forward_only_estimator_on_the_command_line_brings_its_own_defaults(tmp_path):
    """grad is the default; `--estimator fzoo` without a run file is fzoo as it was measured (K = 4,
    lr per scalar, distinct directions), and in a run file's run it is only how this site measures."""
    assert main(["init", str(tmp_path / "fzoo.toml"), "--estimator", "fzoo"]) == 0
    fzoo = RunSpec.load(tmp_path / "fzoo.toml").train
    assert (fzoo.estimator.value, fzoo.samples, fzoo.step.value, fzoo.directions.value) == ("fzoo", 4, "scalar",
                                                                                            "distinct")
    assert main(["init", str(tmp_path / "grad.toml")]) == 0
    grad = RunSpec.load(tmp_path / "grad.toml")
    assert grad.train == TrainConfig()
    # a site of the fzoo run that backpropagates: same run tag, its own estimator
    assert main(["init", str(tmp_path / "site.toml"), "--config", str(tmp_path / "fzoo.toml"), "--estimator",
                 "grad"]) == 0
    site = RunSpec.load(tmp_path / "site.toml")
    assert site.train.estimator.value == "grad" and site.train.samples == 4
    assert Run(site, "ab" * 32).run_tag == Run(RunSpec.load(tmp_path / "fzoo.toml"), "ab" * 32).run_tag
