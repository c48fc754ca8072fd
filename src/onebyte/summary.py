"""What a peer reports: its ``summary.json`` (rewritten atomically after every round) and the lines
of its ``metrics.jsonl``.

The summary's keys where they mean the same as the simulator's (``state_hash``, ``set_digest``,
``records``, ``payload_bytes``, ``forward_passes``, ``seconds``...), plus the wire, intake and
gossip counters only a networked peer has. Every summary file, the simulator's too, is written
through ``write_json`` (``ledger.write_atomic``: a temporary file, fsync, rename), so a reader never
sees half of one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TypedDict

from .gossip import Gossip
from .intake import Intake
from .ledger import write_atomic
from .options import PeerOptions
from .replica import Replica
from .tasks.data import eval_subset
from .training import Privacy, Setup
from .transport.base import Transport

__all__ = ["Position", "MetricsLine", "peer_summary", "metrics_line", "write_summary", "write_json", "evaluate"]


class Position(TypedDict):
    """Where a peer's round loop stands: the summary's keys that only the loop knows."""

    rounds_completed: int
    round: int
    done: bool
    max_round_seconds: float
    samples_sent: list[int]  # K of each record measured (below the run's under a link budget)
    joined_by: dict[str, Any] | None  # how the peer caught up when it joined (None: it did not)
    eval_before: dict[str, float] | None
    eval_after: dict[str, float] | None
    started: float  # time.perf_counter() at launch


class MetricsLine(TypedDict, total=False):
    """One line of a peer's ``metrics.jsonl``: cumulative, this peer's own where it says so."""

    round: int
    train_loss: float | None
    payload_bytes: int
    forward_passes: int
    seconds: float
    bytes_sent: int
    bytes_received: int
    records: int
    records_rejected: int
    peers: int
    dp_epsilon_spent: float | None


def peer_summary(opts: PeerOptions, setup: Setup, replica: Replica, intake: Intake, gossip: Gossip, net: Transport,
                 at: Position) -> dict[str, Any]:
    """The summary of one peer: its configuration, its record set and state, its wire and gossip
    counters, and ``at``, where its round loop stands."""
    rep = replica
    pushes = gossip.pushes.counts()
    with rep.lock:
        rejections = intake.rejections()
        return {
            "peer_id": f"{opts.peer_id:x}",
            "model": setup.spec.model,
            "task": setup.spec.task,
            "codec": setup.train.codec.label,
            "samples_per_round": setup.train.samples,
            "rounds": opts.rounds,
            "rounds_completed": at["rounds_completed"],
            "round": at["round"],
            "records": rep.digest.count,  # after a coefficient join, the rounds its totals hold too
            "records_accepted": len(rep.records),
            "records_rejected": sum(rejections.values()),
            "rejections": rejections,
            "flagged_peers": sorted(f"{p:x}" for p in rep.flagged),
            # copies: the beater thread adds to these while we read them
            "foreign_peers": {f"{p:x}": why for p, why in dict(gossip.foreign_diff).items()},
            "key_list_peers": {f"{p:x}": why for p, why in dict(gossip.keys.keys_diff).items()},
            "gradients": sum(rep.records[rid].count for rid in rep.applied),
            "payload_bytes": rep.payload_bytes,
            **byte_counts(net),
            "state_hash": rep.state_hash(),
            "set_digest": rep.digest.hex(),
            "base_hash": setup.spec.base_hash,
            "run_tag": setup.spec.run_tag.hex(),
            "addresses": net.addresses,
            "done": at["done"],
            "max_round_seconds": round(at["max_round_seconds"], 3),
            "link_budget": opts.link_budget or None,
            "samples_sent": _spread(at["samples_sent"]),
            "peers": len({rec.peer_id for rec in rep.records.values()}),
            "tuned_parameters": setup.state.numel,
            "joined_by": at["joined_by"],
            "pushes": pushes,
            "relayed": gossip.pushes.relayed,
            "dht_copies": gossip.pushes.dht_copies,
            "forward_passes": sum(setup.train.forward_passes(r.count) for r in rep.records.values()
                                  if r.peer_id == opts.peer_id),
            "eval_before": at["eval_before"],
            "eval_after": at["eval_after"],
            "seconds": round(time.perf_counter() - at["started"], 3),
        }


def byte_counts(net: Transport) -> dict[str, Any]:
    """``bytes_sent``/``bytes_received``: on the wire where the transport can see it (the kernel's
    counters of this peer's processes, libp2p daemon and headers included), else our payloads;
    ``bytes_counted`` says which. The payload counts stay beside them."""
    wire = net.wire_bytes()
    out = {"payload_bytes_sent": net.bytes_sent, "payload_bytes_received": net.bytes_received}
    if wire is None:
        return {"bytes_sent": net.bytes_sent, "bytes_received": net.bytes_received, **out,
                "bytes_counted": "payloads only (the transport cannot see the wire): an underestimate"}
    from .transport.wire import METHOD

    return {"bytes_sent": wire["sent"], "bytes_received": wire["received"], **out, "bytes_counted": METHOD}


def metrics_line(r: int, s: dict[str, Any], train_loss: float | None) -> MetricsLine:
    """The line of round ``r`` from the summary ``s``: the simulator's keys where they mean the same
    (cumulative payload and forward passes, this peer's own), plus the wire and intake counters."""
    line: MetricsLine = {
        "round": r, "train_loss": train_loss, "payload_bytes": s["payload_bytes"],
        "forward_passes": s["forward_passes"], "seconds": s["seconds"], "bytes_sent": s["bytes_sent"],
        "bytes_received": s["bytes_received"], "records": s["records"],
        "records_rejected": s["records_rejected"], "peers": s["peers"]}
    if "dp" in s:
        line["dp_epsilon_spent"] = s["dp"].get("epsilon_spent")
    return line


def write_summary(path: Path, s: dict[str, Any], privacy: Privacy | None = None) -> dict[str, Any]:
    """Complete a peer's summary (its average send rate, its privacy budget) and write it to ``path``."""
    if s["seconds"] > 0:  # against link_budget: what this site sent, on average, launch to exit
        s["bytes_per_second"] = round(s["bytes_sent"] / s["seconds"], 1)
    if privacy is not None:
        s["dp"] = privacy.accountant.report()
    write_json(path, s)
    return s


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (``StorageError`` if the disk refuses)."""
    write_atomic(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def evaluate(setup: Setup, replica: Replica, eval_size: int | None) -> dict[str, float] | None:
    """Held-out loss and accuracy at the replica's state (``eval_size``: N examples, a fixed-seed
    sample; 0: skip; None: every one)."""
    if eval_size == 0:
        return None
    with replica.lock:
        return setup.objective.evaluate(eval_subset(setup.dataset.test, eval_size))


def _spread(values: list[int]) -> dict[str, float] | None:
    """min, mean and max of ``values`` (None when empty)."""
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)} if values else None
