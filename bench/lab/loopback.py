"""Real peers on loopback (no namespaces, no root), as the churn, partition and NAT runs and the
slow tests start them: start peers, wait on their summaries."""

from __future__ import annotations

import secrets
from pathlib import Path

from bench.lab.control import wait_for
from onebyte.swarm import PeerProcess, read_summary, start_peer, stop_group, wait_for_address

TINY = ["--model", "tiny-gpt2", "--task", "vader", "--samples", "2", "--batch-size", "32", "--tune", "all",
        "--host", "127.0.0.1", "--threads", "1"]


def secret_file(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "secret"
    if not path.exists():
        path.write_bytes(secrets.token_bytes(32))
    return path


def peer(out: Path, index: int, shards: int, extra: list[str], join: list[str] = ()) -> PeerProcess:
    args = [*TINY, "--peer-id", str(index), "--shard", f"{index}/{shards}", *extra]
    p = start_peer(index, out / f"peer-{index}", args, join)
    if not join:
        wait_for_address(p)
    return p


def address(p: PeerProcess) -> list[str]:
    return wait_for_address(p)[:1]


def wait_until(cond, timeout: float, what: str) -> None:
    """``cond()`` true within ``timeout`` seconds, or ``TimeoutError`` naming ``what``."""
    wait_for(cond, what, timeout, poll=0.3)


def rounds_done(p: PeerProcess) -> int:
    s = read_summary(p.out)
    return s["rounds_completed"] if s else 0


def finish(procs: list[PeerProcess], timeout: float) -> list[dict]:
    """Wait for every running peer to exit by itself (bounded), then stop any leftovers."""
    try:
        wait_until(lambda: not any(p.alive() for p in procs), timeout, "the peers to finish")
    finally:
        for p in procs:
            stop_group(p)
    bad = [p for p in procs if p.proc.returncode != 0]
    if bad:
        raise RuntimeError(f"peer {bad[0].index} exited with {bad[0].proc.returncode}: see {bad[0].out}/peer.log")
    return [read_summary(p.out) for p in procs]
