"""Memory and time of training against inference on a real causal LM: SmolLM2-135M-Instruct on tweets.

    python -m bench.experiments.memory [--rounds 3] [--repeats 7] [--threads 1] [--batch-size 8]
        [--out bench/results/memory.json]

The run is bench/experiments/llm.py's (same run id, prompt, labels; CausalClassifier objective, chat
template, batch 8, max length 64) with the two-point ``spsa`` estimator, K = 2 projected gradients per
record, measured three ways:

* **Peak memory.** Each configuration runs in a fresh subprocess, which reports its RSS after each
  phase and its peak (the kernel's high-water mark VmHWM; unlike ``ru_maxrss`` it is not inherited
  from the parent): (a) inference: the model loaded as ``Setup.build`` loads it, the objective's
  loss on the batches under ``torch.inference_mode``; (b) onebyte training with every weight tuned
  (``tune = "all"``): ``Setup.build`` then ``make_record`` + ``update.apply_records`` per round;
  (c) the same with LoRA (``lora:r=8``). Every child loads the same model in the same dtype the same
  way (``load_model``) and runs one warm-up round (2K loss calls, or one record) and ``--rounds``
  measured rounds on the same fixed batches; each imports what its path needs (only the LoRA child
  imports peft, inside ``Setup.build``). Reported: the process's peak (setup
  included) and the *steady-state* peak, i.e. the high-water mark over the measured rounds alone,
  reset after the warm-up by writing 5 to ``/proc/self/clear_refs``. Targets: (b)/(a) <= 1.3 and
  (c)/(a) <= 1.1 (process peaks).
* **Time.** In this process, for ``all``, ``lora:r=8`` and ``norm``: one projected gradient
  (``estimator.projected_gradient``: perturb, forward, perturb, forward, restore) against two
  plain calls of the same model's loss on the same batch, interleaved (alternating which goes
  first), medians of ``--repeats``; beside them the perturbation and the restore alone.
  Target: at most 1.15x.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.output import REPO, RESULTS, save_result
from bench.sections import Claim, Results, Section, Step, verdict

#: The configurations whose peak memory is measured, each in a fresh process. ``all/wide`` is
#: ``all`` with ``ONEBYTE_STATE=wide`` (int32 accumulators, the state before ``compact``).
MEMORY_MODES = ("inference", "all", "all/wide", "lora:r=8")
#: The tune settings whose projected gradient is timed.
TIME_TUNES = ("all", "all/wide", "lora:r=8", "norm")
#: Records applied at once when timing replay: one 4-peer round at K = 2.
REPLAY_RECORDS = 4
TARGET_ALL = 1.3
TARGET_LORA = 1.1
TARGET_TIME = 1.15
#: bench/experiments/llm.py's configuration (its defaults).
CONFIG = {"model": "smollm2", "task": "tweets", "lr": 7e-5, "eps": 1e-3, "samples": 2, "batch_size": 8,
          "max_length": 64, "chat": True}
LABELS = ("negative", "neutral", "positive")
#: ``--batch-size`` of the quick run (a smoke test of every path: its figures are not quoted).
QUICK_BATCH = 2
_TAG = "MEMORY-CHILD "


def _spec(tune: str, batch_size: int = CONFIG["batch_size"]):
    """The run as bench/experiments/llm.py builds it (same run id, prompt and labels), estimator spsa."""
    import onebyte
    from bench.experiments.llm import TEMPLATE

    c = {**CONFIG, "batch_size": batch_size}
    train = onebyte.TrainConfig.for_estimator("spsa", tune=tune, lr=c["lr"], eps=c["eps"], samples=c["samples"],
                                              batch_size=c["batch_size"], max_length=c["max_length"])
    return onebyte.RunSpec(run_id="llm-bench", model=c["model"], task=c["task"], labels=LABELS, template=TEMPLATE,
                           chat=c["chat"], train=train)


def _status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _batches(dataset, count: int, size: int) -> list:
    """``count`` fixed batches of the training split (the same in every child)."""
    import numpy as np

    rng = np.random.default_rng(20240610)
    return [[dataset.train[i] for i in rng.choice(len(dataset.train), size=size, replace=False)] for _ in range(count)]


def memory_child(mode: str, rounds: int, batch_size: int = CONFIG["batch_size"]) -> dict:
    """One configuration in this (fresh) process: its RSS after each phase and its peaks, in MiB."""
    import torch

    from onebyte.models import load_model
    from onebyte.tasks.data import load_dataset
    from onebyte.tasks.objectives import build_objective
    from onebyte.training import Setup, make_record
    from onebyte.update import apply_records

    phases = {"imported": _status()}
    spec = _spec("norm" if mode == "inference" else _storage(mode), batch_size)
    loaded = load_model(spec.model)
    phases["loaded"] = _status()
    if mode == "inference":  # what Setup.build does, less the base hash and the fixed-point state
        dataset = load_dataset(spec.task, label_names=list(spec.labels), need_labels=True, eval_file=spec.eval_file,
                               text_column=spec.text_column, label_column=spec.label_column,
                               template=spec.template)
        obj = build_objective(loaded, dataset, spec.objective, spec.train.max_length, chat=spec.chat)
        state = None
    else:
        setup = Setup.build(spec, model=loaded)
        dataset, obj, state = setup.dataset, setup.objective, setup.state
    phases["built"] = _status()
    batches = _batches(dataset, rounds + 1, spec.train.batch_size)

    def one_round(r: int) -> None:
        if state is None:
            with torch.inference_mode():
                for _ in range(2 * spec.train.samples):
                    obj.loss(batches[r])
        else:  # a shard of exactly one batch: every sample of the record draws these 8 examples
            record, _ = make_record(setup, batches[r], r, 0)
            apply_records(state, [record], setup.train)

    t = time.perf_counter()
    one_round(0)
    phases["warm"] = _status()
    warm_s = time.perf_counter() - t
    setup_peak = phases["warm"]["VmHWM"]
    reset = _reset_peak()
    for r in range(1, rounds + 1):
        one_round(r)
    phases["measured"] = _status()
    steady = phases["measured"]["VmHWM"] if reset else None
    out = {"mode": mode, "phases": phases, "peak_mib": max(setup_peak, phases["measured"]["VmHWM"]),
           "steady_peak_mib": steady, "warm_round_s": round(warm_s, 2), "rounds": rounds,
           "dtype": str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
           "model_parameters": sum(p.numel() for p in loaded.model.parameters())}
    if state is not None:
        exact = state.acc if state.acc is not None else state.rem  # int32 accumulators or int8 remainders
        out.update(tuned_parameters=state.numel, state_kind=type(state).__name__,
                   accumulator_mib=round(exact.numel() * exact.element_size() / 2**20, 1),
                   accumulator_dtype=str(exact.dtype).replace("torch.", ""),
                   view_mib=round(state.view.numel() * state.view.element_size() / 2**20, 1))
    return out


def bench_memory(rounds: int, threads: int, batch_size: int = CONFIG["batch_size"]) -> dict:
    rows = []
    for mode in MEMORY_MODES:
        cmd = [sys.executable, "-m", "bench.experiments.memory", "--child", mode, "--rounds", str(rounds),
               "--threads", str(threads), "--batch-size", str(batch_size)]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
        if res.returncode:
            raise RuntimeError(f"memory child {mode} failed:\n{res.stderr[-3000:]}")
        line = next(x for x in reversed(res.stdout.splitlines()) if x.startswith(_TAG))
        rows.append(json.loads(line[len(_TAG):]))
        print(f"memory {mode}: peak {rows[-1]['peak_mib']:.0f} MiB", flush=True)
    base = rows[0]
    for row in rows:
        row["peak_ratio"] = round(row["peak_mib"] / base["peak_mib"], 3)
        if row["steady_peak_mib"] is not None and base["steady_peak_mib"] is not None:
            row["steady_ratio"] = round(row["steady_peak_mib"] / base["steady_peak_mib"], 3)
    return {"rows": rows}


def _storage(mode: str) -> str:
    """``tune/storage`` -> tune, with ``ONEBYTE_STATE`` set to the storage for this process."""
    import os

    tune, _, storage = mode.partition("/")
    os.environ["ONEBYTE_STATE"] = storage or "auto"
    return tune


def _interleaved(first, second, repeats: int) -> tuple[list[float], list[float]]:
    """Times of two callables, interleaved, alternating which runs first."""
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        for fn, times in ((first, a), (second, b)) if i % 2 == 0 else ((second, b), (first, a)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return a, b


def time_tune(tune: str, repeats: int, batch_size: int = CONFIG["batch_size"]) -> dict:
    """One projected gradient against two plain forward passes, for one tune setting."""
    import torch

    from onebyte.estimator import projected_gradient
    from onebyte.models import load_model
    from onebyte.record import build_record
    from onebyte.seeds import direction_seeds
    from onebyte.training import Setup
    from onebyte.update import apply_records

    setup = Setup.build(_spec(_storage(tune), batch_size), model=load_model(CONFIG["model"]))
    state, loss, eps = setup.state, setup.objective.loss, setup.train.eps
    batch = _batches(setup.dataset, 1, setup.train.batch_size)[0]
    seeds = iter(direction_seeds(setup.spec.run_tag, False, 0, 0, 0, 4 * repeats + 4))

    def plain():
        loss(batch)
        loss(batch)

    def pg():
        with torch.inference_mode():  # as estimator.measure calls it
            projected_gradient(state, loss, batch, next(seeds), eps)

    def perturb():
        state.perturb(next(seeds), eps)

    plain()
    pg()  # warm-up
    fwd, grad = _interleaved(plain, pg, repeats)
    perturb_t, refresh_t = _interleaved(perturb, state.refresh, repeats)
    state.refresh()
    k = setup.train.samples
    recs = [build_record(setup.train.codec, setup.spec.run_tag, 0, p, 0, [0.5] * k, p)
            for p in range(REPLAY_RECORDS)]
    replay_t = []
    for _ in range(max(3, repeats // 2) if repeats > 1 else 1):  # apply, timed, then undo exactly (sign -1)
        t = time.perf_counter()
        apply_records(state, recs, setup.train)
        replay_t.append(time.perf_counter() - t)
        apply_records(state, recs, setup.train, sign=-1)
    med = statistics.median
    return {"tune": tune, "state": type(state).__name__, "tuned_parameters": state.numel,
            "replay_s": round(med(replay_t), 4), "replay_records": REPLAY_RECORDS, "replay_gradients": REPLAY_RECORDS * k, "two_forwards_s": round(med(fwd), 4),
            "projected_gradient_s": round(med(grad), 4), "ratio": round(med(grad) / med(fwd), 3),
            "median_pair_ratio": round(med(g / f for f, g in zip(fwd, grad, strict=True)), 3),
            "perturb_s": round(med(perturb_t), 4), "refresh_s": round(med(refresh_t), 4),
            "overhead_s": round(med(grad) - med(fwd), 4)}


def bench_time(repeats: int, batch_size: int = CONFIG["batch_size"]) -> dict:
    rows = []
    for tune in TIME_TUNES:
        rows.append(time_tune(tune, repeats, batch_size))
        print(f"time {tune}: {rows[-1]}", flush=True)
        gc.collect()
    return {"rows": rows, "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per memory child (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per tune setting (medians)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (in this process and the children)")
    ap.add_argument("--batch-size", type=int, default=CONFIG["batch_size"],
                    help=f"examples per batch (llm.py's {CONFIG['batch_size']}; the quick run's {QUICK_BATCH})")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    if a.child:
        print(_TAG + json.dumps(memory_child(a.child, a.rounds, a.batch_size)), flush=True)
        return
    result = {"config": {**CONFIG, "batch_size": a.batch_size}, "threads": a.threads, "torch": torch.__version__,
              "targets": {"all_over_inference": TARGET_ALL, "lora_over_inference": TARGET_LORA,
                          "projected_gradient_over_two_forwards": TARGET_TIME},
              "memory": bench_memory(a.rounds, a.threads, a.batch_size), "time": bench_time(a.repeats, a.batch_size)}
    batch = "" if a.batch_size == CONFIG["batch_size"] else f" --batch-size {a.batch_size}"
    save_result(result, a.out, f"python -m bench.experiments.memory --rounds {a.rounds} --repeats {a.repeats} "
                f"--threads {a.threads}{batch}", f"2-core CPU, no GPU, {a.threads} torch thread{'s' if a.threads > 1 else ''}")


# --------------------------------------------------------------------------------------------
# BENCHMARKS.md
# --------------------------------------------------------------------------------------------

_LABEL = {"inference": "(a) inference", "all": "(b) onebyte, all weights", "all/wide": "(b′) all weights, int32 state",
          "lora:r=8": "(c) onebyte, LoRA r=8"}
_TARGET = {"all": TARGET_ALL, "lora:r=8": TARGET_LORA}


def render(results: Results) -> list[str]:
    r = results.get("memory")
    if not r:
        return []
    c = r["config"]
    rows = r["memory"]["rows"]
    out = [f"## Memory and time: training against inference ({c['model']} on {c['task']})", "",
           f"`{r['command']}` ({r['date']}, {r['machine']}). The LLM benchmark's run (prompt, labels): batch "
           f"{c['batch_size']}, max length {c['max_length']}, chat template, estimator spsa, K = {c['samples']}; model in "
           f"{rows[0]['dtype']}. Each configuration runs in a fresh process (the same model load, one "
           "warm-up round, then the measured rounds on the same batches); peak = the process's VmHWM, setup "
           "included; steady = the high-water mark over the measured rounds alone (reset after the warm-up).", "",
           "| configuration | tuned scalars | RSS after load (MiB) | peak (MiB) | peak / (a) | steady peak (MiB) | "
           "steady / (a) | target | |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        target = _TARGET.get(row["mode"])
        steady = f"{row['steady_peak_mib']:.0f}" if row.get("steady_peak_mib") is not None else "—"
        tuned = f"{row['tuned_parameters']:,}" if "tuned_parameters" in row else "—"
        out.append(f"| {_LABEL.get(row['mode'], row['mode'])} | {tuned} | "
                   f"{row['phases']['loaded']['VmRSS']:.0f} | {row['peak_mib']:.0f} | **{row['peak_ratio']:.2f}** | "
                   f"{steady} | {row.get('steady_ratio', float('nan')):.2f} | "
                   f"{f'≤ {target}' if target else '—'} | {verdict(row['peak_ratio'] <= target) if target else ''} |")
    end = {row["mode"]: row["phases"]["measured"] for row in rows}
    out += ["", "Resident after the measured rounds: " + "; ".join(
        f"{_LABEL.get(m, m)} {ph['RssAnon']:.0f} MiB anonymous + {ph['RssFile']:.0f} MiB file-backed" for m, ph in end.items())
        + " (the base weights are a memory map of the safetensors cache until the state copies them)."]
    for row in rows:
        if "accumulator_mib" in row:
            built = row["phases"]["built"]
            what = ("int8 remainders" if row.get("accumulator_dtype") == "int8" else "int32 accumulators")
            out.append(f"{_LABEL.get(row['mode'], row['mode'])} ({row.get('state_kind', 'FixedPointState')}): "
                       f"{what} {row['accumulator_mib']:.0f} MiB "
                       f"plus the {row['dtype']} view {row['view_mib']:.0f} MiB (the model's {row['model_parameters']:,} "
                       f"weights are {row['model_parameters'] * 4 / 2**20:.0f} MiB in float32); RSS after "
                       f"`Setup.build` {built['VmRSS']:.0f} MiB, high-water mark by then {built['VmHWM']:.0f} MiB.")
    out += ["", f"Time of one projected gradient (perturb, forward, perturb, forward, restore) against two plain "
            f"forward passes of the same model on the same batch, interleaved, medians of {r['time']['repeats']}; "
            "ratio = median over median; perturb and restore timed alone beside them:", "",
            "| tune | state | tuned scalars | two forwards (s) | projected gradient (s) | ratio | median of pair ratios | "
            "perturb (s) | restore (s) | replay (s) | target | |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["time"]["rows"]:
        out.append(f"| `{row['tune']}` | {row.get('state', '—')} | {row['tuned_parameters']:,} | {row['two_forwards_s']:.3f} | "
                   f"{row['projected_gradient_s']:.3f} | **{row['ratio']:.2f}** | {row['median_pair_ratio']:.2f} | {row['perturb_s']:.3f} | "
                   f"{row['refresh_s']:.3f} | {row.get('replay_s', float('nan')):.3f} | ≤ {TARGET_TIME} | "
                   f"{verdict(row['ratio'] <= TARGET_TIME)} |")
    rec = next((row for row in r["time"]["rows"] if "replay_records" in row), None)
    if rec:
        out += ["", f"Replay = applying {rec['replay_records']} records ({rec['replay_gradients']} gradients, one 4-peer "
                "round) to the state. The compact state (`all`, the default for large float32 tuned sets on CPU) "
                "holds the float32 view plus an int8 remainder instead of int32 accumulators beside the view; it "
                "perturbs through forward hooks, so its perturb is only bookkeeping and the direction is expanded "
                "inside each module's forward (counted in the projected gradient), and its restore is free."]
    return out + [""]


def claims(results: Results) -> list[Claim]:
    r = results.get("memory")
    if not r:
        return []
    c = r["config"]
    out: list[Claim] = []
    for row in r["memory"]["rows"]:
        if row["mode"] in _TARGET:
            target = _TARGET[row["mode"]]
            out.append((f"{c['model']}: peak memory of training `{row['mode']}` / inference", f"{row['peak_ratio']:.2f}",
                        f"≤ {target}", row["peak_ratio"] <= target))
    for row in r["time"]["rows"]:
        out.append((f"{c['model']}: projected gradient / two forward passes, `{row['tune']}`", f"{row['ratio']:.2f}",
                    f"≤ {TARGET_TIME}", row["ratio"] <= TARGET_TIME))
    return out


SECTION = Section("memory", "bench.experiments.memory", render,
                  steps=(Step("memory", ("--out", "{out}/memory.json"),
                              ("--rounds", "1", "--repeats", "1", "--batch-size", str(QUICK_BATCH),
                               "--out", "{out}/memory.json")),),
                  claims=claims)


if __name__ == "__main__":
    main()
