"""Every file name of a run directory, defined once.

A run directory (``simulate --out``, or a peer's ``--out``) holds::

    run.json              the run: settings that change the math, base hash, run tag
    ledger.obl            append-only, checksummed records (ledger.py)
    snapshot.safetensors  the accumulators at a known set digest (a cache of the ledger)
    coefficients.obc      the coefficient snapshot a peer joined from (seed pool; pool.py)
    summary.json          what the run or peer reports, rewritten atomically
    metrics.jsonl         one line per round (simulator)
    curve.png             training loss and held-out accuracy (simulator)
    identity.key          this peer's network key (peer)
    addresses.txt         multiaddrs others can join through (peer)
    connect.txt           multiaddrs an operator asks a running peer to dial (peer)
    revocations.txt       signed key revocations in force, one per line (peer; onebyte revoke)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUN", "LEDGER", "SNAPSHOT", "SUMMARY", "METRICS", "CURVE", "IDENTITY", "ADDRESSES", "CONNECT",
           "REVOCATIONS", "COEFFICIENTS", "RunDir"]

RUN = "run.json"
LEDGER = "ledger.obl"
SNAPSHOT = "snapshot.safetensors"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CURVE = "curve.png"
IDENTITY = "identity.key"
ADDRESSES = "addresses.txt"
CONNECT = "connect.txt"
REVOCATIONS = "revocations.txt"
COEFFICIENTS = "coefficients.obc"


def _file(name: str) -> property:
    return property(lambda self: self.root / name, doc=f"``{name}`` in this run directory")


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    root: Path

    def __init__(self, root: Path | str):
        object.__setattr__(self, "root", Path(root))

    run = _file(RUN)
    ledger = _file(LEDGER)
    snapshot = _file(SNAPSHOT)
    summary = _file(SUMMARY)
    metrics = _file(METRICS)
    curve = _file(CURVE)
    identity = _file(IDENTITY)
    addresses = _file(ADDRESSES)
    connect = _file(CONNECT)
    revocations = _file(REVOCATIONS)
    coefficients = _file(COEFFICIENTS)
