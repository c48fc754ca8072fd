"""Learning quality: onebyte beside what users would pick instead (all-MiniLM-L6-v2 on VADER).

    python -m bench.experiments.quality [--quick] [--seeds 3] [--workers 2] [--out bench/results/quality.json]

Held-out accuracy on the whole VADER test split, mean ± std over seeds, for:
  * zero-shot (the untouched model);
  * first-order fine-tuning of every weight with Adam and backprop (the upper bound users know);
  * single-machine SPSA with float scalars, written the MeZO way (bench/baselines/mezo.py);
  * onebyte, 1 peer, with the float32, byte and sign codecs;
  * onebyte (byte) with 2, 4 and 8 peers on iid and Dirichlet(0.3) label-skewed shards.
All SPSA runs use the demo's training configuration (bias tuning, lr 1e-3, eps 1e-3, K=4
gradients per peer per round, batch 32). A seed changes the run id (so every direction and
batch) and the shard split. Runs go to a pool of single-threaded worker processes.

"Swarm seconds" is the wall-clock a swarm of real machines would need without network: peers
measure in parallel, so each round costs its slowest peer's measurement plus applying the
round's records (the simulator times both).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from bench.baselines import mezo
from bench.output import RESULTS
from bench.sections import Claim, Results, Section, Step
from bench.sweep import adam_curve, figure, machine, mean_std, point, simulate, sweep

# Multi-peer runs stop once they have measured more gradients than the 1-peer run (n x rounds).
FULL = {"rounds": 120, "multi_rounds": {2: 40, 4: 40, 8: 20}, "eval_every": 30, "multi_eval_every": 5,
        "adam_steps": 150, "adam_eval_every": 50, "splits": ("iid", "dirichlet:0.3"), "eval_size": 0}
QUICK = {"rounds": 4, "multi_rounds": {4: 2}, "eval_every": 2, "multi_eval_every": 1, "adam_steps": 4,
         "adam_eval_every": 2, "splits": ("iid", "dirichlet:0.3"), "eval_size": 50}
ADAM_LR = 2e-5
MODEL, TASK = "minilm", "vader"


def spsa_demo(**changes):
    """The configuration this section measures, the demo's when it was first measured: two-point SPSA,
    lr 1e-3 and eps 1e-3 constant, K = 4 distinct directions, bias tuning, batch 32, and every setting
    added since at its ``legacy`` value (the library default has moved on: the estimators section
    compares the two)."""
    from onebyte.config import TrainConfig

    return TrainConfig.from_dict({**TrainConfig().to_dict(), **TrainConfig.LEGACY, "lr": 1e-3, "eps": 1e-3,
                                  "samples": 4, "batch_size": 32, "tune": "bias", "directions": "distinct",
                                  "max_length": 32, **changes})


def conditions(p: dict) -> list[dict]:
    out = [{"name": "zero-shot", "kind": "zero-shot"},
           {"name": "Adam (first-order, all weights)", "kind": "adam"},
           {"name": "float SPSA, MeZO-style, 1 machine", "kind": "mezo", "peers": 1}]
    for codec in ("float32", "byte", "sign"):
        out.append({"name": f"onebyte {codec}, 1 peer", "kind": "onebyte", "codec": codec, "peers": 1,
                    "split": "iid"})
    for split in p["splits"]:
        for n in p["multi_rounds"]:
            out.append({"name": f"onebyte byte, {n} peers, {split}", "kind": "onebyte", "codec": "byte",
                        "peers": n, "split": split})
    return out


# --------------------------------------------------------------------------- workers


def run_onebyte(cond: dict, seed: int, p: dict) -> list[dict]:
    import onebyte

    multi = cond["peers"] > 1
    spec = onebyte.RunSpec(run_id=f"quality-seed{seed}", model=MODEL, task=TASK,
                           train=spsa_demo(codec=cond["codec"]))
    return simulate(spec, peers=cond["peers"], split=cond["split"], seed=seed,
                    rounds=p["multi_rounds"][cond["peers"]] if multi else p["rounds"],
                    eval_every=p["multi_eval_every"] if multi else p["eval_every"],
                    eval_size=p["eval_size"] or None)["curve"]  # 0: all


def _plain(seed: int):
    """Model, objective and data without onebyte's state (for the baselines)."""
    from onebyte.config import TrainConfig
    from onebyte.models import load_model
    from onebyte.tasks.data import load_dataset
    from onebyte.tasks.objectives import ObjectiveKind, build_objective

    loaded = load_model(MODEL)
    dataset = load_dataset(TASK)
    return loaded, dataset, build_objective(loaded, dataset, ObjectiveKind.AUTO, TrainConfig().max_length)


def run_zero_shot(cond: dict, seed: int, p: dict) -> list[dict]:
    from onebyte.tasks.data import eval_subset

    _, dataset, obj = _plain(seed)
    return [point({}, obj.evaluate(eval_subset(dataset.test, p["eval_size"])))]


def run_mezo(cond: dict, seed: int, p: dict) -> list[dict]:
    """MeZO (Malladi et al. 2023) on the same biases, batches and hyper-parameters, float32 throughout."""
    from onebyte.config import Run, RunSpec
    from onebyte.params import TuneSpec, select_parameters
    from onebyte.seeds import stream_seed
    from onebyte.tasks.data import eval_subset
    from onebyte.training import batch_for

    loaded, dataset, obj = _plain(seed)
    train = spsa_demo()
    params = [prm for _, prm in select_parameters(loaded.model, TuneSpec.parse(train.tune))]
    tag = Run(RunSpec(f"quality-seed{seed}", MODEL, TASK, train=train), loaded.base_hash).run_tag
    test = eval_subset(dataset.test, p["eval_size"])

    curve = [point({}, obj.evaluate(test))]
    forwards, train_s = 0, 0.0
    for r in range(p["rounds"]):
        t = time.perf_counter()
        for k in range(train.samples):
            batch = batch_for(tag, dataset.train, train.batch_size, r, 0, k)
            z_seed = stream_seed(tag, "mezo", r, k) & 0x7FFF_FFFF_FFFF_FFFF
            g = mezo.projected_gradient(params, z_seed, train.eps, lambda batch=batch: obj.loss(batch))
            mezo.update(params, z_seed, train.lr, g)
            forwards += 2
        train_s += time.perf_counter() - t
        if (r + 1) % p["eval_every"] == 0 or r + 1 == p["rounds"]:
            s = round(train_s, 3)
            curve.append(point({"round": r, "forward_passes": forwards, "seconds": s, "swarm_seconds": s},
                               obj.evaluate(test)))
    return curve


def adam_run(seed: int, steps: int, every: int, eval_size: int) -> dict:
    """First-order Adam on all weights, batch 32 (``sweep.adam_curve``), evaluated on ``eval_size``
    held-out examples (0: all) before the first step, every ``every`` steps and after the last."""
    from onebyte.tasks.data import eval_subset

    loaded, dataset, obj = _plain(seed)
    return adam_curve(loaded.model, list(loaded.model.parameters()), obj, dataset.train,
                      eval_subset(dataset.test, eval_size), seed=seed, lr=ADAM_LR, batch_size=32, steps=steps,
                      every=every)


def run_adam(cond: dict, seed: int, p: dict) -> list[dict]:
    return adam_run(seed, p["adam_steps"], p["adam_eval_every"], p["eval_size"])["curve"]


RUNNERS = {"onebyte": run_onebyte, "mezo": run_mezo, "adam": run_adam, "zero-shot": run_zero_shot}


def run_task(task: tuple[dict, int, dict]) -> dict:
    cond, seed, p = task
    t = time.perf_counter()
    curve = RUNNERS[cond["kind"]](cond, seed, p)
    return {"name": cond["name"], "seed": seed, "curve": curve, "task_seconds": round(time.perf_counter() - t, 1)}


def _cost(cond: dict, p: dict) -> float:
    """Rough forward passes, to start the longest runs first."""
    if cond["kind"] == "onebyte":
        return cond["peers"] * (p["multi_rounds"][cond["peers"]] if cond["peers"] > 1 else p["rounds"])
    return {"mezo": p["rounds"], "adam": p["adam_steps"] * 0.4, "zero-shot": 0.0}[cond["kind"]]


# --------------------------------------------------------------------------- summary


def summarize(conds: list[dict], runs: list[dict], p: dict) -> dict:
    by_name: dict[str, list[dict]] = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        by_name.setdefault(run["name"], []).append(run)
    rows = []
    for cond in conds:
        rs = by_name.get(cond["name"], [])
        final = [r["curve"][-1] for r in rs]
        mean, std = mean_std([f["accuracy"] for f in final])
        rows.append({**cond, "seeds": len(rs), "final_accuracy_mean": mean, "final_accuracy_std": std,
                     "rounds": final[0]["round"], "forward_passes": final[0]["forward_passes"],
                     "payload_bytes": final[0]["payload_bytes"],
                     "swarm_seconds_mean": statistics.fmean(f["swarm_seconds"] for f in final)})
    named = {row["name"]: row for row in rows}
    mezo, byte1 = named["float SPSA, MeZO-style, 1 machine"], named["onebyte byte, 1 peer"]
    targets = {"byte_vs_float_spsa": {
        "byte_mean": byte1["final_accuracy_mean"], "float_spsa_mean": mezo["final_accuracy_mean"],
        "forward_passes": byte1["forward_passes"], "gap_points": 100 * (mezo["final_accuracy_mean"]
                                                                       - byte1["final_accuracy_mean"])}}
    targets["byte_vs_float_spsa"]["met"] = targets["byte_vs_float_spsa"]["gap_points"] <= 1.0
    # Rounds for n peers to reach the 1-peer final accuracy: on the mean curves over seeds (the
    # figure the tables report), and per seed against that seed's own 1-peer run (noisier: the
    # curves flatten near the end, where a few test examples decide).
    ones = by_name.get("onebyte byte, 1 peer", [])
    one_peer = {r["seed"]: r["curve"][-1]["accuracy"] for r in ones}
    one_mean = statistics.fmean(one_peer.values()) if one_peer else math.nan
    reach = []
    for split in p["splits"]:
        for n in p["multi_rounds"]:
            name = f"onebyte byte, {n} peers, {split}"
            rs = by_name.get(name, [])
            per_seed = [next((pt["round"] for pt in run["curve"] if pt["accuracy"] >= one_peer[run["seed"]]), None)
                        for run in rs]
            points = min((len(run["curve"]) for run in rs), default=0)
            mean_curve = [(rs[0]["curve"][i]["round"], statistics.fmean(run["curve"][i]["accuracy"] for run in rs))
                          for i in range(points)]
            on_mean = next((rnd for rnd, acc in mean_curve if acc >= one_mean), None)
            reach.append({"name": name, "peers": n, "split": split, "rounds_per_seed": per_seed,
                          "rounds_mean_curve": on_mean, "one_peer_rounds": p["rounds"],
                          "max_rounds_run": p["multi_rounds"][n],
                          "fraction_mean_curve": None if on_mean is None else on_mean / p["rounds"]})
    four = next((x for x in reach if x["peers"] == 4 and x["split"] == "iid"), None)
    if four is not None:
        targets["four_peers_third_of_rounds"] = {
            "rounds_mean_curve": four["rounds_mean_curve"], "rounds_per_seed": four["rounds_per_seed"],
            "one_peer_final_mean": one_mean, "limit": p["rounds"] / 3,
            "met": four["fraction_mean_curve"] is not None and four["fraction_mean_curve"] <= 1 / 3}
    return {"rows": rows, "reach": reach, "targets": targets}


# --------------------------------------------------------------------------- plots


def plot(runs: list[dict], out_dir: Path, prefix: str) -> list[str]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(run["name"], []).append(run)
    axes = [("forward_passes", "forward passes (all peers)", False, "forward"),
            ("swarm_seconds", "wall-clock of the swarm, s (peers in parallel, no network)", False, "wallclock"),
            ("payload_bytes", "payload bytes exchanged, all peers (codes + exponents)", True, "bytes")]
    files = []
    for key, label, logx, tag in axes:
        path = out_dir / f"{prefix}_{tag}.png"
        with figure(path) as (_, ax):
            for name, rs in groups.items():
                if name == "zero-shot":
                    ax.axhline(rs[0]["curve"][0]["accuracy"], ls="--", c="grey", lw=1, label=name)
                    continue
                if key == "payload_bytes" and not name.startswith("onebyte"):
                    continue  # single-machine baselines exchange nothing
                n = min(len(r["curve"]) for r in rs)
                xs = [statistics.fmean(r["curve"][i][key] for r in rs) for i in range(n)]
                ys = [statistics.fmean(r["curve"][i]["accuracy"] for r in rs) for i in range(n)]
                if logx:
                    xs, ys = xs[1:], ys[1:]
                ax.plot(xs, ys, marker=".", label=name, lw=1.2, ls=":" if "dirichlet" in name else "-")
            if logx:
                ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("held-out accuracy (mean over seeds)")
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(alpha=0.3)
        files.append(path.name)
    return files


# --------------------------------------------------------------------------- report


def render(results: Results) -> list[str]:
    """The quality section of BENCHMARKS.md (its plots linked from where the report is)."""
    r, images = results.get("quality"), results.images
    if not r:
        return []
    pct = lambda m, s: f"{100 * m:.1f} ± {100 * s:.1f}"  # noqa: E731
    s = r["summary"]
    lines = ["## Learning quality (all-MiniLM-L6-v2 on VADER, held-out accuracy)", "",
             f"Measured {r['date']} on {r['machine']}: {r['seeds']} seed(s), {r['workers']} single-threaded "
             f"worker processes, {r['wall_seconds'] / 60:.1f} min. Reproduce with `{r['command']}`. "
             f"Held-out set: {r['test_examples']} examples never trained on. SPSA runs: bias tuning, lr 1e-3, "
             "eps 1e-3, K=4 gradients per peer per round, batch 32 (the demo's configuration); "
             f"Adam: all weights, lr {ADAM_LR:g}, batch 32.", "",
             "| method | rounds / steps | forward passes | payload bytes (all peers) | swarm wall-clock s "
             "| accuracy % (mean ± std) |", "|---|---|---|---|---|---|"]
    for row in s["rows"]:
        fw = "0" if row["kind"] == "zero-shot" else f"{row['forward_passes']:,}"
        if row["kind"] == "adam":
            fw += " (+ as many backward)"
        lines.append(f"| {row['name']} | {row['rounds']} | {fw} | {row['payload_bytes']:,} | "
                     f"{row['swarm_seconds_mean']:.0f} | {pct(row['final_accuracy_mean'], row['final_accuracy_std'])} |")
    t = s["targets"]["byte_vs_float_spsa"]
    lines += ["", "**Targets**", "",
              f"* onebyte `byte` vs single-machine float SPSA at the same {t['forward_passes']:,} forward passes: "
              f"{100 * t['byte_mean']:.1f} % vs {100 * t['float_spsa_mean']:.1f} % (gap "
              f"{t['gap_points']:+.1f} points; target: byte within 1 point) — "
              f"{'met' if t['met'] else '**missed**'}."]
    four = s["targets"].get("four_peers_third_of_rounds")
    if four:
        got = four["rounds_mean_curve"]
        lines.append(f"* 4 peers (iid) reach the 1-peer final accuracy ({100 * four['one_peer_final_mean']:.1f} %, "
                     f"mean of seeds) on the mean curve after {got if got is not None else 'more than'} "
                     f"{'rounds' if got is not None else str(r['params']['multi_rounds']['4']) + ' rounds'}; "
                     f"target ≤ {four['limit']:.0f} (a third of {r['params']['rounds']}) — "
                     f"{'met' if four['met'] else '**missed**'}. Per seed, against that seed's own 1-peer run: "
                     f"{four['rounds_per_seed']} (None: not within the rounds run).")
    lines += ["", "Rounds for n peers to first reach the 1-peer final accuracy "
              f"(evaluated every {r['params']['multi_eval_every']} rounds):", "",
              "| peers | shards | rounds run | rounds to reach (mean curve) | / 1-peer rounds | per seed |",
              "|---|---|---|---|---|---|"]
    for x in s["reach"]:
        got, frac = x["rounds_mean_curve"], x["fraction_mean_curve"]
        lines.append(f"| {x['peers']} | {x['split']} | {x['max_rounds_run']} | "
                     f"{'not reached' if got is None else got} | {'—' if frac is None else f'{frac:.2f}'} | "
                     f"{x['rounds_per_seed']} |")
    lines += ["", "Accuracy (mean over seeds) against forward passes, against the swarm's wall-clock and "
              "against payload bytes; dotted: Dirichlet(0.3) shards.", ""]
    lines += [f"![{name}]({images}{name})" for name in r["plots"]]
    return [*lines, ""]


def claims(results: Results) -> list[Claim]:
    q = results.get("quality")
    if not q:
        return []
    rows: list[Claim] = []
    t = q["summary"]["targets"]["byte_vs_float_spsa"]
    rows.append(("`byte` vs single-machine float SPSA, same forward passes",
                 f"{100 * t['byte_mean']:.1f} % vs {100 * t['float_spsa_mean']:.1f} %", "within 1 point", t["met"]))
    four = q["summary"]["targets"].get("four_peers_third_of_rounds")
    if four:
        got = four["rounds_mean_curve"]
        rows.append((f"rounds for 4 peers to reach the 1-peer final accuracy (mean of {q['seeds']} seed(s))",
                     f"{got if got is not None else 'not'} of {q['params']['rounds']} (per seed: "
                     f"{four['rounds_per_seed']})", f"≤ {four['limit']:.0f}", four["met"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, a few rounds (minutes)")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    a = ap.parse_args()
    p = dict(QUICK if a.quick else FULL)
    seeds = list(range(a.seeds if a.seeds else (1 if a.quick else 3)))
    conds = conditions(p)
    tasks = [(c, s, p) for c in conds for s in (seeds[:1] if c["kind"] == "zero-shot" else seeds)]
    tasks.sort(key=lambda t: -_cost(t[0], p))
    start = time.perf_counter()
    runs = []
    for run in sweep(run_task, tasks, a.workers):
        runs.append(run)
        acc = run["curve"][-1]["accuracy"]
        print(f"[{time.perf_counter() - start:6.0f}s] {len(runs)}/{len(tasks)} {run['name']} seed {run['seed']}: "
              f"{100 * acc:.1f} % ({run['task_seconds']:.0f} s)", flush=True)
    from onebyte.tasks.data import load_dataset

    test_n = len(load_dataset(TASK).test)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    prefix = a.out.stem
    cmd = "python -m bench.experiments.quality" + (" --quick" if a.quick else "") + (f" --seeds {a.seeds}" if a.seeds else "")
    result = {
        "command": cmd + f" --workers {a.workers}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "seeds": len(seeds), "workers": a.workers,
        "params": {**p, "splits": list(p["splits"]), "multi_rounds": {str(k): v for k, v in p["multi_rounds"].items()}},
        "test_examples": p["eval_size"] or test_n,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "summary": summarize(conds, runs, p),
        "plots": plot(runs, a.out.parent, prefix),
        "runs": runs,
    }
    a.out.write_text(json.dumps(result, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o)
                                else str(o)) + "\n")
    print("\n".join(render(Results(a.out.parent, ""))))


SECTION = Section(
    "quality", "bench.experiments.quality", render, claims=claims,
    steps=(Step("quality", ("--out", "{out}/quality.json"), ("--quick", "--workers", "1", "--out", "{out}/quality.json")),),
)

if __name__ == "__main__":
    main()
