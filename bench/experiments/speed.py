"""Speed and memory of the engine on all-MiniLM-L6-v2, as ratios measured side by side.

    python -m bench.experiments.speed [--threads 2] [--repeats 7] [--quick] [--out bench/out/speed.json]

Measures, in one process and one run (medians of --repeats):
  * time per projected gradient / time of two plain forward passes (batch 16 x 32 tokens),
    with MeZO-style in-place ``normal_`` perturbation measured beside it;
  * Rademacher generation for every tuned parameter vs ``torch.normal_`` of the same size;
  * applying 64 and 512 records in one batch vs one at a time (our generator), vs one at a time
    with a fresh ``normal_`` perturbation each (MeZO-style replay), and with shared directions;
  * replay cost of one round as the swarm grows: P peers x K = 4 gradients applied at once
    (``bench_replay``, stored as ``scaling``);
and, in fresh subprocesses, peak RSS of training vs inference vs first-order Adam.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.baselines import mezo
from bench.experiments.memory import _status
from bench.output import REPO
from bench.sections import Claim, Results, Section, Step, verdict
from onebyte.codec import Codec
from onebyte.config import Directions, TrainConfig
from onebyte.estimator import projected_gradient
from onebyte.models import load_model
from onebyte.params import TuneSpec, select_parameters
from onebyte.record import build_record
from onebyte.state import FixedPointState
from onebyte.update import apply_records

RUN = b"bench-run-tag-16"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_batch(tok, n=16, length=32):
    texts = [f"sample sentence number {i} about a factory line and its sensors" * 3 for i in range(n)]
    return tok(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")


def encoder_loss(model, batch):
    with torch.inference_mode():
        h = model(**batch).last_hidden_state
        return float(h.mean(1).pow(2).mean())


def bench_compute(repeats: int, quick: bool = False) -> dict:
    loaded = load_model("minilm")
    model, tok = loaded.model, loaded.tokenizer
    batch = make_batch(tok)
    params = [p for _, p in sorted(model.named_parameters())]
    n_params = sum(p.numel() for p in params)
    loss = lambda _=None: encoder_loss(model, batch)  # noqa: E731
    out: dict = {"parameters": n_params, "batch": list(batch["input_ids"].shape)}

    # MeZO baseline first (on the plain model), then the same model under our state.
    out["mezo_step_s"] = median_time(lambda: mezo.projected_gradient(params, 1, 1e-3, loss), repeats)
    state = FixedPointState(select_parameters(model, TuneSpec.parse("all")))
    out["forward_s"] = median_time(loss, repeats)
    seeds = iter(range(10_000))
    out["projected_gradient_s"] = median_time(
        lambda: projected_gradient(state, loss, None, next(seeds), 1e-3), repeats)
    out["ratio_pg_to_two_forwards"] = out["projected_gradient_s"] / (2 * out["forward_s"])
    out["ratio_mezo_to_two_forwards"] = out["mezo_step_s"] / (2 * out["forward_s"])

    size = state.layout.size
    buf = torch.empty(size)
    out["normal_s"] = median_time(lambda: buf.normal_(), repeats)
    out["rademacher_int8_s"] = median_time(lambda: state.layout.rademacher(next(seeds)), repeats)
    zbuf = torch.empty(size)
    out["rademacher_float_s"] = median_time(
        lambda: state.layout.rademacher(next(seeds), torch.float32, out=zbuf), repeats)
    out["speedup_rademacher_vs_normal"] = out["normal_s"] / out["rademacher_int8_s"]
    out["speedup_rademacher_float_vs_normal"] = out["normal_s"] / out["rademacher_float_s"]

    train = TrainConfig(codec=Codec.BYTE, lr=1e-6, samples=1)
    rng = np.random.default_rng(0)

    def records(n, count=1, round_=0):
        return [build_record(Codec.BYTE, RUN, round_, p, 0, rng.normal(size=count), p) for p in range(n)]

    batch64 = records(64)
    r = 1 if quick else max(3, repeats // 2)  # quick: each replay timed once
    out["apply64_batched_s"] = median_time(lambda: apply_records(state, batch64, train), r)

    def one_at_a_time():
        for rec in batch64:
            apply_records(state, [rec], train)
    out["apply64_one_at_a_time_s"] = median_time(one_at_a_time, r)

    def mezo_replay(batch=batch64):
        for i, rec in enumerate(batch):
            mezo.update(params, i, 1e-6, float(rec.gradients()[0]))
    out["apply64_mezo_normal_s"] = median_time(mezo_replay, r)
    shared = TrainConfig(codec=Codec.BYTE, lr=1e-6, samples=4, directions=Directions.SHARED)
    batch64_shared = records(64, count=4)
    out["apply64x4_shared_directions_s"] = median_time(lambda: apply_records(state, batch64_shared, shared), r)
    batch512 = records(512)
    out["apply512_batched_s"] = median_time(lambda: apply_records(state, batch512, train), 1)
    if not quick:  # ~30 s: 512 fresh normal_ perturbations of 22.7M values, timed once
        t = time.perf_counter()
        mezo_replay(batch512)
        out["apply512_mezo_normal_s"] = time.perf_counter() - t
        out["speedup_apply512_vs_mezo_normal"] = out["apply512_mezo_normal_s"] / out["apply512_batched_s"]
    out["speedup_apply64_vs_one_at_a_time"] = out["apply64_one_at_a_time_s"] / out["apply64_batched_s"]
    out["speedup_apply64_vs_mezo_normal"] = out["apply64_mezo_normal_s"] / out["apply64_batched_s"]
    out["speedup_shared_256_gradients_vs_one_at_a_time_64"] = (
        4 * out["apply64_one_at_a_time_s"] / out["apply64x4_shared_directions_s"])
    out["records_per_s_batched_64"] = 64 / out["apply64_batched_s"]
    out["records_per_s_batched_512"] = 512 / out["apply512_batched_s"]
    return out


def bench_replay(quick: bool) -> list[dict]:
    """Replay cost of one round as the swarm grows: P peers x K=4 gradients each, applied at once.

    Synthetic records (replay cost does not depend on the values), the demo's bias tuning and
    all weights, distinct directions (the paper's method) and shared ones (``--directions shared``).
    """
    rows = []
    rng = np.random.default_rng(1)
    for tune in ("bias", "all"):
        state = FixedPointState(select_parameters(load_model("minilm").model, TuneSpec.parse(tune)))
        for directions in (Directions.DISTINCT, Directions.SHARED):
            train = TrainConfig(codec=Codec.BYTE, lr=1e-6, samples=4, directions=directions)
            for peers in ((8,) if quick and tune == "all" else (8, 64, 512)):
                recs = [build_record(Codec.BYTE, RUN, 0, p, 0, rng.normal(size=4), p) for p in range(peers)]
                t = time.perf_counter()
                apply_records(state, recs, train)
                secs = time.perf_counter() - t
                rows.append({"tune": tune, "parameters": state.numel, "directions": directions.value,
                             "peers": peers, "records": peers, "gradients": 4 * peers, "seconds": secs,
                             "records_per_s": peers / secs, "gradients_per_s": 4 * peers / secs})
    return rows


def memory_child(mode: str, steps: int) -> None:
    """Run in a fresh process; print (RSS after loading, peak RSS) in MiB after ``steps`` of ``mode``.

    Peak RSS is the kernel's high-water mark (VmHWM), which, unlike ru_maxrss, is not inherited
    from the parent process."""
    loaded = load_model("minilm")
    model, tok = loaded.model, loaded.tokenizer
    batch = make_batch(tok)
    loss = lambda _=None: encoder_loss(model, batch)  # noqa: E731
    loaded_rss = _status()["VmRSS"]
    if mode == "inference":
        for _ in range(steps):
            loss()
    elif mode == "train":
        state = FixedPointState(select_parameters(model, TuneSpec.parse("all")))
        train = TrainConfig(codec=Codec.BYTE, lr=1e-6, samples=1)
        for s in range(steps):
            g, _, _ = projected_gradient(state, loss, None, s, 1e-3)
            apply_records(state, [build_record(Codec.BYTE, RUN, s, 0, 0, np.array([g]), s)], train)
    elif mode == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)
        model.train()
        for _ in range(steps):
            opt.zero_grad()
            h = model(**batch).last_hidden_state
            h.mean(1).pow(2).mean().backward()
            opt.step()
    print(loaded_rss, _status()["VmHWM"])


def bench_memory(threads: int) -> dict:
    out = {}
    for mode in ("inference", "train", "adam"):
        cmd = [sys.executable, "-m", "bench.experiments.speed", "--memory-child", mode, "--threads", str(threads)]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=600)
        loaded_rss, peak = map(float, res.stdout.strip().splitlines()[-1].split())
        out[f"peak_rss_{mode}_mib"] = peak
        out[f"rss_after_load_{mode}_mib"] = loaded_rss
    out["ratio_train_to_inference"] = out["peak_rss_train_mib"] / out["peak_rss_inference_mib"]
    out["ratio_adam_to_inference"] = out["peak_rss_adam_mib"] / out["peak_rss_inference_mib"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--memory-child", choices=["inference", "train", "adam"])
    ap.add_argument("--quick", action="store_true", help="each replay timed once, no 512-record MeZO replay")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.memory_child:
        memory_child(a.memory_child, steps=5)
        return
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": f"python -m bench.experiments.speed --threads {a.threads} --repeats {a.repeats}"
                         + (" --quick" if a.quick else "")}
    result.update(bench_compute(a.repeats, a.quick))
    result["scaling"] = bench_replay(a.quick)
    result.update(bench_memory(a.threads))
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


# --------------------------------------------------------------------------------------------
# BENCHMARKS.md
# --------------------------------------------------------------------------------------------


def render(results: Results) -> list[str]:
    """The engine speed and memory section of BENCHMARKS.md."""
    r = results.get("speed_cpu")
    if not r:
        return []
    ms = lambda s: f"{1000 * s:.1f} ms"  # noqa: E731
    rows = [
        ("time per projected gradient / two forward passes",
         f"{ms(r['projected_gradient_s'])} / 2 × {ms(r['forward_s'])} = **{r['ratio_pg_to_two_forwards']:.2f}**",
         "≤ 1.25", verdict(r["ratio_pg_to_two_forwards"] <= 1.25)),
        ("MeZO-style step (in-place `normal_`) / two forward passes, beside it",
         f"{ms(r['mezo_step_s'])} → {r['ratio_mezo_to_two_forwards']:.2f}", "baseline", ""),
        ("Rademacher perturbation for all parameters vs `torch.normal_`",
         f"{ms(r['rademacher_int8_s'])} (int8), {ms(r['rademacher_float_s'])} (float32) vs {ms(r['normal_s'])}"
         f" → **{r['speedup_rademacher_vs_normal']:.1f}×** / {r['speedup_rademacher_float_vs_normal']:.1f}×",
         "≥ 4×", verdict(r["speedup_rademacher_vs_normal"] >= 4)),
        ("apply 64 records batched vs one at a time, fresh `normal_` perturbation each (MeZO-style replay)",
         f"{ms(r['apply64_batched_s'])} vs {ms(r['apply64_mezo_normal_s'])} → **{r['speedup_apply64_vs_mezo_normal']:.1f}×**",
         "≥ 5×", verdict(r["speedup_apply64_vs_mezo_normal"] >= 5)),
        ("apply 64 records batched vs one at a time with our generator (view refreshed per record)",
         f"{ms(r['apply64_batched_s'])} vs {ms(r['apply64_one_at_a_time_s'])} → "
         f"{r['speedup_apply64_vs_one_at_a_time']:.1f}×", "(not a target)", ""),
        ("apply 64 records × 4 gradients on shared directions vs 256 gradients one at a time",
         f"{ms(r['apply64x4_shared_directions_s'])} → {r['speedup_shared_256_gradients_vs_one_at_a_time_64']:.0f}×",
         "(not a target)", ""),
        ("records applied per second, batches of 64 / 512 (1 gradient each, distinct directions)",
         f"{r['records_per_s_batched_64']:.0f} / {r['records_per_s_batched_512']:.0f}", "", ""),
        *([("apply 512 records batched vs one at a time, fresh `normal_` each (MeZO-style replay)",
            f"{ms(r['apply512_batched_s'])} vs {ms(r['apply512_mezo_normal_s'])} → "
            f"**{r['speedup_apply512_vs_mezo_normal']:.1f}×**", "≥ 5×",
            verdict(r["speedup_apply512_vs_mezo_normal"] >= 5))] if "apply512_mezo_normal_s" in r else []),
        ("peak RSS training / inference (first-order Adam beside it)",
         f"{r['peak_rss_train_mib']:.0f} / {r['peak_rss_inference_mib']:.0f} MiB = **{r['ratio_train_to_inference']:.2f}**"
         f" (Adam: {r['peak_rss_adam_mib']:.0f} MiB = {r['ratio_adam_to_inference']:.2f})",
         "≤ 1.5", verdict(r["ratio_train_to_inference"] <= 1.5)),
    ]
    out = [
        "## Engine speed and memory (all-MiniLM-L6-v2, all 22.7M parameters tuned)",
        "",
        f"Measured {r['date']} on {r['machine']}; batch {r['batch'][0]}×{r['batch'][1]} tokens. "
        f"Reproduce with `{r['command']}` then `python -m bench.report`. Every ratio compares two "
        "things timed in the same process, one after the other (medians).",
        "",
        "| measurement | result | target | |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out += [
        "",
        "Replay cost per record is dominated by expanding a direction over 22.7M parameters "
        "(~5 ms: NumPy's C Philox, then a byte-to-signs table gather), so batching distinct "
        "directions saves only the per-record view refresh (about 2×). What scales is sharing "
        "directions (`--directions shared`): records that share a direction add their codes first "
        "and the direction is expanded once.",
        "",
    ]
    return out + _replay_lines(r)


def _replay_lines(r: dict) -> list[str]:
    """Replay cost as the swarm grows (``bench_replay``)."""
    if not r.get("scaling"):
        return []
    out: list[str] = []
    pg4 = 4 * r["projected_gradient_s"]
    out += ["### Replay cost as the swarm grows", "",
            "One round of P peers × K = 4 gradients applied at once (synthetic records: replay cost does not "
            "depend on the values), timed once each. For scale: one peer measures its 4 gradients of a round in "
            f"about {pg4:.2f} s (4 × the projected-gradient time above, all weights, batch 16×32).", "",
            "| tuned | directions | peers | gradients | replay s | records / s | gradients / s | replay / own "
            "measuring |", "|---|---|---|---|---|---|---|---|"]
    for x in r["scaling"]:
        out.append(f"| {x['tune']} ({x['parameters']:,}) | {x['directions']} | {x['peers']} | {x['gradients']:,} | "
                   f"{x['seconds']:.3f} | {x['records_per_s']:,.0f} | {x['gradients_per_s']:,.0f} | "
                   f"{x['seconds'] / pg4:.2f} |")
    out += ["", "With distinct directions replay grows linearly with the swarm: every gradient is its own "
            "direction to expand (for all 22.7M weights ~5 ms each, so a few dozen peers already cost more "
            "replay than measuring; with the demo's 26k biases the per-record Python work dominates). With "
            "shared directions a round costs K expansions whatever the number of peers.", ""]
    return out


def claims(results: Results) -> list[Claim]:
    sp = results.get("speed_cpu")
    if not sp:
        return []
    rows: list[Claim] = []
    rows += [("projected gradient / two forward passes", f"{sp['ratio_pg_to_two_forwards']:.2f}", "≤ 1.25",
              sp["ratio_pg_to_two_forwards"] <= 1.25),
             ("perturbation generation vs `normal_`", f"{sp['speedup_rademacher_vs_normal']:.1f}×", "≥ 4×",
              sp["speedup_rademacher_vs_normal"] >= 4),
             ("apply 64 records vs one at a time (MeZO-style)", f"{sp['speedup_apply64_vs_mezo_normal']:.1f}×",
              "≥ 5×", sp["speedup_apply64_vs_mezo_normal"] >= 5)]
    if "speedup_apply512_vs_mezo_normal" in sp:
        rows.append(("apply 512 records vs one at a time (MeZO-style)",
                     f"{sp['speedup_apply512_vs_mezo_normal']:.1f}×", "≥ 5×",
                     sp["speedup_apply512_vs_mezo_normal"] >= 5))
    rows.append(("apply 64 records vs one at a time (our generator)", f"{sp['speedup_apply64_vs_one_at_a_time']:.1f}×",
                 "≥ 5×", sp["speedup_apply64_vs_one_at_a_time"] >= 5))
    rows.append(("peak memory training / inference", f"{sp['ratio_train_to_inference']:.2f}", "≤ 1.5",
                 sp["ratio_train_to_inference"] <= 1.5))
    return rows


SECTION = Section(
    "speed", "bench.experiments.speed", render, claims=claims,
    steps=(Step("speed", ("--out", "{out}/speed_cpu.json"),
                ("--quick", "--repeats", "1", "--threads", "1", "--out", "{out}/speed_cpu.json")),),
)

if __name__ == "__main__":
    main()
