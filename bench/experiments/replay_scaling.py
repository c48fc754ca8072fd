"""Replay cost as the swarm grows: one round of P peers x K = 4 gradients applied at once.

Measured by the speed experiment (``python -m bench.experiments.speed``, stored as ``scaling`` in
speed_cpu.json, beside the projected-gradient time it is compared with) and rendered here as its
own section.
"""

from __future__ import annotations

import time

import numpy as np

from bench.sections import Results, Section
from onebyte.codec import Codec
from onebyte.config import Directions, TrainConfig
from onebyte.models import load_model
from onebyte.params import TuneSpec, select_parameters
from onebyte.record import build_record
from onebyte.state import FixedPointState
from onebyte.update import apply_records

RUN = b"bench-run-tag-16"


def measure(quick: bool) -> list[dict]:
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


def render(results: Results) -> list[str]:
    r = results.get("speed_cpu")
    if not r or not r.get("scaling"):
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


SECTION = Section("replay_scaling", "bench.experiments.replay_scaling", render)
