"""A networked peer's options: one frozen object of its own settings and named timings.

These are a site's choices (its id, secret, key, deadlines, pacing), never the run's math: none of
them is in the run tag, so peers of one run may differ in all of them. Every wait a peer makes has
a name here; the parts of a peer (``Gossip``, ``CatchUp``, ``Client``, the lifecycle) read the one
object their peer holds, so replacing ``Peer.opts`` changes it for all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Defaults
from .identity import SiteKey

__all__ = ["PeerOptions"]


@dataclass(frozen=True)
class PeerOptions:
    peer_id: int
    rounds: int | None = None  # complete rounds 0..rounds-1; None: until stopped
    lockstep: int = 0  # > 0: every round waits for the records of peers 0..lockstep-1 (with site keys:
    # of every listed key that counts in that round, lockstep being their number)
    secret: bytes = b""
    key: SiteKey | None = None  # this site's signing key: needed when the run lists keys (it replaces the secret)
    snapshot_every: int = 10
    min_deadline: float = 2.0  # bounds of the adaptive round deadline (seconds)
    max_deadline: float = 60.0
    lockstep_timeout: float = 600.0
    heartbeat_interval: float = 10.0  # a heartbeat reaches each peer this often (on a push or alone)
    heartbeat_ttl: float = 30.0
    join_timeout: float = 20.0
    drain_timeout: float = 120.0
    sync_interval: float = 3.0
    poll: float = 0.05  # local check for pushed records (no network traffic)
    dht_poll: float = 2.0  # once half the deadline has passed, read the round from the DHT this often
    lookback: int = 2  # rounds re-read from the DHT while draining
    pipeline: int = 1  # rounds in flight: after publishing round r, wait for round r - pipeline (not lockstep)
    push_timeout: float = 5.0
    request_timeout: float = 30.0
    # held-out examples evaluated at start and end: N (a fixed-seed sample), 0 none, None all
    eval_size: int | None = Defaults.eval_size
    log_to: tuple[str, ...] = ()  # trackers that get each metrics line too (track.Trackers)
    catchup: str = "auto"  # a newcomer joins by: auto (the smaller of snapshot and ledger), snapshot, ledger
    min_peers: int = 1  # the first round waits until this many peers (this one included) are live
    quorum_timeout: float = 600.0  # ... for at most this long, then starts with whoever is there
    relay: bool = False  # pass records pushed to us by their authors on to every other live peer
    # bytes a second this site may send (0: no limit): each round it measures the largest K (of the
    # run's) whose record, pushed to every other live peer, fits at the measured round interval
    link_budget: float = 0.0
    # ---- named timings (seconds) that were written inline before; the defaults are the old values
    join_poll: float = 0.5  # a newcomer looks for a live peer to catch up from this often
    drain_poll: float = 0.5  # a draining peer checks for agreement this often (it syncs in between)
    short_drain: float = 5.0  # a peer that is stopping drains for at most this long
    farewell: float = 2.0  # once all agree, a drained peer stays this long so slower peers see it done
    meet_timeout: float = 10.0  # a newcomer waits this long for a join peer to answer MEET (one round trip)
    piece_tries: int = 3  # a ledger piece is asked for this many times (from any source) before the join fails
