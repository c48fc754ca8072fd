"""The demo's default command, as a user runs it: final accuracy, forward passes to 87.2 %, wall time (issue #11).

    python -m bench.experiments.demo [--seeds 3] [--first-seed 0] [--no-command] [--workers 2] [--quick]
        [--out bench/results/demo.json]

Two kinds of run, fed to a pool of ``--workers`` processes:

* **Seeds.** The library's defaults as they are when this runs (``TrainConfig()``,
  ``api.Defaults``: 4 peers, its rounds, iid shards) on MiniLM + VADER, run id
  ``estimators-seed{s}`` and shard seed s (the estimators bench's seeds), evaluated on the whole
  held-out split every 5 rounds (issue #11's condition). Single-threaded workers.
* **The command itself.** ``onebyte simulate --model minilm --task vader --peers 4 --codec byte
  --eval-every 5`` as a subprocess with torch's default threads, timed from launch to exit
  (issue #11: the demo finishes within 15 minutes), after the seeds, alone on the machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.experiments.estimators import MODEL, TARGET_ACCURACY, TARGET_FINAL, TARGET_PASSES, TASK, run_task
from bench.output import RESULTS, save_result
from bench.sections import Claim, Results, Section, Step
from bench.sweep import mean_curve, mean_std, reach, stat, sweep

TARGET_MINUTES = 15
EVAL_EVERY = 5
#: ``--quick``: the same runs, shorter (a smoke test: its figures are not quoted).
QUICK = {"rounds": 2, "seeds": 1, "eval_size": 50}
DEMO_ARGS = ["simulate", "--model", MODEL, "--task", TASK, "--peers", "4", "--codec", "byte",
             "--eval-every", str(EVAL_EVERY), "--no-progress"]


def run_command(args: list[str]) -> dict:
    """The demo command as a user types it (plus ``args``), timed; its summary's final accuracy."""
    import json

    with tempfile.TemporaryDirectory(prefix="onebyte-demo-") as tmp:
        out = Path(tmp) / "demo"
        cmd = [str(Path(sys.executable).with_name("onebyte")), *DEMO_ARGS, *args, "--out", str(out)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            return {"kind": "command", "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
        s = json.loads((out / "summary.json").read_text())
    return {"kind": "command", "command": "onebyte " + " ".join([*DEMO_ARGS, *args]), "seconds": round(seconds, 1),
            "rounds": s["rounds"], "forward_passes": s["forward_passes"],
            "final": {k: s["eval_after"][k] for k in ("accuracy", "macro_f1")}, "summary": s,
            "stdout": proc.stdout[-4000:]}


def _job(job: dict) -> dict:
    return {"seed": job["seed"], **run_task(job["task"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--no-command", action="store_true", help="the seeds only, not the timed command")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 seed, 50 held-out examples")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    a.out = a.out or (RESULTS / "quick" if a.quick else RESULTS) / "demo.json"
    from onebyte.api import Defaults
    from onebyte.config import TrainConfig

    train = TrainConfig()
    rounds = QUICK["rounds"] if a.quick else Defaults.rounds
    seeds = QUICK["seeds"] if a.quick else a.seeds
    eval_size = QUICK["eval_size"] if a.quick else 0
    jobs = [{"kind": "sim", "seed": s, "task": {
        "kind": "sim", "key": f"seed{s}", "train": train.to_dict(), "peers": Defaults.peers, "rounds": rounds,
        "split": Defaults.split, "seed": s, "run_id": f"estimators-seed{s}", "site": None, "eval_size": eval_size,
        "eval_every": EVAL_EVERY}} for s in range(a.first_seed, a.first_seed + seeds)]
    t = time.perf_counter()
    runs = sorted(sweep(_job, jobs, a.workers), key=lambda d: d["seed"])
    command = ({"kind": "command", "error": "not run (--no-command)"} if a.no_command else
               run_command(["--rounds", str(rounds), "--eval-size", str(eval_size)] if a.quick else []))
    errors = [r["error"] for r in runs if "error" in r]
    result: dict = {"train": train.to_dict(), "peers": Defaults.peers, "rounds": rounds, "eval_every": EVAL_EVERY,
                    "seeds": seeds, "workers": a.workers, "command_run": command,
                    "wall_seconds": round(time.perf_counter() - t, 1)}
    if errors:
        result["error"] = errors[0]
    else:
        mc = mean_curve(runs)
        result.update({
            "per_seed": [{"seed": r["seed"], "final": r["curve"][-1]["accuracy"], "seconds": r["seconds"],
                          "reach": reach(r["curve"], TARGET_ACCURACY)} for r in runs],
            "final": {k: stat([r["curve"][-1][k] for r in runs]) for k in ("accuracy", "macro_f1")},
            "reach": reach(mc, TARGET_ACCURACY), "mean_curve": mc,
            "forward_passes": runs[0]["forward_passes"]})
    args = " --quick" * a.quick + (f" --seeds {a.seeds} --first-seed {a.first_seed}" if a.first_seed else "")
    save_result(result, a.out, "python -m bench.experiments.demo" + args + " --no-command" * a.no_command,
                f"2-core CPU, no GPU; {a.workers} workers")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def render(results: Results) -> list[str]:
    r = results.get("demo")
    if not r:
        return []
    c = r["command_run"]
    out = ["## The demo's default command (all-MiniLM-L6-v2 on VADER)", "",
           f"`{r['command']}` ({r['date']}, {r['machine']}): the library's defaults as they are ("
           f"{r['train']['estimator']}, lr {r['train']['lr']:g} on a {r['train']['lr_schedule']} over "
           f"{r['train']['horizon']} rounds, K = {r['train']['samples']}), {r['peers']} peers, {r['rounds']} rounds, "
           f"evaluated on the whole held-out split every {r['eval_every']} rounds; {r['seeds']} seeds "
           "(run id `estimators-seed{s}`, shard seed s), single-threaded runs two at a time.", ""]
    if "error" in r:
        return [*out, f"The run failed: {r['error']}", ""]
    f, reach = r["final"]["accuracy"], r["reach"]
    out += [f"* Final held-out accuracy: **{_pct(f['mean'])} ± {100 * f['std']:.1f}** (per seed "
            + ", ".join(_pct(s["final"]) for s in r["per_seed"]) + f"; target ≥ {_pct(TARGET_FINAL)}), "
            f"after {r['forward_passes']:,} forward passes.",
            f"* Forward passes to {_pct(TARGET_ACCURACY)} (mean curve): "
            + (f"**{reach['forward_passes']:.0f}** (round {reach['round']})" if reach else "not reached")
            + f"; target ≤ {TARGET_PASSES}.",
            "* The command itself, " + (f"`{c['command']}`, with torch's default threads, alone on the machine: "
                                         f"**{c['seconds'] / 60:.1f} min**, final accuracy "
                                         f"{_pct(c['final']['accuracy'])}" if "error" not in c
                                         else f"failed: {c['error']}") + f" (target ≤ {TARGET_MINUTES} min).", ""]
    more = results.get("demo_more_seeds")
    if more and "error" not in more and more.get("rounds") == r["rounds"]:
        finals = [s["final"] for s in r["per_seed"]] + [s["final"] for s in more["per_seed"]]
        mean, std = mean_std(finals)
        out[-1:-1] = [f"* With {len(more['per_seed'])} more seeds (`{more['command']}`, {more['date']}): "
                      + ", ".join(f"seed {s['seed']} {_pct(s['final'])}" for s in more["per_seed"])
                      + f"; over all {len(finals)} seeds {_pct(mean)} ± {100 * std:.1f}."]
    out += ["| forward passes | accuracy (mean ± std) |", "|---|---|"]
    step = max(1, len(r["mean_curve"]) // 12)
    for pt in r["mean_curve"][::step] + ([r["mean_curve"][-1]] if (len(r["mean_curve"]) - 1) % step else []):
        out.append(f"| {pt['forward_passes']:.0f} | {_pct(pt['accuracy'])} ± {100 * pt['accuracy_std']:.1f} |")
    return [*out, ""]


def claims(results: Results) -> list[Claim]:
    r = results.get("demo")
    if not r or "error" in r:
        return []
    f, reach, c = r["final"]["accuracy"], r["reach"], r["command_run"]
    out = [(f"the demo's default command: final accuracy ({r['forward_passes']:,} forward passes, mean of "
            f"{r['seeds']} seeds)", f"{_pct(f['mean'])}", f"≥ {_pct(TARGET_FINAL)}", f["mean"] >= TARGET_FINAL),
           ("the demo's default command: forward passes to 87.2 % (mean curve)",
            f"{reach['forward_passes']:.0f}" if reach else "not reached", f"≤ {TARGET_PASSES}",
            bool(reach) and reach["forward_passes"] <= TARGET_PASSES)]
    if "error" not in c:
        out.append(("the demo's default command: minutes to finish",
                    f"{c['seconds'] / 60:.1f}", f"≤ {TARGET_MINUTES}", c["seconds"] <= 60 * TARGET_MINUTES))
    return out


SECTION = Section("demo", "bench.experiments.demo", render,
                  steps=(Step("demo", ("--out", "{out}/demo.json"), ("--quick", "--workers", "1", "--out", "{out}/demo.json"),
                              timeout_min=60),),
                  claims=claims)

if __name__ == "__main__":
    main()
