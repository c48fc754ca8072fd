"""Relays: where our record goes, and where a record pushed to us goes next (the round's tree).

A swarm of at most ``overlay.DEGREE + 1`` peers is a full mesh: our record goes to every live peer
and nobody passes records on (but a NAT relay, ``--relay``, which passes every record its author
pushed to it on to every other live peer, for the sites behind NAT). A larger swarm uses the round's
tree (``overlay``): our record goes to our tree neighbours, and a record that is new to us (the
replica is the seen set) goes on to ours but the one towards its author, coalesced per neighbour
(``Pushes.relay``). A hop that fails twice skips the failed peer: what it would have passed on goes
to its own tree neighbours, once (no further skipping). Only records of recent rounds travel the
tree; older ones (anti-entropy's PUTs) are only taken.
"""

from __future__ import annotations

from collections.abc import Callable

from .intake import Intake, claimed_peer
from .membership import Heartbeat, Membership
from .options import PeerOptions
from .overlay import mesh, neighbours, onward
from .pushes import Pushes
from .record import Record

__all__ = ["Relays", "RECENT_ROUNDS"]

#: A record at most this many rounds older than this peer's round is passed on along its round's tree
#: (and tells us its author is live); an older one came from anti-entropy and is only taken.
RECENT_ROUNDS = 2


class Relays:
    """The round's tree over the peers we can reach: ``targets()`` (live peers and those waiting for
    their first round), ``me``; ``position()`` gives this peer's (next round, done)."""

    def __init__(self, pushes: Pushes, intake: Intake, members: Membership, options: Callable[[], PeerOptions],
                 me: int, targets: Callable[[], dict[int, Heartbeat]], position: Callable[[], tuple[int, bool]]):
        self.pushes, self.intake, self.members, self._options = pushes, intake, members, options
        self.me, self._targets, self._position = me, targets, position

    def ours(self, r: int, targets: dict[int, Heartbeat]) -> dict[int, Heartbeat]:
        """Of ``targets``, those our record of round r goes to: all of them in a mesh, else our tree
        neighbours (at most ``DEGREE``)."""
        ids = {*targets, self.me}
        if mesh(len(ids)):
            return targets
        return {p: targets[p] for p in neighbours(r, self.me, ids) if p in targets}

    def tree(self) -> bool:
        """Whether records travel a tree now (more peers than a mesh holds)."""
        return not mesh(len({*self._targets(), self.me}))

    def near(self, peers: dict[int, Heartbeat]) -> dict[int, Heartbeat]:
        """Of ``peers``, this round's tree neighbours (all of them in a mesh): who our heartbeats go to
        between records in a large swarm; the others hear that we are live from our records."""
        return self.ours(self._position()[0], peers)

    def skip(self, r: int, author: int, record: bytes, failed: Heartbeat) -> None:
        """A hop to ``failed`` failed twice: send what it would have passed on to its neighbours."""
        targets = self._targets()
        ids = {*targets, self.me, author, failed.peer_id}
        for p in onward(r, failed.peer_id, author, ids):
            if p != self.me and p in targets:
                self.pushes.relay(targets[p], record, None)

    def take(self, record: bytes, pushed: bool = False) -> bool:
        """A record pushed to us (REC, ``pushed``) or relayed to us (REC or PUT): validated by the
        intake. An authentic one of a recent round tells us its author is live and has reached that
        round; a new one travels on along its round's tree, or, from its author to a NAT relay, to
        every other live peer. Whether it was new and acceptable."""
        seen: list[Record] = []
        recent = self._position()[0] - RECENT_ROUNDS

        def heard(rec: Record) -> None:  # its author is live and has measured that round
            seen.append(rec)
            if rec.round >= recent:
                self.members.heard(rec.peer_id, rec.round)

        if not self.intake.offer(record, heard=heard):
            return False
        rec = seen[0]
        if self._options().relay:  # a NAT relay: every record its author pushed to it, to everyone
            if pushed:
                self.pushes.forward(record, claimed_peer(record), self._others().values())
        elif rec.round >= recent:
            self._pass_on(rec.round, rec.peer_id, record)
        return True

    def _others(self) -> dict[int, Heartbeat]:
        return {p: hb for p, hb in self.members.live().items() if p != self.me}

    def _pass_on(self, r: int, author: int, record: bytes) -> None:
        targets = self._targets()
        ids = {*targets, self.me, author}
        if mesh(len(ids)):
            return  # its author reached everyone

        def missed(other: Heartbeat, rec: bytes) -> None:
            self.skip(r, author, rec, other)

        for p in onward(r, self.me, author, ids):
            if p in targets:
                self.pushes.relay(targets[p], record, missed)
