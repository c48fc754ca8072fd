"""Hostile insiders against `sum` and robust aggregation (the demo task, 8 peers), issue #14.

    python -m bench.experiments.attacks [--peers 8] [--fraction 0.25] [--rounds 40] [--seeds 5]
        [--aggregates sum,clipped] [--attacks none,signflip,max,random,sybil,lie-late]
        [--robust-lr 0] [--band inf] [--eval-every 10] [--workers 2] [--out bench/results/attacks.json]

Every run is the simulator (`onebyte.simulate`) on the demo's task (all-MiniLM-L6-v2 on VADER, the
library default `TrainConfig()` read at run time, with a cosine horizon of the run's rounds) with
that fraction of the peers hostile (`onebyte.attacks`; the last peers, 2 of 8 at 0.25). Each
aggregate runs with no attack and with each attack, the same seeds, so every pair shares its data,
shards and honest measurements; the table gives the held-out accuracy at the end (the whole VADER
test split) and the loss against the same aggregate with no attack. `sybil` runs twice: with
identities (an unlisted id is refused, as with site keys) and without (`identities=False`: the
swarm secret alone). A seed changes the run id and the shard split. ``--band`` is an ablation of
``clipped`` (its band in robust standard deviations; ``inf`` keeps every scalar: the plain mean over
shared directions, which is what sharing the directions costs with no robust statistic at all).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.output import RESULTS, save_result
from bench.sections import Claim, Results, Section, Step
from bench.sweep import figure, machine, sweep
from onebyte.api import Defaults
from onebyte.update import CLIP_MADS as BAND  # clipped's band; --band overrides it in the workers (an ablation)

MODEL, TASK = "minilm", "vader"
ATTACKS = ("none", "signflip", "max", "random", "sybil", "lie-late")
TARGET_POINTS = 1.0  # issue #14: robust loses at most 1 point under each attack
NO_ATTACK_POINTS = 0.5  # issue #30: without attack, robust costs at most 0.5 points against sum


def conditions(a: argparse.Namespace) -> list[dict]:
    """Every aggregate under every attack; robust ones at each of ``--robust-lr`` (0: the default's)."""
    out = []
    for agg in a.aggregates:
        for lr in ([0.0] if agg == "sum" else a.robust_lr):
            for attack in a.attacks:
                for seed in range(a.seeds):
                    for ids in ((True, False) if attack == "sybil" else (True,)):
                        c = {"aggregate": agg, "attack": attack, "identities": ids, "seed": seed, "peers": a.peers,
                             "rounds": a.rounds, "fraction": a.fraction, "eval_every": a.eval_every}
                        if lr:
                            c["train"] = {"lr": lr}
                        if agg == "clipped" and a.band is not None:
                            c["band"] = a.band if math.isfinite(a.band) else "inf"  # JSON has no infinity
                        out.append(c)
    return out


def column(c: dict) -> str:
    """The table column of a run: its aggregate, and its learning rate when not the default's."""
    lr = c.get("train", {}).get("lr")
    band = f" band {float(c['band']):g}" if "band" in c else ""
    return c["aggregate"] + (f" lr {lr:g}" if lr else "") + band


def key(c: dict) -> str:
    who = "" if c["identities"] else "-noid"
    lr = f"/lr{c['train']['lr']:g}" if "lr" in c.get("train", {}) else ""
    band = f"/band{float(c['band']):g}" if "band" in c else ""
    return f"{c['aggregate']}/{c['attack']}{who}/s{c['seed']}{lr}{band}"


def run(c: dict) -> dict:
    import onebyte
    import onebyte.update
    from onebyte.config import TrainConfig

    # an ablation of `clipped`: its band in robust standard deviations (inf: the plain mean over shared
    # directions, which measures what sharing the directions costs with no robustness at all)
    onebyte.update.CLIP_MADS = float(c.get("band", BAND))

    train = TrainConfig.from_dict({**TrainConfig().to_dict(), "aggregate": c["aggregate"], "horizon": c["rounds"],
                                   **c.get("train", {})})
    spec = onebyte.RunSpec(run_id=f"attacks-{c['seed']}", model=MODEL, task=TASK, train=train)
    attack = None if c["attack"] == "none" else f"{c['attack']}:{c['fraction']}"
    curve: list[dict] = []
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="onebyte-attacks-") as tmp:
        s = onebyte.simulate(spec, out=Path(tmp) / "run", peers=c["peers"], rounds=c["rounds"], seed=c["seed"],
                             eval_every=c["eval_every"], attack=attack, identities=c["identities"],
                             on_round=lambda line: curve.append(
                                 {"round": line["round"] + 1, "forward_passes": line["forward_passes"],
                                  "accuracy": line["eval"]["accuracy"]}) if "eval" in line else None).summary
    return {**c, "key": key(c), "before": s["eval_before"]["accuracy"], "accuracy": s["eval_after"]["accuracy"],
            "macro_f1": s["eval_after"]["macro_f1"], "curve": curve, "forward_passes": s["forward_passes"],
            "refused": s.get("refused_records", 0), "seconds": round(time.time() - start, 1)}


def summarize(runs: list[dict]) -> dict:
    """Per (column, attack): mean and std over seeds, and the points lost against the same column
    with no attack on the same seeds (paired: a seed fixes the run id and the shards)."""
    by: dict[tuple, dict[int, float]] = {}
    for r in runs:
        by.setdefault((column(r), r["attack"], r["identities"]), {})[r["seed"]] = r["accuracy"]
    table = {}
    for (agg, attack, ids), accs in sorted(by.items()):
        base = by.get((agg, "none", True), {})
        values = list(accs.values())
        row = {"column": agg, "attack": attack, "identities": ids, "accuracy": statistics.fmean(values),
               "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values)}
        paired = [base[s] - a for s, a in accs.items() if s in base]
        if paired:
            row["loss_points"] = 100 * statistics.fmean(paired)
        table[f"{agg}/{attack}{'' if ids else '-noid'}"] = row
    return table


def plot(runs: list[dict], out: Path) -> str:
    aggs = sorted({column(r) for r in runs}, key=lambda c: (c != "sum", c))
    path = out.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    with figure(path, size=(5 * len(aggs), 4), dpi=110, rows=1, cols=len(aggs), sharey=True,
                squeeze=False) as (_, axes):
        for ax, agg in zip(axes[0], aggs, strict=True):
            for r in runs:
                if column(r) != agg or r["seed"] != 0:
                    continue
                xs = [0] + [p["forward_passes"] for p in r["curve"]]
                ys = [r["before"]] + [p["accuracy"] for p in r["curve"]]
                ax.plot(xs, ys, label=r["attack"] + ("" if r["identities"] else " (no identities)"),
                        lw=2.5 if r["attack"] == "none" else 1.2)
            ax.set_title(agg)
            ax.set_xlabel("forward passes (all peers)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("held-out accuracy")
        axes[0][-1].legend(fontsize=8)
    return path.name


def _acc(row: dict | None) -> str:
    if row is None:
        return "—"
    spread = f" ± {100 * row['std']:.1f} ({row['seeds']} seeds)" if row["seeds"] > 1 else ""
    return f"{100 * row['accuracy']:.1f}{spread}"


def render(results: Results) -> list[str]:
    r = results.get("attacks")
    if r is None:
        return []
    t = r["table"]
    aggs = sorted({row["column"] for row in t.values()}, key=lambda c: (c != "sum", c))
    lines = ["## Hostile insiders: `sum` against robust aggregation", "",
             "Reproduce with " + " then ".join(f"`{c}`" for c in r.get("commands", [r["command"]]))
             + f" ({r['date']}, {r['machine']}). {r['peers']} peers, {r['hostile']} of them hostile "
             f"({100 * r['fraction']:.0f} %), {r['rounds']} rounds, one seed unless a cell says more (mean ± std); "
             "the demo's task and "
             "default settings (cosine over the run's rounds); held-out accuracy (%) on the whole VADER test split "
             "at the end, and in brackets the change in points against the same column with no attack on the same "
             "seeds. "
             "Robust aggregates use shared directions: every peer measures the round's K directions; a column "
             f"names its learning rate when it is not the default's ({r['default_lr']:g}).", "",
             "| attack | " + " | ".join(f"`{a}`" for a in aggs) + " |", "|---|" + "---|" * len(aggs)]
    present = {row["attack"] + ("" if row["identities"] else "-noid") for row in t.values()}
    for attack in [a for a in (*ATTACKS, "sybil-noid") if a in present]:
        cells = []
        for agg in aggs:
            row = t.get(f"{agg}/{attack}")
            cell = _acc(row)
            if row is not None and "loss_points" in row and attack != "none":
                cell += f" ({-row['loss_points']:+.1f})"
            cells.append(cell)
        name = "sybil, without identities" if attack == "sybil-noid" else attack
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if r.get("plot"):
        lines += ["", f"![accuracy against forward passes under each attack]({results.images}{r['plot']})"]
    shared = r.get("directions") == "shared"
    lines += ["", ("The defaults measure shared directions already (grad, K = 1,024: every peer of a round measures "
                   "the same directions), so `sum` and the robust columns differ only in how a direction's scalars "
                   "combine. " if shared else
                   "The robust learning rate: with n peers sharing K directions, a round's n·K measurements give K "
                   "directions rather than n·K, so each step carries the same signal as `sum`'s with more of its "
                   "noise along fewer directions, and the default rate is too large for it: compare the robust "
                   "columns' no-attack rows. ")
              + "`clipped` is the mean of the scalars within 3 robust standard deviations "
              "(1.4826 × the median absolute deviation) of their median, times the number of peers: with no "
              "outlier `sum`'s step, and an excluded record's share is carried by the others. (Until "
              "2026-11-27 it was the *sum* of the kept scalars, so every excluded record also shortened the "
              "step; at 0.003 that measured 88.6 ± 0.4 % without attack and lost at most 0.6 points, 3 seeds. "
              "Those runs were dropped from this file when the statistic changed.) "
              f"The README recommends `{recommended(r)}`."]
    for row in (row for row in t.values() if " band " in row["column"] and row["attack"] == "none"):
        lines += ["", f"`{row['column']}` is an ablation (`--band`): `clipped` with that band (with `inf` no "
                  "band at all: the plain mean of the scalars over shared directions, no robustness). Without "
                  f"attack it ends at {_acc(row)}" + _ablation(row, t.get(row["column"].split(" band ")[0] + "/none"),
                                                                t.get("sum/none")) + "."]
    lines += _long_run(results.get("attacks_long"), r)
    lines += ["", "Attacks (`onebyte.attacks`): `signflip` the negated measurement ×4; `max` the largest value the "
              "per-gradient cap admits, against the measurement; `random` uniform over the allowed range; "
              "`sybil` each hostile site also publishes as 3 more ids (sign-flipped); `lie-late` sign-flipped "
              "records released 2 rounds late, after the round was applied. Every hostile value stays under the cap, "
              "which every replica enforces.", ""]
    return lines


def _ablation(row: dict, clipped: dict | None, base: dict | None) -> str:
    """What the ablation's figure says, from the figures: the band's own effect, and how much of
    robust's no-attack cost is left without any band (the shared directions')."""
    if clipped is None or base is None:
        return ""
    band = 100 * (row["accuracy"] - clipped["accuracy"])
    left = 100 * (base["accuracy"] - row["accuracy"])
    return (f", where `clipped` (band {BAND:g}) ends at {_acc(clipped)}: the band changes the result by "
            f"{band:+.1f} points, and with no band the run still ends {left:.1f} points below `sum`, the cost of "
            "sharing the directions (K directions per round instead of n·K at the same forward passes)")


def _costs(r: dict, col: str) -> dict[int, float]:
    """Per seed, the points a column ends below `sum` with no attack."""
    acc = {(column(x), x["seed"]): x["accuracy"] for x in r["runs"] if x["attack"] == "none"}
    return {s: 100 * (acc[("sum", s)] - acc[(c, s)]) for (c, s) in acc if c == col and ("sum", s) in acc}


def _long_run(r: dict | None, short: dict) -> list[str]:
    """The no-attack rows of a longer run (``--out bench/results/attacks_long.json``): whether the
    cost of shared directions shrinks with training length, paired by seed against `sum`, beside
    the short bench's cost on the same seeds."""
    if r is None:
        return []
    t = r["table"]
    base = t.get("sum/none")
    rows = [row for k, row in t.items() if row["attack"] == "none" and k != "sum/none"]
    if base is None or not rows:
        return []
    cells = []
    for row in rows:
        costs, before = _costs(r, row["column"]), _costs(short, row["column"])
        seeds = sorted(costs)
        same = [before[s] for s in seeds if s in before]
        was = (f"; the {short['rounds']}-round bench: {statistics.fmean(same):.1f} on the same seeds"
               if len(same) == len(seeds) else "")
        cells.append(f"`{row['column']}` {_acc(row)}, {statistics.fmean(costs.values()):.1f} points below `sum` "
                     f"(per seed {', '.join(f'{costs[s]:.1f}' for s in seeds)}{was})")
    length = "the demo's length" if r["rounds"] == Defaults.rounds else "a longer run"
    return ["", f"A longer run without attack ({r['rounds']} rounds, {length}; "
            + " then ".join(f"`{c}`" for c in r.get("commands", [r["command"]])) + f", {r['date']}): `sum` "
            f"{_acc(base)}; " + "; ".join(cells) + "."]


def recommended(r: dict) -> str:
    """The column the README recommends (the claims are about it)."""
    return r.get("recommended") or (f"median lr {r['robust_lr']:g}" if r.get("robust_lr") else "median")


def claims(results: Results) -> list[Claim]:
    r = results.get("attacks")
    if r is None:
        return []
    t, out = r["table"], []
    robust = recommended(r)
    worst = max((row["loss_points"] for k, row in t.items() if k.startswith(f"{robust}/")
                 and row["attack"] != "none" and row["identities"] and "loss_points" in row), default=None)
    if worst is not None:
        out.append((f"robust (`{robust}`) under each attack, {r['hostile']} of {r['peers']} hostile: worst loss",
                    f"{worst:.1f} points", f"≤ {TARGET_POINTS:g}", worst <= TARGET_POINTS))
    if "sum/none" in t and f"{robust}/none" in t:
        cost = 100 * (t["sum/none"]["accuracy"] - t[f"{robust}/none"]["accuracy"])
        out.append((f"robust (`{robust}`) vs `sum`, no attack, equal forward passes "
                    f"({t[f'{robust}/none']['seeds']} seeds)", f"{cost:.1f} points", f"≤ {NO_ATTACK_POINTS:g}",
                    cost <= NO_ATTACK_POINTS))
    return out


def note(results: Results) -> str | None:
    r = results.get("attacks")
    if r is None:
        return None
    t, robust = r["table"], recommended(r)
    worst = max(((row["loss_points"], row["attack"]) for k, row in t.items() if k.startswith(f"{robust}/")
                 and row["attack"] != "none" and "loss_points" in row), default=None)
    if worst is None or "sum/none" not in t or f"{robust}/none" not in t:
        return None
    cost = 100 * (t["sum/none"]["accuracy"] - t[f"{robust}/none"]["accuracy"])
    summed = [(row["loss_points"], row["attack"]) for k, row in t.items() if k.startswith("sum/")
              and row["attack"] != "none" and "loss_points" in row]
    seeds = t[f"{robust}/none"]["seeds"]
    return ("**Hostile insiders: `aggregate = sum`, with `clipped` one setting away.** Every record counts fully "
            f"by default. With {r['hostile']} of {r['peers']} peers hostile, `{robust}` (every peer measures the "
            "round's shared directions; the step along each is the mean of the scalars within 3 robust standard "
            f"deviations of their median) loses at most {worst[0]:.1f} points to any attack ({worst[1]}; "
            f"{r['rounds']} rounds, {seeds} seed(s)), and without attack it ends {cost:+.1f} points against `sum` "
            "(negative: below). "
            + (f"`sum` under the same attacks loses up to {max(summed)[0]:.1f} points ({max(summed)[1]}). " if summed
               else "")
            + "It costs no extra bytes or forward passes: the robust statistic is computed by every replica from "
            "the same records. Use it for runs where a site could turn hostile, with site keys so one site is one "
            "voice. [Hostile insiders](benchmarks.md#hostile-insiders-sum-against-robust-aggregation)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=8)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--aggregates", type=lambda s: s.split(","), default=["sum", "clipped"])
    ap.add_argument("--attacks", type=lambda s: s.split(","), default=list(ATTACKS))
    ap.add_argument("--robust-lr", type=lambda s: [float(x) for x in s.split(",")], default=[0.0],
                    help="learning rates of the robust aggregates, the recommended one first (0: the default's); "
                    "sum runs at the default's")
    ap.add_argument("--band", type=float, help="an ablation: `clipped`'s band in robust standard deviations "
                    f"(default {BAND:g}; inf: the plain mean over shared directions)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recommend", default="clipped",
                    help="the column the claims are about (e.g. 'clipped', 'median lr 0.0015')")
    ap.add_argument("--out", type=Path, default=RESULTS / "attacks.json")
    ap.add_argument("--resume", action="store_true",
                    help="keep every run already in --out (same peers, rounds, fraction) and run only the missing ones")
    a = ap.parse_args()
    from onebyte.attacks import Attack
    from onebyte.config import TrainConfig

    todo = conditions(a)
    runs = []
    command = "python -m bench.experiments.attacks " + shlex.join(sys.argv[1:])
    commands = [command]
    recommend = a.recommend
    old_lr = None
    if a.resume and a.out.exists():
        old = json.loads(a.out.read_text())
        old_lr = old.get("robust_lr")
        if (old["peers"], old["rounds"], old["fraction"]) == (a.peers, a.rounds, a.fraction):
            runs = old["runs"]  # every finished run of this setting is kept, asked for this time or not
            commands = [c for c in old.get("commands", [old["command"]]) if c != command] + [command]
            have = {r["key"] for r in runs}
            todo = [c for c in todo if key(c) not in have]
    print(f"{len(todo)} runs on {a.workers} workers ({len(runs)} kept)", file=sys.stderr, flush=True)
    def write(complete: bool) -> None:  # after every run: a stopped bench keeps what it finished
        runs.sort(key=lambda r: r["key"])
        result = {"peers": a.peers, "fraction": a.fraction,
                  "hostile": len(Attack("max", a.fraction).hostile(a.peers)), "rounds": a.rounds, "seeds": a.seeds,
                  "aggregates": a.aggregates, "attacks": a.attacks, "robust": "median", "complete": complete,
                  "robust_lr": (old_lr if a.resume and old_lr else a.robust_lr[0] or TrainConfig().lr),
                  "default_lr": TrainConfig().lr, "estimator": TrainConfig().estimator.value,
                  "samples": TrainConfig().samples, "directions": TrainConfig().directions.value,
                  "table": summarize(runs), "runs": runs, "plot": plot(runs, a.out), "commands": commands,
                  "recommended": recommend}
        save_result(result, a.out, command, machine())

    for res in sweep(run, todo, a.workers):
        runs.append(res)
        print(f"{res['key']}: {res['accuracy']:.3f} ({res['seconds']} s)", file=sys.stderr, flush=True)
        write(complete=False)
    write(complete=True)


SECTION = Section("attacks", "bench.experiments.attacks", render,
                  steps=(Step("attacks", ("--out", "{out}/attacks.json"),
                              ("--peers", "4", "--rounds", "1", "--eval-every", "1", "--attacks", "none,max", "--seeds", "1",
                               "--workers", "1", "--out", "{out}/attacks.json"),
                              timeout_min=120),),
                  claims=claims, note=note)

if __name__ == "__main__":
    main()
