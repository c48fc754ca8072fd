"""Closing a round: whose record a peer waits for, which it holds, and for how long it waits.

No barrier closes a round. A peer waits for the records of the live peers at most one round
behind (in lockstep, of every peer that counts in that round), until they are in or an adaptive
deadline passes: ``DEADLINE_FACTOR`` times the recent round time plus ``DEADLINE_SLACK``, within
the peer's ``min_deadline``..``max_deadline``. A record that arrives later is applied when it
comes: the state is a function of the record set, not of when records arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .codec import fit_samples
from .config import TrainConfig
from .errors import NetworkTimeout
from .gossip import Gossip
from .identity import Roster
from .intake import Intake
from .options import PeerOptions
from .record import HEADER_SIZE, SIGNATURE_SIZE, TAG_SIZE
from .replica import Replica

__all__ = ["RoundWait", "samples_for_link", "ema", "DEADLINE_FACTOR", "DEADLINE_SLACK", "EMA_WEIGHT"]

log = logging.getLogger(__name__)

#: A round's deadline: this many times the recent time for a round's records to come in ...
DEADLINE_FACTOR = 3.0
#: ... plus this many seconds (bounded by ``min_deadline`` and ``max_deadline``).
DEADLINE_SLACK = 1.0
#: The weight of the newest measurement in a moving average of round times.
EMA_WEIGHT = 0.3


class RoundWait:
    """Waits for a round's records: ``expected(r)`` peers, ``have(r)`` of them, ``wait_for(w)``.

    ``apply`` makes queued records durable and applies them (the peer's ``apply_pending``)."""

    def __init__(self, options: Callable[[], PeerOptions], gossip: Gossip, replica: Replica, intake: Intake,
                 roster: Roster | None, apply: Callable[[], int]):
        self._options, self.gossip, self.replica, self.intake, self.roster = options, gossip, replica, intake, roster
        self._apply = apply
        self.round_time_ema: float | None = None  # seconds from publishing to holding a round's records

    @property
    def opts(self) -> PeerOptions:
        return self._options()

    def deadline(self) -> float:
        if self.round_time_ema is None:
            return self.opts.max_deadline / 2
        return min(self.opts.max_deadline,
                   max(self.opts.min_deadline, DEADLINE_FACTOR * self.round_time_ema + DEADLINE_SLACK))

    def expected(self, r: int) -> set[int]:
        """Peers whose record of round r is waited for (this one included)."""
        if self.opts.lockstep:
            return self.roster.counting(r) if self.roster is not None else set(range(self.opts.lockstep))
        live = self.gossip.members.live()
        # live peers at most one round behind; one further behind is catching up and is not waited for
        return {p for p, hb in live.items() if hb.round >= r - 1 and not hb.done} | {self.opts.peer_id}

    def have(self, r: int) -> set[int]:
        """Peers whose record for round r we hold, or refused for good (nothing more will come)."""
        return self.replica.peers_in_round(r) | self.intake.refused_in(r)

    def wait_for(self, w: int, t0: float, stop: threading.Event | None) -> None:
        """Wait (bounded by the adaptive deadline) until every expected peer's record of round w is in."""
        published = last_read = time.monotonic()
        limit = self.opts.lockstep_timeout if self.opts.lockstep else self.deadline()
        while True:
            # Read the DHT copy only when a peer we lack is already past round w: its record
            # exists, so its push must have been lost (waiting on a slower peer costs nothing).
            latest = self.gossip.members.peers()
            lost = {p for p in self.expected(w) - self.have(w) if p in latest and latest[p].round > w}
            if lost and time.monotonic() - last_read >= self.opts.dht_poll:
                self.gossip.repair.fetch_round(w, lost)
                last_read = time.monotonic()
            self._apply()
            missing = self.expected(w) - self.have(w)
            if not missing:
                self.round_time_ema = ema(self.round_time_ema, time.monotonic() - published)
                return
            if time.monotonic() - published > limit:
                if self.opts.lockstep:
                    raise NetworkTimeout(f"lockstep round {w}: no record from peers {sorted(missing)} in {limit:.0f}s")
                log.info("round %d closed at its %.1fs deadline without peers %s", w, limit,
                         ", ".join(f"{p:x}" for p in sorted(missing)))
                self.round_time_ema = ema(self.round_time_ema, limit)
                return
            if stop is not None and stop.is_set() and time.monotonic() - t0 > self.opts.min_deadline:
                return
            self.gossip.beat()
            time.sleep(self.opts.poll)


def samples_for_link(train: TrainConfig, opts: PeerOptions, live: int, interval: float | None) -> int | None:
    """K for this round under ``link_budget`` (None: the run's K): the largest whose record fits
    the budget, pushed to every other of the ``live`` peers once per round ``interval``
    (``codec.fit_samples``). Until an interval has been measured, ``min_deadline`` stands for it."""
    if not opts.link_budget:
        return None
    trailer = SIGNATURE_SIZE if opts.key is not None else TAG_SIZE
    fanout = max(1, live - 1, (opts.lockstep or 1) - 1)
    seconds = interval if interval is not None else opts.min_deadline
    return fit_samples(train.codec, opts.link_budget, seconds, fanout, HEADER_SIZE + trailer, train.samples)


def ema(old: float | None, x: float, alpha: float = EMA_WEIGHT) -> float:
    """A moving average: ``x`` itself at first, then ``alpha`` of each new ``x``."""
    return x if old is None else (1 - alpha) * old + alpha * x
