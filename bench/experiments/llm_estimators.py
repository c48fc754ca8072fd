"""Estimators on a causal LM: SmolLM2-135M-Instruct on the labelled tweets (3 classes), issue #11 item 2.

    python -m bench.experiments.llm_estimators [--quick] [--estimators spsa,fzoo,centered] [--seeds 3]
        [--budget 400] [--lr ESTIMATOR=VALUE ...] [--workers 2] [--dry-run] [--resume]
        [--out bench/results/llm_estimators.json]

It prints the runs' estimated time first (`--dry-run`: only that, and the list of runs).

Held-out accuracy and macro-F1 against forward passes for each estimator (mean ± std over seeds),
with plain SPSA and first-order Adam beside them, on the prompt, chat template and labels of
llm.py. Every estimator gets the same budget of forward passes for all 4 peers together (iid
shards), so rounds = budget // (peers × forward passes of one record), K = 4 directions per peer and
round, tune `norm`, batch 8, max length 64, ε 1e-3. Learning rates (``LR``, overridable with
``--lr ESTIMATOR=VALUE``): spsa (and es) at the earlier llm.json run's 7e-5, constant; the normalised
estimators (fzoo, centered) at llm_fzoo.json's 1e-3 with a cosine schedule over the condition's
rounds down to 0.1×. Each run is evaluated before training and about ``evals`` times during it (every
``round(budget / evals / passes per round)`` rounds, and at its end); values at matched forward
passes are interpolated linearly between evaluations. Adam: all weights, backprop, lr 1e-5, batch 8
(llm.py's baseline) for budget / 10 steps, each counted as one forward pass (plus one backward).

A seed changes the run id (so every direction and batch), the shard split and Adam's batches.
Runs go to a pool of single-threaded worker processes; the result file is written after every run,
so that ``--resume`` runs only what is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path

from bench import sweep
from bench.experiments.estimators import describe, makespan, rounds_for
from bench.experiments.llm import TEMPLATE
from bench.output import RESULTS, save_result
from bench.sections import Claim, Results, Section, Step
from bench.sweep import earlier_runs, guarded, pm

MODEL, TASK, LABELS, CHAT = "smollm2", "tweets", ("negative", "neutral", "positive"), True  # llm.py's run
PEERS = 4
#: What every condition shares (llm.py's run, with K = 4 for every estimator).
SHARED = {"tune": "norm", "eps": 1e-3, "samples": 4, "batch_size": 8, "max_length": 64}
#: Learning rate and schedule per estimator: spsa at the earlier llm.json run's rate; the normalised
#: estimators at llm_fzoo.json's (+6.7 points over zero-shot); es, unnormalised like spsa, at spsa's.
LR = {"spsa": (7e-5, "constant"), "fzoo": (1e-3, "cosine"), "centered": (1e-3, "cosine"), "es": (7e-5, "constant")}
FINAL_RATIO = 0.1  # a cosine schedule ends at this times its rate, at the condition's last round
ADAM_LR, ADAM_BATCH = 1e-5, 8  # llm.py's first-order baseline
ESTIMATORS = "spsa,fzoo,centered"
# budget: forward passes of all peers together, per condition. evals: evaluations during a run
# (besides the one before). adam_steps: None is budget // 10.
FULL = {"budget": 400, "seeds": 3, "eval_size": 200, "evals": 4, "adam_steps": None, "adam_evals": 4}
# The quick run, a smoke test of every path but the model's, stands tiny-gpt2 (no chat template) in for
# SmolLM2 (llm.py's and memory.py's quick runs load SmolLM2 and its chat template).
QUICK = {"budget": 20, "seeds": 1, "eval_size": 10, "evals": 1, "adam_steps": 1, "adam_evals": 1,
         "model": "tiny-gpt2", "chat": False}
#: Where the matched-forward-pass columns are: fractions of the forward passes every condition spent.
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
# Cost model for the estimate (one single-threaded worker of two on a 2-core machine): seconds per
# forward pass of a batch of 8 (with its share of the update), per held-out example evaluated, per
# Adam step (forward + backward + update, all weights), to start a run (model load), once per worker.
COST = {"pass": 1.5, "eval_example": 0.12, "adam_step": 6.0, "start": 15.0, "worker": 8.0}


# --------------------------------------------------------------------------- the plan


def parse_lr(items: list[str], estimators: list[str]) -> dict[str, tuple[float, str]]:
    """``LR`` with ``ESTIMATOR=VALUE`` overrides of the rate (the schedule stays the estimator's)."""
    table = dict(LR)
    for item in items:
        name, _, value = item.partition("=")
        if name not in table or not value:
            raise ValueError(f"--lr takes ESTIMATOR=VALUE with ESTIMATOR one of {', '.join(table)}, not {item!r}")
        table[name] = (float(value), table[name][1])
    return {e: table[e] for e in estimators}


def train_for(estimator: str, lr: float, schedule: str, rounds: int = 1):
    """The condition's ``TrainConfig``; a cosine schedule runs over exactly ``rounds`` rounds."""
    from onebyte.config import TrainConfig

    return TrainConfig.from_dict({**TrainConfig().to_dict(), **SHARED, "estimator": estimator, "lr": lr,
                                  "lr_schedule": schedule, "horizon": rounds if schedule == "cosine" else 0,
                                  "final_ratio": FINAL_RATIO, "warmup": 0})


def conditions(p: dict, lrs: dict[str, tuple[float, str]]) -> list[dict]:
    """One condition per estimator: its rounds within the budget and how often it is evaluated."""
    out = []
    for estimator, (lr, schedule) in lrs.items():
        probe = train_for(estimator, lr, schedule)
        per_round = PEERS * probe.forward_passes(probe.samples)
        rounds = rounds_for(probe, PEERS, p["budget"])
        train = train_for(estimator, lr, schedule, rounds)
        every = min(rounds, max(1, round(p["budget"] / p["evals"] / per_round)))
        out.append({"name": f"{estimator}, lr {lr:g}, {schedule}", "estimator": estimator, "train": train.to_dict(),
                    "settings": describe(train), "rounds": rounds, "passes_per_round": per_round,
                    "forward_passes": rounds * per_round, "eval_every": every})
    return out


def adam_steps(p: dict) -> int:
    return p["adam_steps"] if p["adam_steps"] is not None else max(1, p["budget"] // 10)


def adam_every(p: dict) -> int:
    """Every how many steps Adam is evaluated (and after its last)."""
    return max(1, adam_steps(p) // p["adam_evals"])


def checkpoints(conds: list[dict]) -> list[int]:
    """Matched forward passes: ``FRACTIONS`` of the fewest forward passes any condition spent."""
    common = min(c["forward_passes"] for c in conds)
    return [max(1, round(f * common)) for f in FRACTIONS]


def plan(p: dict, conds: list[dict], seeds: list[int]) -> list[dict]:
    """Every run: each condition for each seed, and Adam for each seed."""
    lm = {k: p[k] for k in ("model", "chat") if k in p}  # the quick run's model (the full run's tasks name none)
    tasks = [{"kind": "sim", "estimator": c["estimator"], "train": c["train"], "rounds": c["rounds"],
              "eval_every": c["eval_every"], "seed": s, "run_id": f"llm-est-{s}", "eval_size": p["eval_size"],
              **lm} for c in conds for s in seeds]
    steps = adam_steps(p)
    tasks += [{"kind": "adam", "rounds": steps, "eval_every": adam_every(p), "seed": s,
               "lr": ADAM_LR, "batch_size": ADAM_BATCH, "eval_size": p["eval_size"], **lm} for s in seeds]
    for t in tasks:
        t["key"] = json.dumps(t, sort_keys=True)
    return tasks


def cost(task: dict) -> float:
    """Estimated seconds of one run on one single-threaded worker."""
    evals = 1 + math.ceil(task["rounds"] / task["eval_every"])
    out = COST["start"] + evals * task["eval_size"] * COST["eval_example"]
    if task["kind"] == "adam":
        return out + task["rounds"] * COST["adam_step"]
    from onebyte.config import TrainConfig

    train = TrainConfig.from_dict(task["train"])
    return out + task["rounds"] * PEERS * train.forward_passes(train.samples) * COST["pass"]


# --------------------------------------------------------------------------- workers


def spec(run_id: str, train, model: str = MODEL, chat: bool = CHAT):
    import onebyte

    return onebyte.RunSpec(run_id=run_id, model=model, task=TASK, labels=LABELS, template=TEMPLATE, chat=chat,
                           train=train)


def run_sim(task: dict) -> dict:
    """One simulation of 4 peers; the held-out curve from the simulator's evaluations."""
    from onebyte.config import TrainConfig

    out = sweep.simulate(spec(task["run_id"], TrainConfig.from_dict(task["train"]), task.get("model", MODEL),
                              task.get("chat", CHAT)), peers=PEERS,
                         rounds=task["rounds"], seed=task["seed"], eval_every=task["eval_every"],
                         eval_size=task["eval_size"])
    return {**out, "tuned_parameters": out.pop("summary")["tuned_parameters"]}


def run_adam(task: dict) -> dict:
    """First-order Adam on all weights (llm.py's baseline) on the same prompt and held-out sample.
    The model is used as loaded, without onebyte's state (whose compact form would hold the weights)."""
    from onebyte.models import load_model
    from onebyte.tasks.data import eval_subset, load_dataset
    from onebyte.tasks.objectives import build_objective

    s = spec("llm-est-adam", train_for("spsa", *LR["spsa"]),  # the prompt and max length of every condition
             task.get("model", MODEL), task.get("chat", CHAT))
    loaded = load_model(s.model)
    dataset = load_dataset(s.task, label_names=list(s.labels), template=s.template)
    obj = build_objective(loaded, dataset, s.objective, s.train.max_length, chat=s.chat)
    return sweep.adam_curve(loaded.model, list(loaded.model.parameters()), obj, dataset.train,
                            eval_subset(dataset.test, task["eval_size"]), seed=task["seed"], lr=task["lr"],
                            batch_size=task["batch_size"], steps=task["rounds"], every=task["eval_every"])


def run_task(task: dict) -> dict:
    return guarded(run_adam if task["kind"] == "adam" else run_sim, task)


# --------------------------------------------------------------------------- summary


def summarize(p: dict, conds: list[dict], tasks: list[dict], done: dict[str, dict]) -> dict:
    """Each condition's and Adam's rows from the runs done so far."""

    def finished(estimator: str | None) -> list[dict]:  # None: Adam's runs
        return [done[t["key"]] for t in tasks if t.get("estimator") == estimator and t["key"] in done]

    xs = checkpoints(conds)
    rows = [{**c, **sweep.condition_summary(c["name"], finished(c["estimator"]), xs)} for c in conds]
    steps = adam_steps(p)
    adam_xs = [max(1, round(f * steps)) for f in FRACTIONS]
    adam = sweep.condition_summary(f"Adam (first-order, all weights, lr {ADAM_LR:g})", finished(None), adam_xs)
    return {"checkpoints": xs, "adam_checkpoints": adam_xs, "rows": rows,
            "adam": {**adam, "steps": steps, "eval_every": adam_every(p)}}


# --------------------------------------------------------------------------- plot


def plot(summary: dict, zero_shot: float | None, path: Path, model: str = MODEL) -> str | None:
    """Accuracy against forward passes: each condition's mean curve, shaded ± std over seeds."""
    rows = [*summary["rows"], summary["adam"]]
    if all("error" in r for r in rows):
        return None
    return sweep.plot_forward(path, summary["rows"], summary["adam"], zero_shot,
                              title=f"{model} on {TASK}: estimators at the same forward-pass budget")


# --------------------------------------------------------------------------- report


def render(results: Results) -> list[str]:
    r = results.get("llm_estimators")
    if not r or not r.get("summary"):
        return []
    s, p = r["summary"], r["params"]
    head = (f"Measured {r['date']} on {r['machine']}: {r['workers']} single-threaded worker processes, "
            f"{r['wall_seconds'] / 60:.1f} min (estimated beforehand: {r['estimated_seconds'] / 60:.0f} min). "
            f"Reproduce with `{r['command']}`. {PEERS} peers, iid shards, {r['seeds']} seed(s); every estimator "
            f"gets a budget of {p['budget']:,} forward passes for all peers together (rounds = budget // (peers × "
            f"passes per record); a cosine schedule's horizon is the condition's rounds); shared settings: tune "
            f"`{r['shared']['tune']}`, K = {r['shared']['samples']}, batch {r['shared']['batch_size']}, max length "
            f"{r['shared']['max_length']}, ε {r['shared']['eps']:g}; {'chat template' if r['chat'] else 'no chat'}, "
            f"prompt `{r['template']!r}`. Held-out: {r['test_examples']} examples (fixed-seed sample) of the fixed "
            "test split")
    if r.get("zero_shot"):
        head += (f"; zero-shot accuracy {100 * r['zero_shot']['accuracy']:.1f} %, macro-F1 "
                 f"{100 * r['zero_shot']['macro_f1']:.1f}")
    if not r.get("complete", True):
        head += f". **Partial**: written when {r['runs_done']} of {r['runs_planned']} runs had finished"
    lines = [f"## Estimators on a causal LM ({r.get('model', MODEL)} on {TASK})", "", head + ".", "",
             "| condition | settings | forward passes / round | rounds | forward passes spent | evaluated every |",
             "|---|---|---|---|---|---|"]
    for c in s["rows"]:
        lines.append(f"| {c['name']} | {c['settings']} | {c['passes_per_round']} | {c['rounds']} | "
                     f"{c['rounds'] * c['passes_per_round']:,} | {c['eval_every']} round{'s' * (c['eval_every'] != 1)} "
                     f"({c['eval_every'] * c['passes_per_round']} forward passes) |")
    ad = s["adam"]
    lines.append(f"| {ad['name']} | batch {ADAM_BATCH}, backprop | 1 (+ 1 backward) per step | {ad['steps']} steps | "
                 f"{ad['steps']} (+ {ad['steps']} backward) | {ad['eval_every']} steps |")
    xs, head_cols = s["checkpoints"], " | ".join(f"@ {x:,}" for x in s["checkpoints"])
    for metric, title in (("accuracy", "Accuracy %"), ("macro_f1", "Macro-F1 ×100")):
        lines += ["", f"{title} (mean ± std over seeds) at matched forward passes (fractions "
                  f"{', '.join(f'{f:g}' for f in FRACTIONS)} of the fewest any condition spent; interpolated between "
                  "evaluations), and at the end of each run. Adam's columns are the same fractions of its "
                  f"{ad['steps']} steps ({', '.join(map(str, s['adam_checkpoints']))}):", "",
                  f"| condition | {head_cols} | final | at forward passes | seeds |", "|---|" + "---|" * (len(xs) + 3)]
        for row in [*s["rows"], ad]:
            if "error" in row:
                lines.append(f"| {row['name']} | " + " | ".join("—" for _ in xs) + f" | {row['error']} | | |")
                continue
            lines.append(f"| {row['name']} | " + " | ".join(pm(a[metric]) for a in row["at"])
                         + f" | {pm(row['final'][metric])} | {row['forward_passes']:,} | {row['seeds']} |")
    if r.get("plot"):
        lines += ["", f"![accuracy against forward passes]({results.images}{r['plot']})"]
    return [*lines, ""]


def claims(results: Results) -> list[Claim]:
    """The best of the other estimators against plain SPSA at the last matched checkpoint (mean of seeds)."""
    r = results.get("llm_estimators")
    if not r or not r.get("summary"):
        return []
    s = r["summary"]
    ok = {row["estimator"]: row for row in s["rows"] if "error" not in row}
    others = [row for e, row in ok.items() if e != "spsa" and row["at"][-1]["accuracy"]]
    if "spsa" not in ok or not ok["spsa"]["at"][-1]["accuracy"] or not others:
        return []
    spsa = ok["spsa"]["at"][-1]["accuracy"]
    best = max(others, key=lambda row: row["at"][-1]["accuracy"]["mean"])
    acc = best["at"][-1]["accuracy"]
    gain = 100 * (acc["mean"] - spsa["mean"])
    names = ", ".join(row["estimator"] for row in others)
    return [(f"{r.get('model', MODEL)} on {TASK}: best of {names} vs spsa at {s['checkpoints'][-1]:,} forward passes "
             f"({min(row['seeds'] for row in ok.values())} seed(s))",
             f"{best['estimator']} {pm(acc)} % vs spsa {pm(spsa)} % ({gain:+.1f} points)",
             "above spsa", gain > 0)]


# --------------------------------------------------------------------------- main


def command_line(a: argparse.Namespace, p: dict, estimators: list[str], lrs: dict) -> str:
    """The command that reproduces this result, every setting spelled out."""
    args = ["--quick"] if a.quick else []
    args += ["--estimators", ",".join(estimators), "--seeds", str(p["seeds"]), "--budget", str(p["budget"]),
             "--eval-size", str(p["eval_size"]), "--evals", str(p["evals"]), "--adam-steps", str(adam_steps(p))]
    for e in estimators:
        args += ["--lr", f"{e}={lrs[e][0]:g}"]
    args += ["--workers", str(a.workers), "--out", str(a.out)]
    return "python -m bench.experiments.llm_estimators " + shlex.join(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 20 forward passes, 10 held-out examples, 1 Adam step, on tiny-gpt2")
    ap.add_argument("--estimators", default=ESTIMATORS, help=f"comma-separated, among {', '.join(LR)}")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--budget", type=int, help="forward passes of all peers per condition (default 400; quick 20)")
    ap.add_argument("--eval-size", type=int, help="held-out examples (default 200; quick 10)")
    ap.add_argument("--evals", type=int, help="evaluations during a run, besides the one before (default 4)")
    ap.add_argument("--adam-steps", type=int, help="default: budget // 10 (quick 1)")
    ap.add_argument("--lr", action="append", default=[], metavar="ESTIMATOR=VALUE",
                    help="an estimator's learning rate (its schedule stays); repeat for several")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="print the runs and the estimated time, run nothing")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in --out, run only the others")
    ap.add_argument("--out", type=Path, help="default: bench/results/llm_estimators.json (--quick: bench/results/quick/…)")
    a = ap.parse_args()
    a.out = a.out or (RESULTS / "quick" if a.quick else RESULTS) / "llm_estimators.json"
    p = dict(QUICK if a.quick else FULL)
    p.update({k: v for k, v in (("seeds", a.seeds), ("budget", a.budget), ("eval_size", a.eval_size),
                                ("evals", a.evals), ("adam_steps", a.adam_steps)) if v is not None})
    estimators = [e.strip() for e in a.estimators.split(",") if e.strip()]
    if not estimators or not set(estimators) <= LR.keys():
        ap.error(f"--estimators takes names among {', '.join(LR)}")
    try:
        lrs = parse_lr(a.lr, estimators)
    except ValueError as exc:
        ap.error(str(exc))
    seeds = list(range(p["seeds"]))
    conds = conditions(p, lrs)
    tasks = sorted(plan(p, conds, seeds), key=lambda t: -cost(t))  # longest first
    costs = [cost(t) for t in tasks]
    estimate = makespan(costs, a.workers)
    print(f"{len(tasks)} runs, {sum(costs) / 60:.0f} worker-minutes: about {estimate / 60:.0f} min on {a.workers} "
          f"workers (at {COST['pass']} s per forward pass, {COST['eval_example']} s per held-out example, "
          f"{COST['adam_step']} s per Adam step, {COST['start']:.0f} s to start a run; longer on a loaded machine)",
          flush=True)
    for c in conds:
        print(f"  {c['estimator']}: {c['settings']}; {c['rounds']} rounds × {c['passes_per_round']} forward passes, "
              f"evaluated every {c['eval_every']} rounds")
    if a.dry_run:
        for t, c in zip(tasks, costs, strict=True):
            what = "adam" if t["kind"] == "adam" else f"{t['run_id']} {t['estimator']}"
            print(f"  {c:6.0f} s  {what}, {t['rounds']} rounds/steps, eval every {t['eval_every']}, seed {t['seed']}")
        return
    start = time.perf_counter()
    done = earlier_runs(a.out, {t["key"] for t in tasks},
                        lambda run: json.loads(run["key"]) if "key" in run else None) if a.resume else {}
    if done:
        print(f"{len(done)} run(s) already in {a.out}: not run again", flush=True)
    todo = [t for t in tasks if t["key"] not in done]
    command = command_line(a, p, estimators, lrs)

    def write() -> None:
        summary = summarize(p, conds, tasks, done)
        zero = next(({k: run["curve"][0][k] for k in ("accuracy", "macro_f1")} for run in done.values()
                     if "curve" in run), None)
        image = plot(summary, zero and zero["accuracy"], a.out.parent / f"{a.out.stem}.png", p.get("model", MODEL))
        result = {"mode": "quick" if a.quick else "full", "params": p, "seeds": len(seeds), "workers": a.workers,
                  "estimators": estimators, "lr": {e: list(v) for e, v in lrs.items()}, "shared": SHARED,
                  "peers": PEERS, "model": p.get("model", MODEL), "task": TASK, "labels": list(LABELS), "template": TEMPLATE,
                  "chat": p.get("chat", CHAT), "adam": {"lr": ADAM_LR, "batch_size": ADAM_BATCH, "steps": adam_steps(p)},
                  "test_examples": p["eval_size"], "zero_shot": zero, "estimated_seconds": round(estimate),
                  "wall_seconds": round(time.perf_counter() - start, 1), "runs_planned": len(tasks),
                  "runs_done": len(done), "complete": len(done) == len(tasks), "summary": summary, "plot": image,
                  "runs": [{**json.loads(k), **run} for k, run in done.items()]}
        save_result(result, a.out, command, sweep.machine(), quiet=True)

    a.out.parent.mkdir(parents=True, exist_ok=True)
    for n, run in enumerate(sweep.sweep(run_task, todo, a.workers), 1):
        done[run["key"]] = run
        t = json.loads(run["key"])
        res = run["error"] if "error" in run else f"{100 * run['curve'][-1]['accuracy']:.1f} %"
        print(f"[{time.perf_counter() - start:6.0f}s] {n}/{len(todo)} "
              f"{'adam' if t['kind'] == 'adam' else t['estimator']} seed {t['seed']}: {res} "
              f"({run['task_seconds']:.0f} s)", flush=True)
        write()
    if not todo:
        write()
    print(f"wrote {a.out}")
    print("\n".join(render(Results(a.out.parent, ""))))


SECTION = Section("llm_estimators", "bench.experiments.llm_estimators", render, claims=claims,
                  steps=(Step("llm_estimators", ("--out", "{out}/llm_estimators.json"),
                              ("--quick", "--workers", "1", "--out", "{out}/llm_estimators.json"), timeout_min=100),))

if __name__ == "__main__":
    main()
