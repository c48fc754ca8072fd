"""Pushes: our records and heartbeats to each live peer, on the transport's channel to it.

A push (REC) is tried twice. A record whose push still failed goes to the DHT copy, that record
alone and at once, where the peer that missed it reads it if its author cannot be reached. As a NAT
relay, a record another peer pushed to us goes on to every other live peer (``forward``); as a
relay in the round's tree (``overlay``), records for one neighbour queue in its outbox and go out
together, one message for whatever queued while the previous one was in flight (``relay``).
Pushes run on their own executor beside the round loop (on a slow link each costs a stream's round
trips); DHT stores run on the gossip's background executor, one at a time with its heartbeat
exchanges.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from .client import Client
from .errors import NetworkError, ProtocolError
from .membership import Heartbeat
from .protocol import MAX_PUT, push, put_request

__all__ = ["Pushes", "PUSH_WORKERS", "STORED_WINDOW"]

log = logging.getLogger(__name__)

#: Pushes in flight at once (one per live peer per round; the rest queue).
PUSH_WORKERS = 8
#: A record whose push failed is stored in the DHT once: the rounds remembered for that.
STORED_WINDOW = 16
#: A relay's outbox to one neighbour is emptied this many times by one flush before it yields its
#: worker to the other neighbours' (and queues itself again if more came).
FLUSHES = 8

#: Called with the neighbour a push could not reach (and, for a relayed record, the record).
Missed = Callable[[Heartbeat], None]


class Pushes:
    """Our pushes, their outcomes per peer, and when each peer last got our heartbeat.

    ``background`` runs the DHT copies (the gossip's executor for DHT work)."""

    def __init__(self, client: Client, background: ThreadPoolExecutor):
        self.client, self.net, self._background = client, client.net, background
        self._pusher = ThreadPoolExecutor(max_workers=PUSH_WORKERS, thread_name_prefix="onebyte-push")
        self._pushes: dict[str, dict[str, int]] = {}  # per peer: our records pushed to it, delivered or failed
        self._told: dict[int, float] = {}  # per peer: when a push last carried our heartbeat to it
        self._stored: set[int] = set()  # rounds of our records whose push failed and went to the DHT
        self._outbox: dict[int, list[tuple[bytes, Callable[[Heartbeat, bytes], None] | None]]] = {}
        self._flushing: set[int] = set()  # neighbours whose outbox a worker is emptying
        self._lock = threading.Lock()
        self.relayed = 0  # records of others passed on, as a relay
        self.dht_copies = 0  # our records stored in the DHT copy (none while every push is delivered)
        self.relay_messages = 0  # messages that carried relayed records (several coalesce into one)
        self.closed = False

    def quiet(self, peers: Iterable[Heartbeat], now: float, interval: float) -> list[Heartbeat]:
        """Those of ``peers`` that no push has carried our heartbeat to within ``interval``."""
        return [o for o in peers if now - self._told.get(o.peer_id, -1e9) >= interval]

    def send(self, other: Heartbeat, message: bytes, with_heartbeat: bool = False,
             record: tuple[int, bytes] | None = None, missed: Missed | None = None) -> None:
        """Queue ``message`` (``protocol.push``) to ``other``; ``record``: (round, bytes) of our
        record in it, stored in the DHT if the push fails twice, when ``missed(other)`` is called too."""
        self._pusher.submit(self._push_one, other, message, with_heartbeat, record, missed)

    def relay(self, other: Heartbeat, record: bytes, missed: Callable[[Heartbeat, bytes], None] | None) -> None:
        """As a relay in the round's tree: queue ``record`` for ``other``. Whatever is queued for one
        neighbour goes out as one message (REC for one record, PUT for several) once the message
        before it is handed over; ``missed(other, record)`` for each record of a batch that failed twice."""
        with self._lock:
            self._outbox.setdefault(other.peer_id, []).append((record, missed))
            start = other.peer_id not in self._flushing
            self._flushing.add(other.peer_id)
        if start and not self.closed:
            self._pusher.submit(self._flush, other)

    def tell(self, peers: Iterable[Heartbeat], hb: bytes, me: int) -> None:
        """Send our heartbeat ``hb`` directly to each of ``peers`` but ``me`` (a push with no record)."""
        data = push(b"", hb)
        for other in peers:
            if other.peer_id != me:
                self.send(other, data, True)

    def deliver(self, peers: Iterable[Heartbeat], message: bytes) -> None:
        """Push our heartbeat ``message`` to each of ``peers`` now, on this thread (each push bounded
        by ``push_timeout``): a finished peer's exchange that skips the DHT still tells them first."""
        for other in peers:
            self._push_one(other, message, True)

    def store(self, r: int, raw: bytes) -> None:
        """Queue the DHT copy of our record of round r (bundled: a DHT store every few rounds)."""
        self._background.submit(self._store, r, raw)

    def forward(self, record: bytes, author: int, peers: Iterable[Heartbeat]) -> None:
        """As a relay: pass a record its author pushed to us on to each of ``peers`` but its author."""
        data = push(record, b"")
        for other in peers:
            if other.peer_id != author:
                self._pusher.submit(self._forward_one, other, data)

    def _store(self, r: int, raw: bytes, now: bool = False) -> None:
        try:
            self.net.publish(r, raw, now)
            with self._lock:
                self.dht_copies += 1
        except (ProtocolError, NetworkError) as exc:  # the DHT copy is only the fallback for lost pushes
            log.info("DHT copy of round %d not stored: %s", r, exc)

    def _push_one(self, other: Heartbeat, data: bytes, with_heartbeat: bool = False,
                  record: tuple[int, bytes] | None = None, missed: Missed | None = None) -> None:
        # One retry before the DHT fallback: on a lossy link a lone push fails now and then, and a DHT
        # store walks the DHT (about 17 KB with 4 peers: two seconds of a 64 kbit/s line for a 1 KB
        # record). Only the record whose push failed is stored: when a failure turned on a DHT copy
        # of every record for a minute, gradient codes fell to 0.28 of a thin-link peer's bytes.
        if not (self._send(other, data, "push") or (not self.closed and self._send(other, data, "push retry"))):
            outcome = "failed"
            with self._lock:
                stored = record is None or record[0] in self._stored
                if not stored:  # the pushes of one record fail together: store it once
                    self._stored = {r for r in self._stored if r > record[0] - STORED_WINDOW} | {record[0]}
            if not stored and not self.closed:
                self._background.submit(self._store, *record, True)  # where the peer that missed it reads it
            if missed is not None and not self.closed:
                missed(other)
        else:
            outcome = "delivered"
            if with_heartbeat:
                self._told[other.peer_id] = time.monotonic()
        with self._lock:
            counts = self._pushes.setdefault(f"{other.peer_id:x}", {"delivered": 0, "failed": 0})
            counts[outcome] += 1

    def _send(self, other: Heartbeat, data: bytes, what: str) -> bool:
        """One message on our channel to ``other``; whether it was handed over."""
        try:
            self.client.rec(other.contact, data)
        except (ProtocolError, NetworkError) as exc:
            log.debug("%s to peer %x failed: %s", what, other.peer_id, exc)
            return False
        return True

    def _flush(self, other: Heartbeat) -> None:
        """Empty ``other``'s outbox, a batch per message (bounded: FLUSHES batches, then requeued)."""
        for _ in range(FLUSHES):
            with self._lock:
                queued = self._outbox.pop(other.peer_id, [])
                batch, rest = queued[:MAX_PUT], queued[MAX_PUT:]
                if rest:
                    self._outbox[other.peer_id] = rest
                if not batch:
                    self._flushing.discard(other.peer_id)
                    return
            records = [rec for rec, _ in batch]
            # one-way, on our channel to the peer, like a push: REC for a lone record, else PUT
            data = push(records[0], b"") if len(records) == 1 else put_request(records)
            if self._send(other, data, "relaying") or (not self.closed and self._send(other, data, "relay retry")):
                with self._lock:
                    self.relayed += len(records)
                    self.relay_messages += 1
            elif not self.closed:
                for rec, missed in batch:
                    if missed is not None:
                        missed(other, rec)
        with self._lock:
            self._flushing.discard(other.peer_id)
            more = bool(self._outbox.get(other.peer_id))
            if more:
                self._flushing.add(other.peer_id)
        if more and not self.closed:
            self._pusher.submit(self._flush, other)

    def _forward_one(self, other: Heartbeat, data: bytes) -> None:
        if self._send(other, data, "relaying"):
            with self._lock:
                self.relayed += 1

    def counts(self) -> dict[str, dict[str, int]]:
        """Per peer: our records pushed to it, delivered or failed."""
        with self._lock:
            return {p: dict(c) for p, c in sorted(self._pushes.items())}

    def close(self) -> None:
        """Drop pushes not started (each one in flight is bounded by ``push_timeout``)."""
        self.closed = True
        self._pusher.shutdown(wait=True, cancel_futures=True)
