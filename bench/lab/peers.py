"""Real ``onebyte peer`` processes in a lab, one per namespace, launched by onebyte's own launcher.

``run`` starts peer 0, waits for its address, starts the others joining it, and samples every
peer's progress (rounds completed, from its summary) and interface counter until all exit or the
time is up; ``steady`` picks the window in which every peer has joined and none is finishing.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.lab.control import AnyLab
from onebyte.swarm import PeerProcess, read_summary, start_peer, stop_group, wait_for_address

#: How often progress and counters are sampled.
SAMPLE_S = 0.25


class LabWithAddresses(AnyLab, Protocol):
    ips: list[str]
    names: list[str]


@dataclass(frozen=True)
class Sample:
    t: float
    rounds: list[int]  # rounds completed, per peer
    tx: list[int]  # bytes sent so far, per peer


@dataclass(frozen=True)
class SwarmRun:
    samples: list[Sample]
    finished: bool  # every peer exited before the time was up
    summaries: list[dict]
    wall_seconds: float


def start(lab: LabWithAddresses, i: int, work: Path, args: Sequence[str], join: Sequence[str] = ()) -> PeerProcess:
    """``onebyte peer`` number i in namespace i, listening on the lab address, output in work/peer-i."""
    return start_peer(i, work / f"peer-{i}", [*args, "--host", lab.ips[i]], join, lab.wrap(i, []))


def _site_keys(work: Path, peers: int) -> tuple[Path, list[list[str]]]:
    """A key per peer and a run file listing them all: the run file, and each peer's flags."""
    from onebyte.config import ListedKey, RunSpec
    from onebyte.identity import SiteKey

    keys = []
    for i in range(peers):
        key = SiteKey.generate()
        path = work / f"site-{i}.key"
        path.unlink(missing_ok=True)
        key.save(path)
        keys.append((path, key))
    run_file = work / "run.toml"
    run_file.write_text(RunSpec(keys=tuple(ListedKey(f"site-{i}", k.public) for i, (_, k) in enumerate(keys))).to_toml())
    return run_file, [["--key", str(path)] for path, _ in keys]


def run(lab: LabWithAddresses, work: Path, args: Sequence[str], *, address_timeout: float,
        run_timeout: float, keys: bool = False) -> SwarmRun:
    """Run a swarm of ``len(lab.names)`` peers with ``args`` (plus peer id, shard, secret) to the end.
    ``keys``: identity mode, each peer signing with its own key listed in a shared run file (the
    peer id then comes from the key); ``args`` override the run file's other settings."""
    peers = len(lab.names)
    work.mkdir(parents=True, exist_ok=True)
    secret = work / "secret"
    secret.write_bytes(secrets.token_bytes(32))
    secret.chmod(0o600)
    args = [*args, "--secret-file", str(secret)]
    who = [["--peer-id", str(i)] for i in range(peers)]
    if keys:
        run_file, who = _site_keys(work, peers)
        args = ["--config", str(run_file), *args]
    procs: list[PeerProcess] = []
    samples: list[Sample] = []
    t_start = time.monotonic()
    try:
        procs.append(start(lab, 0, work, [*args, *who[0], "--shard", f"0/{peers}"]))
        join = wait_for_address(procs[0], address_timeout)[:1]
        for i in range(1, peers):
            procs.append(start(lab, i, work, [*args, *who[i], "--shard", f"{i}/{peers}"], join))
        end = time.monotonic() + run_timeout
        while any(p.alive() for p in procs) and time.monotonic() < end:
            done = [(read_summary(p.out) or {}).get("rounds_completed", 0) for p in procs]
            samples.append(Sample(time.monotonic(), done, [lab.tx_bytes(i) for i in range(peers)]))
            time.sleep(SAMPLE_S)
        finished = not any(p.alive() for p in procs)
    finally:
        for p in procs:  # each peer is its own process group (its DHT child and p2pd too)
            stop_group(p, signal.SIGKILL)
    return SwarmRun(samples, finished, [read_summary(p.out) or {} for p in procs], time.monotonic() - t_start)


def steady(samples: list[Sample], warmup: int, rounds: int) -> tuple[Sample, Sample]:
    """First and last sample in which every peer has done ``warmup`` rounds and none more than
    ``rounds - 2`` (joining and finishing excluded)."""
    window = [s for s in samples if min(s.rounds) >= warmup and max(s.rounds) <= rounds - 2]
    if len(window) < 2:
        raise RuntimeError("no steady-state window observed; use more rounds")
    return window[0], window[-1]


# ------------------------------------------------------------------------------------------------
