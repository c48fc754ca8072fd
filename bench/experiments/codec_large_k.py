"""The byte codec at large K: one exponent per record against float32, on real exact projections.

    python -m bench.experiments.codec_large_k [--batches 8] [--out bench/results/codec_large_k.json]

MiniLM + VADER with ``grad`` (bias tuning): for each of ``--batches`` batches, the exact gradient's
projections onto K = 4, 1,024 and 4,096 shared directions, as derivative scalars and as
normalised ones, are encoded with the byte codec (one exponent byte per record, one int8 code per
scalar, stochastic rounding) and decoded. Reported: the relative L2 error of the decoded scalars
against the float64 ones (float32, four bytes a scalar, is exact to 1e-7), and the share of
scalars the byte codec sends as 0. The question: does one exponent per record stay fine when
thousands of scalars span a wide range, or are per-chunk exponents needed?
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from bench.output import RESULTS, save_result

KS = (4, 1024, 4096)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS / "codec_large_k.json")
    a = ap.parse_args()
    import numpy as np

    import onebyte
    from onebyte.codec import Codec, decode, encode
    from onebyte.config import Estimator
    from onebyte.estimator import gradient, scaled
    from onebyte.seeds import direction_seeds
    from onebyte.training import Setup, batch_for

    setup = Setup.build(onebyte.RunSpec(model="minilm", task="vader", train=onebyte.TrainConfig(estimator=Estimator.GRAD)))
    tag = setup.spec.run_tag
    rows = []
    for k in KS:
        for normalised in (False, True):
            errs, zeros, spans = [], [], []
            for b in range(a.batches):
                batch = batch_for(tag, setup.dataset.train, 32, b, 0, 0)
                g, _ = gradient(setup.state, setup.objective.loss_tensor, batch)
                proj = np.asarray(setup.state.layout.project(g, direction_seeds(tag, True, b, 0, 0, k)))
                x = scaled(proj, normalised)
                e, payload = encode(Codec.BYTE, x, b)
                back = decode(Codec.BYTE, e, payload, k)
                errs.append(float(np.linalg.norm(back - x) / np.linalg.norm(x)))
                zeros.append(float(np.mean(back == 0)))
                spans.append(float(np.max(np.abs(x)) / np.median(np.abs(x))))
            rows.append({"k": k, "scalar": "normalised" if normalised else "derivative",
                         "rel_l2_error": float(np.mean(errs)), "rel_l2_error_max": float(np.max(errs)),
                         "zero_share": float(np.mean(zeros)), "max_over_median": float(np.mean(spans))})
            print(rows[-1], flush=True)
    save_result({"batches": a.batches, "rows": rows}, a.out,
                f"python -m bench.experiments.codec_large_k --batches {a.batches}",
                f"{platform.machine()}, CPU")


def render(r: dict | None) -> list[str]:
    if not r:
        return []
    lines = ["### The byte codec at large K", "",
             f"`{r['command']}` ({r['date']}). Exact projections (MiniLM + VADER, bias tuning, batch 32, "
             f"{r['batches']} batches), byte codec (one exponent per record) against float64:", "",
             "| K | scalar | relative L2 error (mean / max) | sent as 0 | largest / median magnitude |",
             "|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['k']:,} | {x['scalar']} | {x['rel_l2_error']:.2%} / {x['rel_l2_error_max']:.2%} | "
                     f"{x['zero_share']:.1%} | {x['max_over_median']:.1f} |")
    return lines + [""]


if __name__ == "__main__":
    main()
