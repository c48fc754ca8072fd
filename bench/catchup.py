"""Catch-up: a newcomer joining a swarm that has run 1,000 rounds, from a snapshot plus the last
rounds' records, against replaying the whole ledger from the base model.

    python bench/catchup.py [--rounds 1000] [--peers 4] [--samples 1] [--tail 10]

The records are synthetic (random codes): replay cost depends on how many directions there are,
not on their values. Both paths end with the same state hash (checked).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onebyte.codec import Codec
from onebyte.config import TrainConfig
from onebyte.ledger import load_snapshot, save_snapshot
from onebyte.models import load_model
from onebyte.params import TuneSpec, select_parameters
from onebyte.record import SetDigest, build_record
from onebyte.replay import apply_records
from onebyte.state import FixedPointState


def fresh_state(tune: str) -> FixedPointState:
    return FixedPointState(select_parameters(load_model("minilm").model, TuneSpec.parse(tune)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--tail", type=int, default=10)
    ap.add_argument("--tune", default="all")
    ap.add_argument("--out", type=Path, default=Path("bench/results/catchup.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    train = TrainConfig(lr=1e-7, samples=a.samples, tune=a.tune)
    rng = np.random.default_rng(0)
    tag = b"catchup-run-tag!"
    records = [build_record(Codec.BYTE, tag, r, p, 0, rng.normal(size=a.samples), r * 64 + p)
               for r in range(a.rounds) for p in range(a.peers)]
    head = [x for x in records if x.round < a.rounds - a.tail]
    tail = [x for x in records if x.round >= a.rounds - a.tail]

    full = fresh_state(a.tune)
    t = time.perf_counter()
    apply_records(full, records, train)
    replay_s = time.perf_counter() - t

    # a live peer's snapshot after the head rounds (its cost is the live peer's, not the newcomer's)
    live = fresh_state(a.tune)
    apply_records(live, head, train)
    digest = SetDigest()
    for x in head:
        digest.add(x.record_id)
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "s.safetensors"
        save_snapshot(snap, live, digest, a.rounds - a.tail)
        size = snap.stat().st_size
        newcomer = fresh_state(a.tune)
        t = time.perf_counter()
        load_snapshot(snap, newcomer)  # includes checking the tensors against the state hash
        apply_records(newcomer, tail, train)
        snapshot_s = time.perf_counter() - t
    assert newcomer.state_hash() == full.state_hash(), "catch-up paths disagree"
    result = {"rounds": a.rounds, "peers": a.peers, "samples_per_round": a.samples, "tune": a.tune,
              "tuned_parameters": full.numel, "records": len(records), "tail_rounds": a.tail,
              "full_replay_s": round(replay_s, 3), "snapshot_plus_tail_s": round(snapshot_s, 3),
              "speedup": round(replay_s / snapshot_s, 1), "snapshot_bytes": size,
              "ledger_bytes": sum(len(x.to_bytes()) + 8 for x in records),
              "command": f"python bench/catchup.py --rounds {a.rounds} --peers {a.peers} --samples {a.samples} "
                         f"--tail {a.tail} --tune {a.tune}",
              "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(result, indent=2))
    a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
