"""What a peer answers: one method per verb of ``protocol``, as hivemind names its ``rpc_*``.

The server sees the replica (to read records, snapshots and the ledger) and doors into the rest
of the peer: ``offer`` (every record received goes through the intake's checks), ``receive`` (a
push: its record through the same checks, its heartbeat to membership), ``meet`` (a newcomer's
heartbeat to membership, and the heartbeats we know in return), ``revoke`` (signed key
revocations to the intake, those in force in return) and ``position`` (the round this peer is
at, which a newcomer starts from). It changes nothing itself except by offering records.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .pool import TAIL_ROUNDS
from .protocol import coefficients_reply, ledger_reply, pack_blobs, parse
from .replica import Replica

__all__ = ["Server"]


class Server:
    def __init__(self, replica: Replica, offer: Callable[[bytes], bool], receive: Callable[[bytes, bytes], None],
                 position: Callable[[], int], config: Callable[[], bytes], flush: Callable[[], int],
                 meet: Callable[[bytes], list[bytes]] = lambda _hb: [],
                 revoke: Callable[[list[bytes]], list[bytes]] = lambda _revs: []):
        self.replica = replica
        self.offer, self.receive, self.position, self.config, self.flush = offer, receive, position, config, flush
        self.meet, self.revoke = meet, revoke

    def handle(self, request: bytes) -> bytes:
        """Answer one request; anything malformed or unknown gets an empty reply."""
        parsed = parse(request)
        if parsed is None:
            return b""
        verb, body = parsed
        return getattr(self, f"rpc_{verb.name.lower()}")(body)

    # ----------------------------------------------------------------- pushed to us
    def rpc_rec(self, body: tuple[bytes, bytes]) -> bytes:
        """A record pushed by its author, then its heartbeat; a greeting is a heartbeat alone."""
        self.receive(*body)  # validated like any other
        return b""

    def rpc_meet(self, heartbeat: bytes) -> bytes:
        """A newcomer's heartbeat (validated like any other); the heartbeats we know, for it."""
        return pack_blobs(self.meet(heartbeat))

    def rpc_revk(self, revocations: list[bytes]) -> bytes:
        """Signed key revocations (each checked like a record); every one in force here in return."""
        return b"".join(self.revoke(revocations))

    def rpc_put(self, records: list[bytes]) -> bytes:
        for data in records:
            self.offer(data)  # each validated like any other record
        return b""

    def rpc_conf(self, _body: None) -> bytes:
        """Our configuration and site keys (``Run.shared``), so a peer can name what differs."""
        return self.config()

    # ----------------------------------------------------------------- read from us
    def rpc_rnd(self, round_: int) -> bytes:
        rep = self.replica
        with rep.lock:
            return pack_blobs([rec.to_bytes() for rec in rep.records.values() if rec.round == round_])

    def rpc_ids(self, _body: None) -> bytes:
        rep = self.replica
        with rep.lock:
            return b"".join(rid[:8] for rid in rep.records)

    def rpc_get(self, prefixes: list[bytes]) -> bytes:
        rep = self.replica
        with rep.lock:
            by_prefix = {rid[:8]: rec for rid, rec in rep.records.items()}
            wanted = (by_prefix.get(p) for p in prefixes)
            return pack_blobs([r.to_bytes() for r in wanted if r is not None])

    def rpc_size(self, _body: None) -> bytes:
        """What SNAP and LEDG would cost, so a newcomer picks the smaller."""
        rep = self.replica
        with rep.lock:
            ledger = sum(len(r.to_bytes()) + 4 for r in rep.applied_records())
            return struct.pack("<QQ", 4 * rep.state.layout.size + 4096 + ledger, ledger)

    def rpc_ledg(self, rounds: tuple[int, int, int] | None) -> bytes:
        rep = self.replica
        with rep.lock:
            self.flush()
            recs = rep.applied_records()
            if rounds is not None:
                recs = [r for r in recs if rounds[0] <= r.round < rounds[1]]
            raws, position = [r.to_bytes() for r in recs], self.position()
        return ledger_reply(position, raws, rounds[2] if rounds is not None else 0)

    def rpc_snap(self, _body: None) -> bytes:
        rep = self.replica
        with rep.lock:
            self.flush()
            snap = rep.snapshot(self.position())
            applied = [r.to_bytes() for r in rep.applied_records()]
            return struct.pack("<Q", len(snap)) + snap + pack_blobs(applied)

    def rpc_coef(self, _body: None) -> bytes:
        """Our coefficient snapshot (seed pool) and the records of the last TAIL_ROUNDS rounds it
        includes, which the newcomer holds as records; nothing in a run without a pool."""
        rep = self.replica
        if rep.pool is None:
            return b""
        with rep.lock:
            position = self.position()
            coefs = rep.coefficients(position).to_bytes()
            tail_from = max(rep.base_round + 1, position - TAIL_ROUNDS, 0)
            tail = [r.to_bytes() for r in rep.applied_records() if r.round >= tail_from]
        return coefficients_reply(coefs, tail_from, tail)
