"""Start N real peer processes on loopback, watch them, collect their summaries, stop them.

Each peer is its own process group (``start_new_session``), so stopping a peer stops its
hivemind DHT child and p2pd too. Only processes this module started are ever signalled.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NetworkTimeout, PeerProcessError
from .rundir import ADDRESSES, SUMMARY

__all__ = ["PeerProcess", "start_peer", "run_swarm", "read_summary", "stop_group", "stop_groups"]

log = logging.getLogger(__name__)

ADDRESS_TIMEOUT = 120.0
STOP_GRACE = 20.0


@dataclass
class PeerProcess:
    index: int
    out: Path
    proc: subprocess.Popen
    args: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_peer(index: int, out: Path, args: Sequence[str], join: Sequence[str] = (),
               prefix: Sequence[str] = ()) -> PeerProcess:
    """Launch ``onebyte peer`` in a new process group, logging to ``out/peer.log``.

    ``prefix`` goes in front of the command (the labs run ``ip netns exec NS``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ADDRESSES).unlink(missing_ok=True)  # the peer writes it once it is reachable
    cmd = [*prefix, sys.executable, "-m", "onebyte", "peer", "--out", str(out), *args]
    for addr in join:
        cmd += ["--join", addr]
    log_fh = open(out / "peer.log", "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    log_fh.close()
    return PeerProcess(index, out, proc, list(args))


def wait_for_address(p: PeerProcess, timeout: float = ADDRESS_TIMEOUT) -> list[str]:
    path = p.out / ADDRESSES
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            addrs = [a for a in path.read_text().split() if a]
            if addrs:
                return addrs
        if not p.alive():
            raise PeerProcessError(f"peer {p.index} exited (code {p.proc.returncode}); see {p.out / 'peer.log'}")
        time.sleep(0.2)
    raise PeerProcessError(f"peer {p.index} printed no address within {timeout:.0f}s; see {p.out / 'peer.log'}")


def stop_group(p: PeerProcess, sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    """Signal the peer's process group, wait, then SIGKILL the group if it is still there."""
    stop_groups([p], sig, grace)


def stop_groups(procs: list[PeerProcess], sig: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    """Signal every peer's process group at once, give them ``grace`` seconds together, then SIGKILL
    what is left of each group (the DHT child and p2pd share it: none outlives its peer)."""
    for p in procs:
        if p.alive():
            try:
                os.killpg(p.proc.pid, sig)
            except ProcessLookupError:
                pass
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.proc.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        try:
            os.killpg(p.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.proc.poll() is None:
            p.proc.wait(timeout=grace)


def read_summary(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_swarm(n: int, peer_args: Callable[[int], list[str]], out: Path, rounds: int, timeout: float,
              on_progress: Callable[[list[dict | None]], None] | None = None) -> dict[str, Any]:
    """Start n peers (peer 0 first, the rest joining it), wait for all to finish, collect."""
    out.mkdir(parents=True, exist_ok=True)
    secret_file = out / "secret"
    if not secret_file.exists():
        secret_file.write_bytes(secrets.token_bytes(32))
        secret_file.chmod(0o600)
    procs: list[PeerProcess] = []
    try:
        first = start_peer(0, out / "peer-0", [*peer_args(0), "--secret-file", str(secret_file)])
        procs.append(first)
        join = wait_for_address(first)[:1]
        for i in range(1, n):
            procs.append(start_peer(i, out / f"peer-{i}", [*peer_args(i), "--secret-file", str(secret_file)], join))
        end = time.monotonic() + timeout
        while any(p.alive() for p in procs):
            if time.monotonic() > end:
                raise NetworkTimeout(f"swarm did not finish within {timeout:.0f}s")
            if on_progress is not None:
                on_progress([read_summary(p.out) for p in procs])
            time.sleep(1.0)
        failed = [p for p in procs if p.proc.returncode != 0]
        if failed:
            raise PeerProcessError(f"peer {failed[0].index} exited with code {failed[0].proc.returncode}; "
                               f"see {failed[0].out / 'peer.log'}")
    finally:
        stop_groups(procs)
    summaries = [read_summary(p.out) or {} for p in procs]
    result = {
        "peers": n,
        "rounds": rounds,
        "agree": len({(s.get("state_hash"), s.get("set_digest")) for s in summaries}) == 1,
        "state_hash": summaries[0].get("state_hash"),
        "set_digest": summaries[0].get("set_digest"),
        "summaries": summaries,
    }
    (out / "swarm.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
