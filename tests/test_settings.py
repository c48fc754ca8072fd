"""Each setting is written once, on its config field: the run file, the flags, Python's defaults and
the reference page agree for every field, and a new field appears in all of them by itself."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, fields

import pytest

from onebyte.cli import _add_setting_flags, _spec, build_parser
from onebyte.config import (
    Defaults,
    Run,
    RunSpec,
    Setting,
    TrainConfig,
    _plain,
    doc,
    reference_markdown,
    settings,
)

ALL = [*settings(RunSpec), *settings(TrainConfig)]
COMMANDS = ("init", "simulate", "peer", "swarm", "eval")
#: A value other than the default for each setting: what a site might write.
OTHER = {"run_id": "other", "model": "tiny-gpt2", "task": "tweets", "objective": "lm", "labels": "a,b",
         "eval_file": "held.csv", "text_column": "review", "label_column": "rating", "template": "R: {review}",
         "chat": True, "codec": "sign", "lr": "0.25", "eps": "0.01", "samples": "8", "batch_size": "4",
         "tune": "norm", "directions": "distinct", "max_length": "64", "estimator": "jvp", "lr_schedule": "constant",
         "eps_schedule": "cosine", "warmup": "3", "horizon": "50", "final_ratio": "0.5", "reference_examples": "100",
         "density": "1/4", "aggregate": "clipped", "scalar": "derivative", "step": "scalar", "balance": "none",
         "seed_pool": "1024", "weighting": "equal"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _blocks(toml: str) -> dict[str, tuple[str, str]]:
    """Run-file key -> (the comment above it, joined; its line), top level and [train] alike."""
    out, comment = {}, []
    for line in toml.splitlines():
        m = re.fullmatch(r"(# )?([a-z_]+) = .*", line)
        if m:
            out[m.group(2)] = (" ".join(comment), line)
            comment = []
        elif line.startswith("# "):
            comment.append(line[2:])
        else:
            comment = []
    return out


def test_every_field_of_the_run_is_a_documented_setting():
    assert {s.name for s in settings(TrainConfig)} == {f.name for f in fields(TrainConfig)}
    assert {s.name for s in settings(RunSpec)} == {f.name for f in fields(RunSpec)} - {"train", "keys"}
    assert set(OTHER) == {s.name for s in ALL}  # this test knows a value for each


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.key)
def test_the_run_file_writes_each_setting_under_its_documentation(s: Setting):
    comment, line = _blocks(RunSpec().to_toml())[s.name]
    assert comment == ("[math] " if s.math else "") + s.help
    if s.example is None:
        assert re.fullmatch(rf"{s.name} = .+", line)
    else:  # unset by default: shown commented out
        assert line.startswith(f"# {s.name} = ")


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.key)
def test_python_defaults_are_the_documented_ones(s: Setting):
    obj = TrainConfig() if s.section else RunSpec()
    assert s.default == _plain(getattr(obj, s.name))


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.key)
def test_each_command_has_the_flag_with_its_choices_help_and_default(s: Setting):
    subs = _subparsers(build_parser())
    for command in COMMANDS:
        action = next(a for a in subs[command]._actions if s.flag in a.option_strings)
        assert action.dest == s.name and action.default is None  # unset: the run file's, else Python's
        assert tuple(action.choices or ()) == s.choices
        assert action.help.startswith(s.help.replace("%", "%%"))
        if s.shown_default():
            assert action.help.endswith(f"[{s.shown_default()}]")


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.key)
def test_a_flag_sets_its_setting_and_no_flag_is_pythons_default(s: Setting):
    init = _subparsers(build_parser())["init"]
    assert _spec(init.parse_args(["x.toml"])) == RunSpec()
    spec = _spec(init.parse_args(["x.toml", s.flag] if s.kind is bool else ["x.toml", s.flag, OTHER[s.name]]))
    value = _plain(getattr(spec.train if s.section else spec, s.name))
    assert value != s.default
    changed = {k for k, v in spec.train.to_dict().items() if v != TrainConfig().to_dict()[k]}
    changed |= {k for k, v in spec.to_dict().items() if k != "train" and v != RunSpec().to_dict().get(k)}
    assert changed == {s.name}


@pytest.mark.parametrize("s", ALL, ids=lambda s: s.key)
def test_the_reference_page_has_a_row_for_each(s: Setting):
    page = reference_markdown()
    row = next(line for line in page.splitlines() if line.startswith(f"| `{s.name}` |"))
    assert f"`{s.flag}`" in row and s.help in row and (("| yes |" in row) == s.math)
    assert (f"`{s.shown_default()}`" if s.shown_default() else "unset") in row
    assert all(f"`{c}`" in row for c in s.choices)


@pytest.mark.parametrize("s", settings(TrainConfig), ids=lambda s: s.key)
def test_math_means_in_the_run_tag(s: Setting):
    """A [math] setting changes the run tag; the estimator (how a site measures) does not, when it
    sends the run's kind of scalar."""
    init = _subparsers(build_parser())["init"]
    other = _spec(init.parse_args(["x.toml", f"--{s.name.replace('_', '-')}", OTHER[s.name]]))
    assert (Run(other, "ab" * 32).run_tag != Run(RunSpec(), "ab" * 32).run_tag) == s.math


def test_legacy_values_come_from_the_fields_and_are_unchanged():
    assert TrainConfig.LEGACY == {
        "estimator": "spsa", "lr_schedule": "constant", "eps_schedule": "constant", "warmup": 0, "horizon": 0,
        "final_ratio": 0.1, "reference_examples": 0, "density": 1.0, "aggregate": "sum", "scalar": "auto",
        "step": "scalar", "balance": "none", "seed_pool": 0, "weighting": "equal"}


def test_eval_size_means_one_thing_with_one_default():
    """N held-out examples, 0 none, all (None) every one: the same for simulate and peer, flags and Python."""
    import inspect

    from onebyte.api import simulate
    from onebyte.simulator import SimConfig

    subs = _subparsers(build_parser())
    assert inspect.signature(simulate).parameters["eval_size"].default is Defaults.eval_size is None
    assert SimConfig().eval_size is Defaults.eval_size
    for command in ("simulate", "peer"):
        p = subs[command]
        assert p.parse_args(["--out", "x"]).eval_size is Defaults.eval_size
        assert p.parse_args(["--out", "x", "--eval-size", "all"]).eval_size is None
        assert p.parse_args(["--out", "x", "--eval-size", "0"]).eval_size == 0
        assert p.parse_args(["--out", "x", "--eval-size", "64"]).eval_size == 64


def test_sim_config_holds_the_run_spec():
    from onebyte.simulator import SimConfig

    spec = RunSpec(model="tiny-gpt2", template="T {text}", train=TrainConfig(samples=2))
    assert SimConfig.from_spec(spec, peers=2).spec == spec
    by_name = SimConfig(model="tiny-gpt2", template="T {text}", train=TrainConfig(samples=2), peers=2)
    assert by_name == SimConfig(spec, peers=2) and by_name.train.samples == 2
    assert (SimConfig().spec, SimConfig().peers, SimConfig().rounds) == (RunSpec(), Defaults.peers, Defaults.rounds)
    with pytest.raises(TypeError, match="label_names"):
        SimConfig(label_names=("a", "b"))


# ---- adding a setting: one field, and everything else follows ------------------------------------

@dataclass(frozen=True)
class WithSmoothing(TrainConfig):
    """A training setting as a contributor would add it: one field with its doc (and its use)."""

    label_smoothing: float = field(default=0.0, metadata=doc(
        "how much of each target's probability is spread over the other labels", math=True, legacy=0.0))


def test_a_new_setting_appears_in_the_run_file_flags_reference_and_run_tag():
    new = settings(WithSmoothing)[-1]
    assert (new.key, new.flag, new.kind, new.default, new.math) == (
        "train.label_smoothing", "--label-smoothing", float, 0.0, True)
    # the run file
    comment, line = _blocks(RunSpec(train=WithSmoothing(label_smoothing=0.1)).to_toml())["label_smoothing"]
    assert comment == "[math] " + new.help and line == "label_smoothing = 0.1"
    assert WithSmoothing.from_dict({"label_smoothing": 1}).label_smoothing == 1.0  # TOML's 1 for 1.0
    # the flags
    p = argparse.ArgumentParser()
    _add_setting_flags(p, train=WithSmoothing)
    assert p.parse_args(["--label-smoothing", "1/8"]).label_smoothing == 0.125
    assert p.parse_args([]).label_smoothing is None
    # the reference page
    assert f"| `label_smoothing` | `--label-smoothing` | `0.0` | number | yes | {new.help} |" in reference_markdown(
        train=WithSmoothing).splitlines()
    # the run tag: a run at the legacy value keeps the tag it had before the setting existed
    assert WithSmoothing().canonical() == TrainConfig().canonical()
    assert WithSmoothing(label_smoothing=0.1).canonical()["label_smoothing"] == 0.1
