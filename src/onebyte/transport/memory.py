"""An in-memory transport: peers in one process share a hub.

It is meant to be an honest twin of the hivemind transport, not a kinder one:

* a request runs the serving peer's handler on its own thread and gives up after the timeout
  with ``NetworkTimeout`` (the server's work may still complete, as on a real network); a handler
  that fails reaches the requester as ``PeerUnreachable``, as a dropped stream does;
* ``MemoryHub(bundle=E)`` publishes a peer's records of rounds [kE, kE+E) only once it publishes
  for round kE+E-1 (or closes), as the DHT's bundles do, and ``MemoryHub(delay=s)`` makes what
  reaches the hub visible only ``s`` seconds later, as a DHT store takes time to land;
* partitions: peers given group labels see only what their own group published.

The defaults (``bundle=1, delay=0``) publish at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from ..errors import NetworkTimeout, PeerUnreachable
from .base import Handler, Transport

__all__ = ["MemoryHub", "MemoryTransport"]

log = logging.getLogger(__name__)


class MemoryHub:
    """What every peer of one in-process swarm can see: records, heartbeats, request handlers.

    ``bundle`` (E, rounds) and ``delay`` (seconds) hold publication back as the DHT does;
    ``clock`` is injectable so tests can move time by hand."""

    def __init__(self, bundle: int = 1, delay: float = 0.0, clock: Callable[[], float] = time.monotonic):
        if bundle < 1 or delay < 0:
            raise ValueError("bundle must be >= 1 round and delay >= 0 seconds")
        self.bundle = bundle
        self.delay = delay
        self.clock = clock
        self.lock = threading.Lock()
        self.records: dict[int, dict[str, bytes]] = defaultdict(dict)  # round -> {owner: record}
        self.visible_at: dict[tuple[int, str], float] = {}  # (round, owner) -> when others see it
        self.beats: dict[str, bytes] = {}
        self.handlers: dict[str, Handler] = {}
        self.group: dict[str, int] = {}

    def partition(self, groups: list[list[str]]) -> None:
        """Split peers (by contact) into groups that cannot see each other; ``heal`` undoes it."""
        with self.lock:
            for g, members in enumerate(groups):
                for m in members:
                    self.group[m] = g

    def heal(self) -> None:
        with self.lock:
            self.group.clear()

    def _visible(self, me: str, other: str) -> bool:
        return self.group.get(me, 0) == self.group.get(other, 0)

    def _store(self, owner: str, records: dict[int, bytes]) -> None:
        when = self.clock() + self.delay
        with self.lock:
            for round_, record in records.items():
                self.records[round_][owner] = record
                self.visible_at[(round_, owner)] = when


class MemoryTransport(Transport):
    """One peer's view of a ``MemoryHub``. Each owner has one slot per round, like a signed subkey.

    What a partitioned peer published stays in the hub, but is hidden from the other side
    until ``heal`` (as DHT values stored in separate swarms become visible after they merge)."""

    def __init__(self, hub: MemoryHub, name: str, join: tuple[str, ...] = ()):
        self.hub = hub
        self.name = name
        self.join = tuple(join)  # names of the peers to join through (``join_contacts``)
        self.bytes_sent = 0
        self.bytes_received = 0
        self._count_lock = threading.Lock()  # server threads count too
        self._bundles: dict[int, dict[int, bytes]] = {}  # bundle k -> {round: record}, unpublished
        self._closed = False

    def _count(self, sent: int = 0, received: int = 0) -> None:
        with self._count_lock:
            self.bytes_sent += sent
            self.bytes_received += received

    @property
    def contact(self) -> str:
        return self.name

    def publish(self, round_: int, record: bytes, now: bool = False) -> None:
        e = self.hub.bundle
        k = round_ // e
        self._bundles.setdefault(k, {})[round_] = bytes(record)
        if round_ % e == e - 1:
            self._flush(k)
        elif now:
            self._flush(k, keep=True)

    def _flush(self, k: int, keep: bool = False) -> None:
        bundle = dict(self._bundles.get(k, {})) if keep else self._bundles.pop(k, {})
        if bundle:
            self.hub._store(self.name, bundle)
            self._count(sent=sum(map(len, bundle.values())))

    def records(self, round_: int) -> list[bytes]:
        hub = self.hub
        now = hub.clock()
        with hub.lock:
            out = [r for owner, r in hub.records.get(round_, {}).items()
                   if hub._visible(self.name, owner) and hub.visible_at.get((round_, owner), now) <= now]
        self._count(received=sum(map(len, out)))
        return out

    def announce(self, heartbeat: bytes, ttl: float | None = None) -> None:  # no expiry in memory
        with self.hub.lock:
            self.hub.beats[self.name] = bytes(heartbeat)
        self._count(sent=len(heartbeat))

    def heartbeats(self) -> list[bytes]:
        with self.hub.lock:
            out = [b for owner, b in self.hub.beats.items() if self.hub._visible(self.name, owner)]
        self._count(received=sum(map(len, out)))
        return out

    def serve(self, handler: Handler) -> None:
        def served(request: bytes) -> bytes:
            reply = handler(request)
            self._count(sent=len(reply), received=len(request))
            return reply

        with self.hub.lock:
            self.hub.handlers[self.name] = served

    def request(self, contact: str, payload: bytes, timeout: float) -> bytes:
        with self.hub.lock:
            handler = self.hub.handlers.get(contact)
            visible = self.hub._visible(self.name, contact)
        if handler is None or not visible:
            raise PeerUnreachable(f"peer {contact} is not reachable")
        self._count(sent=len(payload))
        replies: list[bytes] = []
        errors: list[Exception] = []
        done = threading.Event()

        def serve_one() -> None:
            try:
                replies.append(bytes(handler(bytes(payload))))
            except Exception as exc:  # the server's failure is the requester's dropped stream
                errors.append(exc)
            finally:
                done.set()

        # a daemon thread, as a remote server is not ours to join: it may outlive the timeout
        threading.Thread(target=serve_one, name=f"memory-serve-{contact}", daemon=True).start()
        if not done.wait(timeout):
            raise NetworkTimeout(f"request to peer {contact} timed out after {timeout:g}s")
        if not replies:
            cause = errors[0] if errors else None
            log.debug("peer %s failed to answer: %r", contact, cause)
            raise PeerUnreachable(f"peer {contact} dropped the request: {cause!r}") from cause
        self._count(received=len(replies[0]))
        return replies[0]

    def flush(self) -> None:
        """Publish every record still held back in an unfinished bundle."""
        for k in sorted(self._bundles):
            self._flush(k)

    def close(self) -> None:
        """Publish unfinished bundles (as ``DhtTransport.close`` does), then leave the hub."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        with self.hub.lock:
            self.hub.handlers.pop(self.name, None)
            self.hub.beats.pop(self.name, None)

    def join_contacts(self) -> list[str]:
        return [j for j in self.join if j != self.name]
