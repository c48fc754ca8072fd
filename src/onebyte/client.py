"""Asking peers: one method per verb of ``protocol``, the client twin of ``Server.rpc_*``.

Each method builds the request, picks its timeout (a named one of ``PeerOptions``), sends it over
the ``Transport`` and parses the reply with ``protocol``'s bounds. It raises ``ProtocolError`` for
a malformed reply and ``NetworkError`` for a peer that cannot be reached or is too slow; callers
decide what a failure means (most log it and move on: anti-entropy repairs it later).
"""

from __future__ import annotations

from collections.abc import Callable

from .options import PeerOptions
from .protocol import (
    Verb,
    get_request,
    ledger_request,
    meet_request,
    parse_coefficients,
    parse_config,
    parse_ids,
    parse_ledger,
    parse_meet,
    parse_revocations,
    parse_sizes,
    parse_snapshot,
    put_request,
    revocations_request,
    round_request,
    unpack_blobs,
)
from .transport.base import BULK_RATE, Transport

__all__ = ["Client"]


class Client:
    """The requests one peer makes of another, addressed by ``contact``, over ``net``."""

    def __init__(self, net: Transport, options: Callable[[], PeerOptions]):
        self.net, self._options = net, options

    @property
    def opts(self) -> PeerOptions:
        return self._options()

    def bulk_timeout(self, size: int | None) -> float:
        """A download of ``size`` bytes may take ``request_timeout`` plus its time at BULK_RATE."""
        return self.opts.request_timeout + (size or 0) / BULK_RATE

    # ----------------------------------------------------------------- pushed to them
    def rec(self, contact: str, message: bytes) -> None:
        """REC, on our long-lived channel to the peer (``protocol.push``: a record, a heartbeat or
        both, built once for every peer it goes to), within ``push_timeout``."""
        self.net.send(contact, message, self.opts.push_timeout)

    def meet(self, contact: str, heartbeat: bytes) -> list[bytes]:
        """MEET: our heartbeat there, the heartbeats it knows back (still to be authenticated)."""
        timeout = min(self.opts.request_timeout, self.opts.meet_timeout)
        return parse_meet(self.net.request(contact, meet_request(heartbeat), timeout))

    def revk(self, contact: str, revocations: list[bytes]) -> list[bytes]:
        """REVK: our revocations there, every one in force there back (still to be verified)."""
        reply = self.net.request(contact, revocations_request(revocations), self.opts.request_timeout)
        return parse_revocations(reply)

    def put(self, contact: str, records: list[bytes]) -> None:
        """PUT: records the peer lacks (at most ``MAX_PUT``)."""
        self.net.request(contact, put_request(records), self.opts.request_timeout)

    def conf(self, contact: str) -> dict:
        """CONF: the peer's configuration and site keys (``Run.shared``)."""
        return parse_config(self.net.request(contact, Verb.CONF.value, self.opts.request_timeout))

    # ----------------------------------------------------------------- read from them
    def rnd(self, contact: str, round_: int) -> list[bytes]:
        """RND: every record of ``round_`` the peer holds."""
        return unpack_blobs(self.net.request(contact, round_request(round_), self.opts.request_timeout))

    def ids(self, contact: str) -> set[bytes]:
        """IDS: the 8-byte prefixes of every record id the peer holds."""
        return parse_ids(self.net.request(contact, Verb.IDS.value, self.opts.request_timeout))

    def get(self, contact: str, prefixes: list[bytes]) -> list[bytes]:
        """GET: the records of those id prefixes."""
        return unpack_blobs(self.net.request(contact, get_request(prefixes), self.opts.request_timeout))

    def size(self, contact: str) -> tuple[int, int] | None:
        """SIZE: (snapshot bytes, ledger bytes), or None from a peer that does not know SIZE."""
        return parse_sizes(self.net.request(contact, Verb.SIZE.value, self.opts.request_timeout))

    def ledg(self, contact: str, rounds: range, timeout: float, limit: int) -> tuple[int, list[bytes], int]:
        """LEDG of ``rounds``: (the peer's round, the records, bytes on the wire). Asked for deflated,
        inflating to at most ``limit`` bytes; a peer older than the DEFLATE flag answers that with
        nothing, and is asked again plainly."""
        reply = self.net.request(contact, ledger_request(rounds, deflate=True), timeout)
        if reply:
            return (*parse_ledger(reply, deflated=True, limit=limit), len(reply))
        reply = self.net.request(contact, ledger_request(rounds), timeout)
        return (*parse_ledger(reply), len(reply))

    def snap(self, contact: str, size: int | None = None) -> tuple[bytes, list[bytes]]:
        """SNAP: (the peer's snapshot, the records it covers), ``size`` bytes announced (SIZE)."""
        return parse_snapshot(self.net.request(contact, Verb.SNAP.value, self.bulk_timeout(size)))

    def coef(self, contact: str, size: int | None = None) -> tuple[bytes, int, list[bytes]] | None:
        """COEF: (the peer's coefficient snapshot, the first round it sends as records, those records),
        or None from a peer with no seed pool or that does not know COEF (it answers nothing)."""
        reply = self.net.request(contact, Verb.COEF.value, self.bulk_timeout(size))
        return parse_coefficients(reply) if reply else None
