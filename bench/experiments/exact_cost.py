"""What exact projections cost, side by side in one process: SmolLM2-135M with LoRA r=8 (or any
model and tuned set), batch 8 of tweets.

    python -m bench.experiments.exact_cost [--model smollm2] [--tune lora:r=8] [--k 1024] [--peers 4]
        [--repeat 3] [--out bench/results/exact_cost.json]

Timed (median of ``--repeat``, this machine's default threads, one after another):
  * one forward and backward pass of the batch through the tuned tensors (``estimator.gradient``);
  * the sender's projection of that gradient onto K shared directions (``PerturbationLayout.project``);
  * applying one round of ``--peers`` records of K scalars each along the same K shared directions
    (``update.apply_records``: the scalars of a direction are summed first, so this is K
    expansions whatever the number of peers), and undoing it;
  * per direction: grad's (forward + backward + projection) / K, one ``jvp``, and one forward pass
    (fzoo pays K + 1 of them for K scalars).
The issue's target: the apply and the projection each cost at most one forward-and-backward pass.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from bench.experiments.speed import median_time
from bench.output import RESULTS, save_result

TEMPLATE = "Tweet: {text}\nIs the sentiment of this tweet negative, neutral or positive?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tune", default="lora:r=8")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "exact_cost.json")
    a = ap.parse_args()
    import torch

    import onebyte
    from onebyte.config import Directions, Estimator, Scalar, Step
    from onebyte.estimator import gradient, measure_jvp
    from onebyte.training import Setup, batch_for, make_record
    from onebyte.update import apply_records

    train = onebyte.TrainConfig(tune=a.tune, samples=a.k, batch_size=a.batch_size, max_length=64,
                                estimator=Estimator.GRAD, scalar=Scalar.NORMALISED, step=Step.MEAN,
                                directions=Directions.SHARED, lr=1e-3)
    spec = onebyte.RunSpec(run_id="exact-cost", model=a.model, task="tweets", labels=("negative", "neutral", "positive"),
                           template=TEMPLATE, chat=a.model == "smollm2", train=train)
    setup = Setup.build(spec)
    state, obj, tag = setup.state, setup.objective, setup.spec.run_tag
    batch = batch_for(tag, setup.dataset.train, a.batch_size, 0, 0, 0)
    g, _ = gradient(state, obj.loss_tensor, batch)
    seeds = [int(s) for s in range(1, a.k + 1)]
    fwd_bwd = median_time(lambda: gradient(state, obj.loss_tensor, batch), a.repeat)
    project = median_time(lambda: state.layout.project(g, seeds), a.repeat)
    with torch.inference_mode():
        forward = median_time(lambda: obj.loss(batch), a.repeat)
    jvp = median_time(lambda: measure_jvp(state, setup.loaded.model, obj.loss_tensor, batch, seeds[:1], True),
                          a.repeat)
    shards = [setup.dataset.train[i::a.peers] for i in range(a.peers)]
    records = [make_record(setup, shards[p], 0, p)[0] for p in range(a.peers)]
    before = state.state_hash()
    applies, undos = [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        apply_records(state, records, train)
        applies.append(time.perf_counter() - t)
        t = time.perf_counter()
        apply_records(state, records, train, sign=-1)
        undos.append(time.perf_counter() - t)
    assert state.state_hash() == before, "undoing the round did not give the state back"
    apply = statistics.median(applies)
    result = {
        "model": a.model, "tune": a.tune, "tuned_parameters": state.numel, "k": a.k, "peers": a.peers,
        "batch_size": a.batch_size, "threads": torch.get_num_threads(),
        "seconds": {"forward_backward": fwd_bwd, "projection": project, "apply_round": apply,
                    "undo_round": statistics.median(undos), "forward": forward, "jvp_one_direction": jvp},
        "ratios": {"projection_over_fwd_bwd": project / fwd_bwd, "apply_over_fwd_bwd": apply / fwd_bwd},
        "per_direction_seconds": {"grad": (fwd_bwd + project) / a.k, "jvp": jvp, "fzoo": forward * (a.k + 1) / a.k},
    }
    print(result, flush=True)
    save_result(result, a.out, f"python -m bench.experiments.exact_cost --model {a.model} --tune {a.tune} --k {a.k} "
                f"--peers {a.peers} --batch-size {a.batch_size} --repeat {a.repeat}",
                f"{platform.machine()}, {torch.get_num_threads()} threads")


def render(r: dict | None) -> list[str]:
    if not r:
        return []
    s, q, d = r["seconds"], r["ratios"], r["per_direction_seconds"]
    return ["### What exact projections cost", "",
            f"`{r['command']}` ({r['date']}, {r['machine']}). {r['model']}, tune `{r['tune']}` "
            f"({r['tuned_parameters']:,} scalars), batch {r['batch_size']}, K = {r['k']:,} shared directions, "
            f"{r['peers']} peers; median of the repeats, one after another in one process.", "",
            "| what | seconds | / forward+backward | target |", "|---|---|---|---|",
            f"| forward + backward pass (grad's measurement) | {s['forward_backward']:.3f} | 1 | |",
            f"| sender: project onto {r['k']:,} directions | {s['projection']:.3f} | "
            f"{q['projection_over_fwd_bwd']:.2f} | ≤ 1: {'met' if q['projection_over_fwd_bwd'] <= 1 else 'missed'} |",
            f"| replica: apply a round ({r['peers']} × {r['k']:,} shared) | {s['apply_round']:.3f} | "
            f"{q['apply_over_fwd_bwd']:.2f} | ≤ 1: {'met' if q['apply_over_fwd_bwd'] <= 1 else 'missed'} |",
            f"| one forward pass | {s['forward']:.3f} | {s['forward'] / s['forward_backward']:.2f} | |", "",
            f"Per direction: grad {d['grad'] * 1e3:.2f} ms, jvp {d['jvp'] * 1e3:.0f} ms, fzoo "
            f"{d['fzoo'] * 1e3:.0f} ms (a forward pass each, plus one).", ""]


if __name__ == "__main__":
    main()
