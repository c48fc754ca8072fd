"""Repair: the records a peer lacks, asked for.

* **Fetch and pull**: a round's missing records are asked of their authors (RND), then read from
  the DHT copy when an author cannot be reached (it may have crashed).
* **Anti-entropy**: when a settled round differs from a live peer's (after partitions and
  restarts), exchange record ids (IDS) and send each other what the other lacks (GET, PUT). In
  identity mode the two exchange revocations first, or records would go back and forth.

Everything received goes through the peer's ``Intake``; the state is never touched here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from .client import Client
from .errors import NetworkError, ProtocolError
from .intake import Intake
from .membership import Heartbeat, Membership
from .options import PeerOptions
from .protocol import MAX_PUT, MAX_REPLY
from .replica import Replica
from .sitekeys import SiteKeys

__all__ = ["Repair"]

log = logging.getLogger(__name__)

#: The round a ranged LEDG request gives as "and every later one" (as ``catchup.OPEN_END``).
OPEN_END = 0xFFFFFFFF


class Repair:
    """Fetches, DHT pulls and anti-entropy for one peer; ``position()`` gives its (next round, done)."""

    def __init__(self, client: Client, options: Callable[[], PeerOptions], replica: Replica, intake: Intake,
                 members: Membership, keys: SiteKeys, position: Callable[[], tuple[int, bool]]):
        self.client, self.net, self._options, self.replica, self.intake = client, client.net, options, replica, intake
        self.members, self.keys, self._position = members, keys, position
        self.me = options().peer_id
        self._last_sync: dict[int, float] = {}

    @property
    def opts(self) -> PeerOptions:
        return self._options()

    def fetch_round(self, r: int, authors: Iterable[int]) -> None:
        """Ask the authors of missing records for round r directly; the DHT copy is the fallback
        when an author cannot be reached (it may have crashed)."""
        unreachable = False
        for p in authors:
            hb = self.members.get(p)
            if hb is None or p == self.me:
                unreachable = True
                continue
            try:
                for data in self.client.rnd(hb.contact, r):
                    self.intake.offer(data)
            except (ProtocolError, NetworkError) as exc:
                log.debug("could not fetch round %d from peer %x: %s", r, p, exc)
                unreachable = True
        if unreachable:
            self.pull(range(r, r + 1))

    def pull(self, rounds: range) -> None:
        """Read rounds from the DHT copy."""
        for r in rounds:
            try:
                raws = self.net.records(r)
            except (ProtocolError, NetworkError) as exc:
                log.debug("could not read round %d: %s", r, exc)
                continue
            for data in raws:
                self.intake.offer(data)

    def sync(self) -> None:
        """Anti-entropy: fetch records a live peer holds and we lack (after partitions, restarts)."""
        now = time.monotonic()
        rep = self.replica
        round_, done = self._position()
        for other in list(self.members.live().values()):
            if other.peer_id == self.me or other.digest.hex() == rep.digest.hex():
                continue
            if rep.base_round >= 0 and other.closed <= rep.base_round:
                continue  # joined from coefficients: rounds that old are totals here, not comparable records
            settled = other.closed < round_ - 1 and other.closed_digest != rep.closed_digest(other.closed)
            if not (settled or other.done or done):
                continue  # only the in-flight rounds differ: pushes and DHT reads will fill them
            if now - self._last_sync.get(other.peer_id, -1e9) < self.opts.sync_interval:
                continue
            self._last_sync[other.peer_id] = now
            try:
                self.reconcile(other)
            except (ProtocolError, NetworkError) as exc:
                log.debug("sync with peer %x failed: %s", other.peer_id, exc)

    def reconcile(self, other: Heartbeat) -> None:
        """Exchange with ``other`` what each lacks: revocations first, then records (by id)."""
        rep = self.replica
        if self.intake.roster is not None:  # the same revocations first, or records would go back and forth
            self.keys.exchange(other, self.intake.revocations_in_force())
        theirs = self.client.ids(other.contact)
        with rep.lock:
            have = {rid[:8] for rid in rep.records} | self.intake.refused_ids()
        missing = [rid for rid in theirs if rid not in have]
        if missing and rep.base_round >= 0:
            # joined from coefficients: most ids we lack are of rounds our totals hold; ask for the
            # rounds since then instead (what the join brought, not the run's history)
            _, raws, _ = self.client.ledg(other.contact, range(rep.base_round + 1, OPEN_END),
                                          self.client.bulk_timeout(None), MAX_REPLY)
            log.info("synced %d records of the rounds since our coefficient join from peer %x",
                     sum(self.intake.offer(data) for data in raws), other.peer_id)
        elif missing:
            got = sum(self.intake.offer(data) for data in self.client.get(other.contact, missing))
            log.info("synced %d records from peer %x", got, other.peer_id)
        with rep.lock:  # and hand over what they lack: the peer ahead sees the mismatch first
            extra = [rec.to_bytes() for rid, rec in rep.records.items() if rid[:8] not in theirs]
        if extra:
            self.client.put(other.contact, extra)
            log.info("sent %d records to peer %x", min(len(extra), MAX_PUT), other.peer_id)
