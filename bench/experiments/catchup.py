"""Catch-up: a newcomer joining a swarm that has run 1,000 rounds, from a snapshot plus the last
rounds' records, against replaying the whole ledger from the base model.

    python -m bench.experiments.catchup [--rounds 1000] [--peers 4] [--samples 1] [--tail 10]

The records are synthetic (random codes): replay cost depends on how many directions there are,
not on their values. Both paths end with the same state hash (checked).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.output import RESULTS, save_result
from bench.sections import Results, Section, Step
from bench.sweep import machine
from onebyte.codec import Codec
from onebyte.config import TrainConfig
from onebyte.ledger import load_snapshot, save_snapshot
from onebyte.models import load_model
from onebyte.params import TuneSpec, select_parameters
from onebyte.record import SetDigest, build_record
from onebyte.state import FixedPointState
from onebyte.update import apply_records


def fresh_state(tune: str) -> FixedPointState:
    return FixedPointState(select_parameters(load_model("minilm").model, TuneSpec.parse(tune)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--tail", type=int, default=10)
    ap.add_argument("--tune", default="all")
    ap.add_argument("--out", type=Path, default=RESULTS / "catchup.json")
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
              "ledger_bytes": sum(len(x.to_bytes()) + 8 for x in records)}
    save_result(result, a.out, f"python -m bench.experiments.catchup --rounds {a.rounds} --peers {a.peers} "
                f"--samples {a.samples} --tail {a.tail} --tune {a.tune}", machine())



def render(results: Results) -> list[str]:
    """The catch-up section of BENCHMARKS.md."""
    r = results.get("catchup")
    if not r:
        return []
    link = 64_000 / 8  # bytes per second on a 64 kbit/s line
    return [
        "## Catch-up of a newcomer",
        "",
        f"`{r['command']}` ({r['date']}): a swarm of {r['peers']} peers has run {r['rounds']:,} rounds "
        f"({r['records']:,} records, {r['tuned_parameters']:,} tuned parameters).",
        "",
        "| path | compute | bytes to fetch |",
        "|---|---|---|",
        f"| replay the whole ledger from the base model | {r['full_replay_s']:.1f} s | "
        f"{r['ledger_bytes'] / 1024:,.0f} KiB |",
        f"| snapshot + the last {r['tail_rounds']} rounds' records | {r['snapshot_plus_tail_s']:.2f} s "
        f"(**{r['speedup']:.0f}× faster**) | {r['snapshot_bytes'] / 2**20:,.1f} MiB |",
        "",
        "Both paths end with the same state hash. The snapshot wins on compute, the ledger on bytes: on a "
        f"64 kbit/s line the snapshot takes {r['snapshot_bytes'] / link / 3600:.1f} h to download and the ledger "
        f"{r['ledger_bytes'] / link:.0f} s, so on thin links a newcomer should fetch the ledger and replay. "
        "`onebyte peer` asks the peer it joins for both sizes (SIZE) and fetches the smaller "
        "(`--catchup auto`, the default; `ledger` or `snapshot` force a path): see \"A newcomer over a thin link\" "
        "above.",
        "",
    ]


SECTION = Section(
    "catchup", "bench.experiments.catchup", render,
    steps=(Step("catchup", ("--out", "{out}/catchup.json"), ("--rounds", "8", "--tail", "2", "--tune", "bias", "--out", "{out}/catchup.json")),),
)


if __name__ == "__main__":
    main()
