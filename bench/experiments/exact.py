"""Exact projected gradients on the demo (MiniLM + VADER, 4 peers, bias tuning), side by side.

    python -m bench.experiments.exact [--cond NAME=ESTIMATOR:SCALAR:K:LR[:shared]] ... [--rounds 100]
        [--seeds 1] [--workers 2] [--eval-every 5] [--out bench/results/exact.json] [--resume]

Every condition runs through the public API (``onebyte.simulate``) on the same shards, in a pool of
single-threaded workers, so the conditions of one invocation share the machine alike. Its clock is
the simulator's ``swarm_seconds``: the slowest peer's measurement plus applying the round, what a
swarm of real machines would wait (no network). Reported per condition: the final held-out accuracy,
and the swarm seconds and rounds at which it first reached ``TARGET`` (the fzoo default's reach in
the demo's issue). ``fzoo`` at the library's settings runs beside the others as the reference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.output import RESULTS, save_result
from bench.sections import Claim, Results, Section, Step
from bench.sweep import figure, machine, simulate, sweep

TARGET = 0.872  # held-out accuracy the fzoo demo reaches at round 15 (BENCHMARKS.md, "The demo")
TARGET_FINAL = 0.925
DEFAULT_CONDS = ("fzoo=fzoo:auto:4:0.003", "grad=grad:normalised:1024:0.03:shared")


def parse_cond(text: str) -> dict:
    """NAME=ESTIMATOR:SCALAR:K:LR[:shared][:sign][:mixed] -> a condition (byte codec unless :sign;
    :mixed: peers 1 and 3 run fzoo on the first 4 of the round's K directions, 0 and 2 the estimator)."""
    name, _, rest = text.partition("=")
    parts = rest.split(":")
    if not name or len(parts) < 4 or not set(parts[4:]) <= {"shared", "sign", "mixed"}:
        raise SystemExit(f"--cond {text!r}: expected NAME=ESTIMATOR:SCALAR:K:LR[:shared][:sign][:mixed]")
    return {"name": name, "estimator": parts[0], "scalar": parts[1], "samples": int(parts[2]), "lr": float(parts[3]),
            "shared": "shared" in parts[4:], "codec": "sign" if "sign" in parts[4:] else "byte",
            "mixed": "mixed" in parts[4:]}


def cond_text(c: dict) -> str:
    """The --cond that gives ``c`` (parse_cond's inverse)."""
    return (f"{c['name']}={c['estimator']}:{c['scalar']}:{c['samples']}:{c['lr']}" + ":shared" * c["shared"]
            + ":sign" * (c.get("codec") == "sign") + ":mixed" * bool(c.get("mixed")))


def run_one(task: tuple[dict, int, dict]) -> dict:
    """One condition, one seed: its evaluation curve against rounds and swarm seconds (in a fresh,
    single-threaded worker: ``bench.sweep.sweep(..., fresh=True)``)."""
    import onebyte
    from onebyte.codec import Codec
    from onebyte.config import Directions, Estimator, Scalar, Step, TrainConfig

    cond, seed, p = task
    exact = Estimator(cond["estimator"]).exact
    train = TrainConfig(estimator=Estimator(cond["estimator"]), scalar=Scalar(cond["scalar"]),
                        samples=cond["samples"], lr=cond["lr"], horizon=p["rounds"],
                        step=Step.MEAN if exact else Step.SCALAR,
                        directions=Directions.SHARED if cond["shared"] else Directions.DISTINCT,
                        codec=Codec.parse(cond.get("codec", "byte")))
    spec = onebyte.RunSpec(model="minilm", task="vader", run_id=f"estimators-seed{seed}", train=train)
    t = time.perf_counter()
    mixed = {"estimators": (cond["estimator"], "fzoo"), "site_samples": (cond["samples"], 4)} if cond.get("mixed") \
        else {}
    run = simulate(spec, peers=4, rounds=p["rounds"], seed=seed, eval_every=p["eval_every"],
                   eval_size=p.get("eval_size"), **mixed)
    s = run["summary"]
    return {"name": cond["name"], "seed": seed, "cond": cond, "curve": run["curve"],
            "final": s["eval_after"]["accuracy"], "payload_bytes": s["payload_bytes"], "records": s["records"],
            "state_hash": s["state_hash"], "set_digest": s["set_digest"],
            "swarm_seconds": s["swarm_seconds"], "task_seconds": round(time.perf_counter() - t, 1)}


def reach(curve: list[dict], target: float = TARGET) -> dict | None:
    """The first evaluation at or above ``target``: its round and swarm seconds."""
    for pt in curve:
        if pt["accuracy"] >= target:
            return {"round": pt["round"], "swarm_seconds": pt["swarm_seconds"]}
    return None


def render_demo(r: dict | None) -> list[str]:
    if not r:
        return []
    lines = ["### On the demo, side by side with fzoo", "",
             f"`{r['command']}` ({r['date']}, {r['machine']}). MiniLM + VADER, 4 peers, iid shards, bias "
             f"tuning (26,112 scalars), {r['rounds']} rounds (cosine over them), batch 32, held-out evaluation every "
             f"{r['eval_every']} rounds on all 1,168 examples; each condition's runs in single-threaded workers "
             f"side by side. Swarm seconds: the slowest peer's measurement plus applying the round (what a "
             f"swarm of real machines would wait, no network). `grad`/`jvp` use `step = mean` (lr per record, "
             f"whatever K).", "",
             f"| condition | estimator | scalar | K | lr | directions, codec | final accuracy | reaches {TARGET:.1%}: "
             "round | swarm s | bytes per record |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in _by_name(r["runs"]).items():
        c = runs[0]["cond"]
        finals = [x["final"] for x in runs]
        hits = [reach(x["curve"]) for x in runs]
        ok = [h for h in hits if h]
        rounds = "/".join(str(h["round"]) for h in ok) if ok else "never"
        secs = "/".join(f"{h['swarm_seconds']:.1f}" for h in ok) if ok else "—"
        per_record = runs[0]["payload_bytes"] / max(runs[0]["records"], 1)
        lines.append(f"| {name} | {c['estimator']} | {c['scalar']} | {c['samples']} | {c['lr']} | "
                     f"{'shared' if c['shared'] else 'distinct'}, {c.get('codec', 'byte')}"
                     f"{', mixed: 2 grad + 2 fzoo (4 of K)' if c.get('mixed') else ''} | {_pm(finals)} | {rounds} | "
                     f"{secs} | "
                     f"{per_record:.0f} |")
    return lines + [""]


def _by_name(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for x in runs:
        out.setdefault(x["name"], []).append(x)
    return out


def _pm(values: list[float]) -> str:
    import statistics

    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{statistics.mean(values):.1%} ± {statistics.stdev(values):.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cond", action="append", help="NAME=ESTIMATOR:SCALAR:K:LR[:shared] (repeatable)")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-size", type=int, help="held-out examples, a fixed-seed sample [all]")
    ap.add_argument("--resume", action="store_true", help="keep finished (condition, seed) runs of --out")
    ap.add_argument("--out", default=str(RESULTS / "exact.json"))
    a = ap.parse_args()
    conds = [parse_cond(c) for c in (a.cond or DEFAULT_CONDS)]
    p = {"rounds": a.rounds, "eval_every": a.eval_every, **({"eval_size": a.eval_size} if a.eval_size else {})}
    done: list[dict] = []
    if a.resume and Path(a.out).exists():
        old = json.loads(Path(a.out).read_text())
        if old.get("rounds") == a.rounds:
            done = old["runs"]
    have = {(x["name"], x["seed"]) for x in done}
    tasks = [(c, s, p) for s in range(a.seeds) for c in conds if (c["name"], s) not in have]
    t = time.perf_counter()
    command = "python -m bench.experiments.exact " + " ".join(
        [f"--cond {cond_text(c)}" for c in conds]
        + [f"--rounds {a.rounds}", f"--seeds {a.seeds}", f"--eval-every {a.eval_every}"]
        + [f"--eval-size {a.eval_size}"] * bool(a.eval_size))
    for res in sweep(run_one, tasks, a.workers, fresh=True):
        done.append(res)
        print(json.dumps({k: res[k] for k in ("name", "seed", "final", "swarm_seconds")}), flush=True)
        save_result({**p, "runs": done, "wall_seconds": round(time.perf_counter() - t, 1)}, Path(a.out),
                    command, machine(), quiet=True)

#: SmolLM2 runs with grad (``python -m bench.experiments.llm --estimator grad ... --out bench/results/NAME.json``).
LLM_RUNS = ("llm_grad_alone", "llm_grad", "llm_grad_b", "llm_jvp")
#: The run the 30-minute target is judged on: alone on the machine with its 2 threads (the others ran
#: single-threaded beside other benchmarks, so their clocks ran 2-3x slow).
CLAIM_RUN = "llm_grad_alone"
LOADED = {"llm_grad": "1 thread, beside other benchmarks", "llm_grad_b": "1 thread, beside other benchmarks",
          "llm_grad_alone": "2 threads, alone", "llm_jvp": "1 thread, beside the test suite"}
BUDGET_SECONDS = 30 * 60  # the issue's: best macro-F1 within 30 minutes of this machine's time
TARGET_F1 = 0.45


def _best_within(curve: list[dict], seconds: float, key: str = "macro_f1") -> tuple[float, dict] | None:
    """The best ``key`` among evaluations made within ``seconds`` of the run's clock."""
    pts = [c for c in curve if c["seconds"] <= seconds]
    return max(((c[key], c) for c in pts), key=lambda x: x[0]) if pts else None


def render_llm(results: Results) -> list[str]:
    runs = [(n, results.get(n)) for n in LLM_RUNS]
    runs = [(n, r) for n, r in runs if r and "onebyte" in r]
    if not runs:
        return []
    fzoo, adam_all = results.get("llm_fzoo"), (results.get("llm") or {}).get("adam")
    lines = ["### SmolLM2-135M on tweets: grad against fzoo and Adam", "",
             "4 peers (the simulator runs them one after another, so a round costs all four), tune `norm` "
             "(35,136 scalars), batch 8, max length 64, chat template; held-out: the same 300 tweets for every "
             "row. Seconds are this machine's, evaluations included for onebyte (not for Adam: its training steps "
             "only). Best macro-F1 among the evaluations made within 30 minutes:", "",
             "| run | machine | K | lr | rounds | best macro-F1 ≤ 30 min (accuracy) | at s | final macro-F1 | s in all | "
             "bytes per record |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs:
        c, o = r["config"], r["onebyte"]
        best = _best_within(o["curve"], BUDGET_SECONDS)
        per_record = o["payload_bytes"] / max(1, c["peers"] * len(range(r["rounds"])))
        cell = f"{best[0]:.3f} ({best[1]['accuracy']:.3f})" if best else "—"
        lines.append(f"| {name}: {c['estimator']}, {c.get('scalar', 'auto')}, {c.get('directions', 'distinct')} | "
                     f"{LOADED.get(name, '')} | {c['samples']:,} | {c['lr']} | {r['rounds']} | {cell} | "
                     f"{best[1]['seconds']:.0f} | {o['after']['macro_f1']:.3f} | {o['seconds']:.0f} | "
                     f"{per_record:.0f} |" if best else f"| {name} | {LOADED.get(name, '')} | {c['samples']} | {c['lr']} | "
                     f"{r['rounds']} | — | — | — | — | — |")
    if fzoo and "onebyte" in fzoo:
        o = fzoo["onebyte"]
        best = max(o["curve"], key=lambda x: x["macro_f1"])
        lines.append(f"| llm_fzoo: fzoo (the earlier run) | 2 threads | {fzoo['config']['samples']} | {fzoo['config']['lr']} | "
                     f"{fzoo['rounds']} | {best['macro_f1']:.3f} ({best['accuracy']:.3f}) | {best['seconds']:.0f} | "
                     f"{o['after']['macro_f1']:.3f} | {o['seconds']:.0f} | "
                     f"{o['payload_bytes'] / max(1, 4 * fzoo['rounds']):.0f} |")
    for label, ad in (("Adam, all weights", adam_all), *[(f"Adam, {r['adam']['tune']}", r.get("adam"))
                                                         for _, r in runs if r.get("adam")]):
        if ad:
            lines.append(f"| {label} | | — | — | {ad['steps']} steps | "
                         f"{ad['after']['macro_f1']:.3f} ({ad['after']['accuracy']:.3f}) | {ad['seconds']:.0f} | "
                         f"{ad['after']['macro_f1']:.3f} | {ad['seconds']:.0f} | — |")
    zero = runs[0][1]["onebyte"]["before"]
    lines += ["", f"Zero-shot on the same tweets: accuracy {zero['accuracy']:.3f}, macro-F1 {zero['macro_f1']:.3f}.",
              ""]
    png = _plot_llm(results, runs, fzoo, adam_all)
    if png:
        lines += [f"![macro-F1 against this machine's seconds]({results.images}{png})", ""]
    return lines


def _plot_llm(results: Results, runs: list, fzoo: dict | None, adam: dict | None) -> str | None:
    """exact_llm.png: macro-F1 against seconds for every run (written beside the results)."""
    with figure(results.folder / "exact_llm.png", size=(7, 4), dpi=110) as (_, ax):
        _plot_llm_runs(ax, runs, fzoo, adam)
    return "exact_llm.png"


def _plot_llm_runs(ax, runs: list, fzoo: dict | None, adam: dict | None) -> None:
    for name, r in runs:
        o, c = r["onebyte"], r["config"]
        pts = [(0, o["before"]["macro_f1"])] + [(x["seconds"], x["macro_f1"]) for x in o["curve"]]
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"{c['estimator']} K={c['samples']} lr {c['lr']} ({name})")
    if fzoo and "onebyte" in fzoo:
        o = fzoo["onebyte"]
        pts = [(0, o["before"]["macro_f1"])] + [(x["seconds"], x["macro_f1"]) for x in o["curve"]]
        ax.plot(*zip(*pts, strict=True), marker="s", label="fzoo K=4 (llm_fzoo)")
    for _, r in runs:
        ad = r.get("adam")
        if ad and ad.get("curve"):
            zero = r["onebyte"]["before"]["macro_f1"]  # the same model and held-out tweets before any step
            ax.plot([0] + [x["seconds"] for x in ad["curve"]], [zero] + [x["macro_f1"] for x in ad["curve"]],
                    marker="^", label=f"Adam, {ad['tune']} (training seconds)")
    if adam:
        ax.scatter([adam["seconds"]], [adam["after"]["macro_f1"]], marker="*", s=120, color="k",
                   label="Adam, all weights (final, training seconds)")
    ax.axvline(BUDGET_SECONDS, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("seconds on this machine (2 cores; threads and load per run in the table)")
    ax.set_ylabel("held-out macro-F1")
    ax.legend(fontsize=7)


def render(results: Results) -> list[str]:
    from bench.experiments import codec_large_k, exact_cost

    mixed = render_demo(results.get("exact_mixed"))
    if mixed:  # a mixed swarm beside the same run with every site backpropagating
        mixed[0] = "### A mixed swarm: two sites backpropagate, two run forward passes"
    parts = render_demo(results.get("exact")) + _render_long(results.get("exact_long")) + mixed + render_llm(results)
    parts += exact_cost.render(results.get("exact_cost")) + codec_large_k.render(results.get("codec_large_k"))
    if not parts:
        return []
    return ["## Exact projected gradients (grad, jvp)", "",
            "A site that runs one backward pass projects its exact gradient onto K shared directions (README, "
            "\"How it works\"). Measured against fzoo, the forward-only default before, and Adam.", ""] + parts


def _render_long(r: dict | None) -> list[str]:
    if not r:
        return []
    done = ", ".join(sorted({x["name"] for x in r["runs"]}))
    lines = [f"The same at the demo's length (`{r['command']}`, {r['date']}; the conditions that finished: {done}):",
             "",
             "| condition | K | lr | final accuracy | macro-F1 | best accuracy (round) |", "|---|---|---|---|---|---|"]
    for x in r["runs"]:
        best = max(x["curve"], key=lambda p: p["accuracy"])
        lines.append(f"| {x['name']} | {x['cond']['samples']:,} | {x['cond']['lr']} | {x['final']:.1%} | "
                     f"{x['curve'][-1]['macro_f1']:.3f} | {best['accuracy']:.1%} ({best['round']}) |")
    return lines + [""]


def claims(results: Results) -> list[Claim]:
    out: list[Claim] = []
    r = results.get("exact")
    if r:
        by = _by_name(r["runs"])
        fz = [reach(x["curve"]) for x in by.get("fzoo", [])]
        for name, runs in by.items():
            if name == "fzoo" or not fz or not fz[0]:
                continue
            hit = reach(runs[0]["curve"])
            if hit:
                out.append((f"demo, {name}: swarm seconds to {TARGET:.1%} against fzoo's, side by side",
                            f"{hit['swarm_seconds']:.1f} s vs {fz[0]['swarm_seconds']:.1f} s", "≤ fzoo's",
                            hit["swarm_seconds"] <= fz[0]["swarm_seconds"]))
    long = results.get("exact_long")
    if long:
        for x in long["runs"]:
            out.append((f"demo, {x['name']} ({x['cond']['estimator']} K={x['cond']['samples']}): final accuracy after "
                        f"{long['rounds']} rounds (one seed)", f"{x['final']:.1%}", f"≥ {TARGET_FINAL:.1%}",
                        x["final"] >= TARGET_FINAL))
    for name in (CLAIM_RUN,) if results.get(CLAIM_RUN) else LLM_RUNS:
        x = results.get(name)
        if x and "onebyte" in x:
            best = _best_within(x["onebyte"]["curve"], BUDGET_SECONDS)
            per_record = x["onebyte"]["payload_bytes"] / max(1, x["config"]["peers"] * x["rounds"])
            out.append((f"SmolLM2 on tweets ({name}): best macro-F1 within 30 minutes", f"{best[0]:.3f}" if best
                        else "no evaluation", f"≥ {TARGET_F1}", bool(best) and best[0] >= TARGET_F1))
            out.append((f"SmolLM2 ({name}): bytes per record", f"{per_record:.0f}", "≤ 2,048", per_record <= 2048))
    c = results.get("exact_cost")
    if c:
        for what, key in (("projection", "projection_over_fwd_bwd"), ("apply of a round", "apply_over_fwd_bwd")):
            out.append((f"{c['model']} {c['tune']}, K = {c['k']:,}: {what} / forward+backward",
                        f"{c['ratios'][key]:.2f}", "≤ 1", c["ratios"][key] <= 1))
    return out


SECTION = Section("exact", "bench.experiments.exact", render, claims=claims,
                  steps=(Step("exact", ("--out", "{out}/exact.json"),
                              ("--rounds", "2", "--eval-every", "1", "--eval-size", "50", "--workers", "1",
                               "--out", "{out}/exact.json")),))


if __name__ == "__main__":
    main()
