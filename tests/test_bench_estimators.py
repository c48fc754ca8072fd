"""The estimators benchmark's plan, summary and report from made-up curves (no model): the old demo
and the other forward-only estimators stay at K = 4 whatever the library default's K, and every
part renders from the runs it planned."""

import json

import pytest
from bench.experiments import estimators as est
from bench.sections import Results


def _curve(task: dict) -> dict:
    steps = max(1, task["rounds"])
    pts = [{"round": r, "forward_passes": 10 * r, "seconds": r, "swarm_seconds": r, "accuracy": 0.5 + 0.4 * r / steps,
            "macro_f1": 0.4, "balanced_accuracy": 0.5, "loss": 1.0} for r in range(0, steps + 1)]
    out = {"curve": pts, "seconds": 1.0, "swarm_seconds": float(steps), "forward_passes": 10 * steps}
    if task["site"] is not None:
        out["shard"] = {"examples": 100, "label_counts": [50, 50]}
    return out


def test_the_quick_plan_summarises_and_renders_every_part(tmp_path):
    p = dict(est.QUICK)
    plan, layout = est.plan(p, {1, 2, 3}, [0])
    conds = layout["estimators"]["conditions"]
    forward_only = [c for c in conds if c["estimator"] not in ("grad", "jvp")]
    assert forward_only and all(c["train"]["samples"] == 4 for c in forward_only)
    assert "jvp" not in {c["estimator"] for c in conds}
    demo = next(c for c in conds if "old demo" in c["roles"])
    assert demo["train"]["directions"] == "distinct" and demo["train"]["step"] == "scalar"
    recipe = next(g for g in layout["skew"] if g["config"] == est.SKEW_RECIPE_NAME)
    assert json.loads(recipe["runs"][0])["train"]["samples"] == 4
    done = {k: _curve(t) for k, t in plan.tasks.items()}
    summary = est.summarize(p, layout, done)
    assert set(summary) == {"estimators", "skew", "join"}
    assert summary["estimators"]["rows"][0]["final"]["accuracy"]["mean"] == pytest.approx(0.9)
    (tmp_path / "estimators.json").write_text(json.dumps(
        {"summary": summary, "params": {**p, "skew_budget": {"4": 1.0}}, "seeds": 1, "parts": [1, 2, 3],
         "parts_done": [1, 2, 3], "library_default": {}, "date": "2026-12-06 20:00"}))
    text = "\n".join(est.render(Results(tmp_path)))
    assert "### 1. Estimators" in text and "### 2. Label skew" in text and "### 3. Join" in text
    assert est.claims(Results(tmp_path))
