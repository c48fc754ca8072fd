"""Held-out accuracy against the privacy budget ε (∞, 8, 3, 1) on the demo configuration.

    python -m bench.experiments.privacy [--rounds 100] [--out bench/results/privacy.json]

Each run is `onebyte simulate` on minilm + vader, 4 peers, byte codec, the SPSA configuration
(DP-ZO clips per-example two-point differences: `--estimator spsa --lr 1e-3`, constant), with `--dp-epsilon E --dp-delta 1e-5` (none for ε = ∞); each peer's ε protects its
own shard, as computed by dp-accounting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from bench.experiments.quality import spsa_demo
from bench.output import RESULTS, WORK
from bench.sections import Results, Section
from onebyte.privacy import DPConfig
from onebyte.simulator import SimConfig, run_simulation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--epsilons", default="inf,8,3,1")
    ap.add_argument("--out", type=Path, default=RESULTS / "privacy.json")
    ap.add_argument("--work", type=Path, default=WORK / "privacy")
    ap.add_argument("--grad", action="store_true",
                    help="the library's defaults (grad: DP-SGD on the projections), delta = 1 / a peer's examples")
    a = ap.parse_args()
    rows = []
    for text in a.epsilons.split(","):
        eps = float(text)
        work = a.work / f"{'grad-' if a.grad else ''}eps-{text}"
        shutil.rmtree(work, ignore_errors=True)
        cfg = SimConfig(model="minilm", task="vader", peers=4, rounds=a.rounds, **({} if a.grad else {"train": spsa_demo()}))
        n = min(len(s) for s in cfg_shards(cfg))
        delta = 1.0 / n if a.grad else 1e-5
        dp = None if eps == float("inf") else DPConfig(eps, delta, 1.0)
        s = run_simulation(replace(cfg, dp=dp), work).summary
        rows.append({"epsilon": text, "delta": delta, "accuracy_before": s["eval_before"]["accuracy"],
                     "accuracy_after": s["eval_after"]["accuracy"], "macro_f1_after": s["eval_after"]["macro_f1"],
                     "dp": s.get("dp"), "seconds": s["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M"), "estimator": "grad" if a.grad else "spsa",
              "command": f"python -m bench.experiments.privacy --rounds {a.rounds} --epsilons {a.epsilons}"
                         + (" --grad" if a.grad else "")}
    a.out.write_text(json.dumps(result, indent=2) + "\n")


def cfg_shards(cfg: SimConfig) -> list:
    """The peers' shards of a simulation (to set delta = 1 / a peer's examples)."""
    from onebyte.config import parse_split
    from onebyte.tasks.data import load_dataset, split_shards

    return split_shards(load_dataset(cfg.spec.task).train, cfg.peers, parse_split(cfg.split), cfg.seed)



def _accuracy(row: dict) -> str:
    return f"{row['accuracy_before']:.3f} | {row['accuracy_after']:.3f}"


def _noise(row: dict) -> tuple[str, str]:
    """The noise multiplier and the ε dp-accounting says was spent (none without DP)."""
    dp = row.get("dp") or {}
    return f"{dp.get('noise_multiplier', 0):.2f}", f"{dp.get('epsilon_spent', float('inf')):.2f}"


def _row(row: dict, cells: tuple[str, ...]) -> str:
    return f"| {row['epsilon'].replace('inf', '∞')} | " + " | ".join(cells) + " |"


def render(results: Results) -> list[str]:
    """The accuracy-against-privacy-budget section of BENCHMARKS.md."""
    r = results.get("privacy")
    if not r:
        return []
    out = ["## Accuracy against the privacy budget", "",
           f"`{r['command']}` ({r['date']}): the demo configuration (minilm + vader, 4 peers, byte codec, "
           "bias tuning) with each peer's data protected at (ε, δ = 1e-5).", "",
           "| ε | held-out accuracy before | after | noise multiplier | ε spent (dp-accounting) |",
           "|---|---|---|---|---|"]
    out += [_row(row, (_accuracy(row), *_noise(row))) for row in r["rows"]]
    return out + ["", "ε = ∞ is the plain demo (no clipping, no noise). Every private row also clips each "
                  "example's derivative to C = 1, which shrinks the steps: that, more than the noise (averaged over "
                  "a batch of 32), is why the private rows sit below it and close to each other.", ""]


def render_grad(results: Results) -> list[str]:
    """DP with the library's defaults (grad: DP-SGD on the projections)."""
    r = results.get("privacy_grad")
    if not r:
        return []
    out = ["### Differential privacy with grad (the defaults)", "",
           f"`{r['command']}` ({r['date']}): the demo's settings (minilm + vader, 4 peers, grad, K = 1,024) for "
           "the rounds shown, each peer's examples protected at (ε, δ = 1 / its examples): each example's "
           "gradient projected onto the record's K directions, that vector clipped to L2 norm 1, Gaussian noise "
           "on the sum, one mechanism per record.", "",
           "| ε | held-out accuracy before | after | macro-F1 after | noise multiplier | ε spent | minutes |",
           "|---|---|---|---|---|---|---|"]
    out += [_row(row, (_accuracy(row), f"{row['macro_f1_after']:.3f}", *_noise(row), f"{row['seconds'] / 60:.1f}"))
            for row in r["rows"]]
    return out + ["", "A private grad record costs one backward pass per example of its batch (32 here) "
                  "instead of one per batch: the minutes column shows what that costs on this CPU.", ""]


def claims(results: Results) -> list:
    r = results.get("privacy_grad")
    rows = {row["epsilon"]: row for row in (r or {}).get("rows", [])}
    if "inf" not in rows or "3" not in rows:
        return []
    loss = 100 * (rows["inf"]["accuracy_after"] - rows["3"]["accuracy_after"])
    return [(f"DP with grad at ε = 3, δ = 1/n, demo settings ({r['command'].split('--rounds ')[1].split()[0]} "
             "rounds, 1 seed): accuracy lost against the same run without DP", f"{loss:.1f} points", "≤ 1",
             loss <= 1.0)]


# Not part of `make bench` (four 100-round simulations): run it on its own.
SECTION = Section("privacy", "bench.experiments.privacy", lambda res: render(res) + render_grad(res), claims=claims)


if __name__ == "__main__":
    main()
