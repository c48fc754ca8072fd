"""An in-memory transport: peers in one process share a hub. Partitions are simulated by
giving peers group labels; peers see only what their own group published."""

from __future__ import annotations

import threading
from collections import defaultdict

from ..errors import ProtocolError
from .base import Handler, Transport

__all__ = ["MemoryHub", "MemoryTransport"]


class MemoryHub:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[int, dict[str, bytes]] = defaultdict(dict)  # round -> {owner: record}
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


class MemoryTransport(Transport):
    """One peer's view of a ``MemoryHub``. Each owner has one slot per round, like a signed subkey.

    What a partitioned peer published stays in the hub, but is hidden from the other side
    until ``heal`` (as DHT values stored in separate swarms become visible after they merge)."""

    def __init__(self, hub: MemoryHub, name: str):
        self.hub = hub
        self.name = name
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def contact(self) -> str:
        return self.name

    def publish(self, round_: int, record: bytes) -> None:
        with self.hub.lock:
            self.hub.records[round_][self.name] = bytes(record)
        self.bytes_sent += len(record)

    def records(self, round_: int) -> list[bytes]:
        with self.hub.lock:
            out = [r for owner, r in self.hub.records.get(round_, {}).items() if self.hub._visible(self.name, owner)]
        self.bytes_received += sum(map(len, out))
        return out

    def announce(self, heartbeat: bytes) -> None:
        with self.hub.lock:
            self.hub.beats[self.name] = bytes(heartbeat)
        self.bytes_sent += len(heartbeat)

    def heartbeats(self) -> list[bytes]:
        with self.hub.lock:
            out = [b for owner, b in self.hub.beats.items() if self.hub._visible(self.name, owner)]
        self.bytes_received += sum(map(len, out))
        return out

    def serve(self, handler: Handler) -> None:
        with self.hub.lock:
            self.hub.handlers[self.name] = handler

    def request(self, contact: str, payload: bytes, timeout: float) -> bytes:
        with self.hub.lock:
            handler = self.hub.handlers.get(contact)
            visible = self.hub._visible(self.name, contact)
        if handler is None or not visible:
            raise ProtocolError(f"peer {contact} is not reachable")
        self.bytes_sent += len(payload)
        reply = handler(bytes(payload))
        self.bytes_received += len(reply)
        return reply

    def close(self) -> None:
        with self.hub.lock:
            self.hub.handlers.pop(self.name, None)
            self.hub.beats.pop(self.name, None)
