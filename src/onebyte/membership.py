"""Heartbeats: who is live, how far they are, and what they hold (set digest, state hash).

A heartbeat is a small authenticated binary message each peer pushes to the others every few seconds
(and stores in the DHT for discovery)::

    magic "HB" | version u8 | run tag 16B | base hash 16B | peer id u64 | seq u32 | round u32 | records u32 |
    done u8 | set digest 32B | state hash 32B | closed round i32 | digest of rounds <= closed 32B |
    examples u32 | contact length u16 | contact | trailer

``examples`` is the site's count of training examples: under ``Weighting.EXAMPLES`` each site
weighs its records against the mean count it has heard (``modes.swarm_reference``).

Version 1 ends in a 16-byte HMAC tag under the swarm secret; version 2 (identity mode: the run
file lists site keys) in the author's Ed25519 signature over everything before it (64 bytes, so
a heartbeat grows by 48 to about 270 bytes), checked against the key its peer id derives from.
``auth`` seals and checks the trailer, as it does a record's.

The *closed* digest covers only rounds old enough to be settled, so two peers can tell whether
they disagree about the past (and must sync) while their newest rounds are still in flight.

Liveness is judged by when *we* last saw a peer's ``seq`` change, never by its clock.
``Membership`` is shared by server threads (which observe pushed heartbeats) and the round loop
(which iterates who is live), so one lock guards it and every read returns a copy.
The audit: two peers reporting the same set digest with different state hashes is a bug
somewhere, and is raised as ``DivergenceError``.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import auth
from .auth import SIGNATURE_SIZE, TAG_SIZE, TRAILER_SIZE
from .errors import ProtocolError

if TYPE_CHECKING:
    from .identity import Roster, SiteKey

__all__ = ["Heartbeat", "ForeignRun", "decode_heartbeat", "Membership"]

_HB = struct.Struct("<2sB16s16sQIIIB32s32si32sIH")
MAX_CONTACT = 512


@dataclass(frozen=True)
class Heartbeat:
    run_tag: bytes
    base: bytes  # first 16 bytes of the base model's hash: tells a wrong base from a wrong config
    peer_id: int
    seq: int
    round: int  # the next round this peer will run
    records: int
    done: bool
    digest: bytes
    state_hash: bytes
    closed: int  # rounds <= closed are settled (-1: none yet)
    closed_digest: bytes
    contact: str
    examples: int = 0  # the site's training examples (0: not said)

    def encode(self, secret: bytes, key: SiteKey | None = None) -> bytes:
        """HMAC-tagged under ``secret`` (version 1), or with ``key`` signed by it (version 2)."""
        c = self.contact.encode()
        body = _HB.pack(b"HB", auth.version(key), self.run_tag, self.base, self.peer_id, self.seq, self.round,
                        self.records, int(self.done), self.digest, self.state_hash, self.closed, self.closed_digest,
                        min(self.examples, 0xFFFFFFFF), len(c)) + c
        return body + auth.seal(body, secret, key)


class ForeignRun(ProtocolError):
    """An authentic heartbeat from a peer of the same run id but another base or configuration."""

    def __init__(self, hb: Heartbeat):
        super().__init__("heartbeat for another run")
        self.heartbeat = hb


def decode_heartbeat(data: bytes, run_tag: bytes, secret: bytes, roster: Roster | None = None) -> Heartbeat:
    """Parse and authenticate a heartbeat: signed by its peer's listed key when there is a ``roster``
    (identity mode; a key revoked at a round it has reached is refused too), else HMAC-tagged under
    ``secret``."""
    if (not isinstance(data, bytes | bytearray)
            or not _HB.size + TAG_SIZE <= len(data) <= _HB.size + MAX_CONTACT + SIGNATURE_SIZE):
        raise ProtocolError("heartbeat has an impossible size")
    data = bytes(data)
    magic, version, tag_run, base, peer, seq, rnd, records, done, digest, shash, closed, cdigest, examples, clen = (
        _HB.unpack_from(data))
    if magic != b"HB" or version not in TRAILER_SIZE or done > 1 or closed < -1:
        raise ProtocolError("not a onebyte heartbeat")
    trailer = TRAILER_SIZE[version]
    if clen > MAX_CONTACT:
        raise ProtocolError(f"heartbeat has an impossible size (a contact of {clen} bytes)")
    if len(data) != _HB.size + clen + trailer:
        raise ProtocolError("heartbeat length does not match its contact field")
    auth.check("heartbeat", version, peer, data[:-trailer], data[-trailer:], secret=secret, roster=roster)
    if roster is not None:
        until = roster.until(peer)
        if until is not None and rnd >= until:
            raise ProtocolError(f"heartbeat of key {roster.name(peer)!r}, revoked from round {until}")
    try:
        contact = data[_HB.size:-trailer].decode()
    except UnicodeDecodeError:
        raise ProtocolError("heartbeat contact is not UTF-8") from None
    hb = Heartbeat(tag_run, base, peer, seq, rnd, records, bool(done), digest, shash, closed, cdigest, contact,
                   examples)
    if tag_run != run_tag:
        raise ForeignRun(hb)
    return hb


class Membership:
    """The latest heartbeat of every peer and when its sequence number last moved.

    Thread-safe: ``observe`` may run on server threads while the round loop calls ``live``.
    ``latest`` and ``seen_at`` are the tables themselves (for reading single entries); to
    iterate, use ``live``, ``peers``, ``get`` and ``seen``, which read under the lock."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.latest: dict[int, Heartbeat] = {}
        self.seen_at: dict[int, float] = {}
        self._lock = threading.Lock()

    def observe(self, hb: Heartbeat, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            old = self.latest.get(hb.peer_id)
            if old is None or hb.seq != old.seq or hb.contact != old.contact:
                self.seen_at[hb.peer_id] = now
            elif old.round > hb.round:  # the same heartbeat again: keep the round its records showed
                hb = replace(hb, round=old.round)
            self.latest[hb.peer_id] = hb

    def heard(self, peer_id: int, round_: int, now: float | None = None) -> None:
        """An authentic record of ``round_`` pushed by ``peer_id`` itself: the peer is live, and its
        round is at least ``round_`` (it measures a round before it moves past it). A peer whose
        heartbeat we never had stays unknown: we would not know how to reach it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hb = self.latest.get(peer_id)
            if hb is None:
                return
            self.seen_at[peer_id] = now
            if hb.round < round_:
                self.latest[peer_id] = replace(hb, round=round_)

    def live(self, now: float | None = None, ttl: float | None = None) -> dict[int, Heartbeat]:
        """A copy: the peers whose ``seq`` moved within ``ttl`` (default: the table's) seconds of ``now``."""
        now = time.monotonic() if now is None else now
        ttl = self.ttl if ttl is None else ttl
        with self._lock:
            return {p: hb for p, hb in self.latest.items() if now - self.seen_at[p] <= ttl}

    def lost(self, within: float, now: float | None = None) -> set[int]:
        """Peers that were live within ``within`` seconds, are not now, and never said they were done:
        cut off by a partition, or crashed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return {p for p, hb in self.latest.items()
                    if self.ttl < now - self.seen_at[p] <= within and not hb.done}

    def peers(self) -> dict[int, Heartbeat]:
        """A copy of every peer's latest heartbeat, live or not."""
        with self._lock:
            return dict(self.latest)

    def get(self, peer_id: int) -> Heartbeat | None:
        """The latest heartbeat of ``peer_id``, or None if it was never seen."""
        with self._lock:
            return self.latest.get(peer_id)

    def seen(self, peer_id: int) -> float | None:
        """When (``time.monotonic``, or the injected ``now``) ``peer_id``'s seq last moved."""
        with self._lock:
            return self.seen_at.get(peer_id)
