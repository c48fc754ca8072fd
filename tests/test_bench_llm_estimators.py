"""The causal-LM estimators benchmark's plan and claim: rounds within one forward-pass budget,
matched checkpoints, learning-rate overrides, and a claim read from measured numbers (no model)."""

import json

import pytest
from bench.experiments import llm_estimators as le
from bench.sections import Results


def test_every_estimator_gets_the_budget_in_whole_rounds():
    p = dict(le.FULL)
    conds = {c["estimator"]: c for c in le.conditions(p, le.parse_lr([], ["spsa", "fzoo", "centered", "es"]))}
    # 4 peers, K = 4: spsa 2K, fzoo K + 1, centered and es K forward passes per record
    assert {e: (c["passes_per_round"], c["rounds"]) for e, c in conds.items()} == {
        "spsa": (32, 12), "fzoo": (20, 20), "centered": (16, 25), "es": (16, 25)}
    assert all(c["forward_passes"] <= p["budget"] for c in conds.values())
    assert conds["fzoo"]["train"]["horizon"] == 20 and conds["fzoo"]["train"]["lr_schedule"] == "cosine"
    assert conds["spsa"]["train"]["lr"] == 7e-5 and conds["spsa"]["train"]["lr_schedule"] == "constant"
    # about `evals` evaluations per run, whatever the passes per round
    assert {e: c["eval_every"] for e, c in conds.items()} == {"spsa": 3, "fzoo": 5, "centered": 6, "es": 6}
    assert le.checkpoints(list(conds.values())) == [96, 192, 288, 384]  # fractions of the fewest spent (spsa's)
    assert le.adam_steps(p) == 40


def test_lr_overrides_and_seeds():
    lrs = le.parse_lr(["fzoo=2e-3"], ["spsa", "fzoo"])
    assert lrs == {"spsa": (7e-5, "constant"), "fzoo": (2e-3, "cosine")}
    with pytest.raises(ValueError):
        le.parse_lr(["adam=1e-3"], ["spsa"])
    tasks = le.plan(dict(le.FULL), le.conditions(dict(le.FULL), lrs), [0, 1, 2])
    assert len(tasks) == 2 * 3 + 3 and len({t["key"] for t in tasks}) == len(tasks)
    assert {t["run_id"] for t in tasks if t["kind"] == "sim"} == {"llm-est-0", "llm-est-1", "llm-est-2"}


def _run(xs_ys: list[tuple[int, float]]) -> dict:
    return {"curve": [{"round": i, "forward_passes": x, "accuracy": y, "macro_f1": y / 2, "balanced_accuracy": y}
                      for i, (x, y) in enumerate(xs_ys)], "seconds": 1.0}


def test_summary_and_claim_come_from_the_runs(tmp_path):
    p = {**le.QUICK, "seeds": 2, "budget": 40, "evals": 2}
    conds = le.conditions(p, le.parse_lr([], ["spsa", "fzoo"]))  # spsa 32, fzoo 40 forward passes
    tasks = le.plan(p, conds, [0, 1])
    curves = {"spsa": [(0, 0.4), (32, 0.5)], "fzoo": [(0, 0.4), (20, 0.5), (40, 0.6)]}
    done = {t["key"]: _run(curves[t["estimator"]] if t["kind"] == "sim" else [(0, 0.4), (2, 0.45)]) for t in tasks}
    s = le.summarize(p, conds, tasks, done)
    assert s["checkpoints"] == [8, 16, 24, 32]
    fzoo = next(r for r in s["rows"] if r["estimator"] == "fzoo")
    assert fzoo["at"][-1]["accuracy"]["mean"] == pytest.approx(0.56)  # interpolated at 32 forward passes
    assert fzoo["final"]["accuracy"]["mean"] == pytest.approx(0.6) and fzoo["seeds"] == 2
    (tmp_path / "llm_estimators.json").write_text(json.dumps({"summary": s}))
    [(claim, measured, _, met)] = le.claims(Results(tmp_path))
    assert "fzoo" in claim and "+6.0 points" in measured and met
    assert le.render(Results(tmp_path / "absent")) == [] and le.claims(Results(tmp_path / "absent")) == []
