"""The transport interface a peer programs against."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["Transport", "Handler"]

#: Answers one bulk request (request bytes -> response bytes); runs on the serving peer.
Handler = Callable[[bytes], bytes]


#: The slowest link a bulk transfer (a catch-up download) is given time for, in bytes/s: 16 kbit/s,
#: a quarter of the thin-link lab's line. The requester's timeout and the server's linger both use it.
BULK_RATE = 2000.0


def one_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's message (hivemind's can span many)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class Transport(ABC):
    """Publish-and-poll messaging plus point-to-point requests.

    * ``publish(round, record)`` puts this peer's record for a round where every peer can read it;
      the slot belongs to this peer (no one else can overwrite it).
    * ``records(round)`` returns every record visible for a round (raw bytes, unvalidated).
    * ``announce``/``heartbeats``: each peer's latest heartbeat (raw bytes, unvalidated).
    * ``send``: a one-way message (a push) to the same handler, on a long-lived channel where the
      transport has one.
    * ``serve``/``request``: bulk transfers (snapshots, ledger ranges) to a peer named by the
      ``contact`` string it put in its heartbeat.
    Everything that comes back is hostile until the caller validates it.

    A transport is a context manager: ``with DhtTransport(...) as net:`` closes it on the way
    out, and ``close()`` may be called any number of times.
    """

    bytes_sent: int = 0  # the payloads this transport handed over (requests, replies, DHT values)
    bytes_received: int = 0
    private: bool = False  # no inbound connections reach this peer (behind NAT): nobody can greet it

    def wire_bytes(self) -> dict[str, int] | None:
        """``{"sent", "received"}``: bytes this peer's processes put on and took off the wire, all
        protocol overhead included; None where the transport cannot see the wire (in memory)."""
        return None

    @property
    @abstractmethod
    def contact(self) -> str:
        """How other peers address requests to this one."""

    @property
    def addresses(self) -> list[str]:
        """Addresses others can join through (multiaddrs for hivemind)."""
        return [self.contact]

    @abstractmethod
    def publish(self, round_: int, record: bytes, now: bool = False) -> None:
        """Store our record of ``round_`` in the DHT copy. Records are bundled, a store every few
        rounds; ``now`` stores its bundle so far at once (a record whose pushes failed, which a peer
        is waiting for), and later records of that bundle are stored with it."""

    @abstractmethod
    def records(self, round_: int) -> list[bytes]: ...

    @abstractmethod
    def announce(self, heartbeat: bytes, ttl: float | None = None) -> None:
        """Store our heartbeat where peers discover us, for ``ttl`` seconds (None: the transport's)."""

    @abstractmethod
    def heartbeats(self) -> list[bytes]: ...

    @abstractmethod
    def serve(self, handler: Handler) -> None: ...

    @abstractmethod
    def request(self, contact: str, payload: bytes, timeout: float) -> bytes:
        """Send a request and wait at most ``timeout`` seconds for the reply.

        Raises ``PeerUnreachable`` (unknown, gone, or it dropped the request) or ``NetworkTimeout``
        (no reply in time; the server's work may still complete), both ``NetworkError``."""

    def send(self, contact: str, payload: bytes, timeout: float) -> None:
        """A one-way message to a peer's handler (its reply is dropped): a pushed record or heartbeat.
        Transports with long-lived channels send it on the one open to that peer; here, a request.
        Raises as ``request`` does when the message could not be handed over."""
        self.request(contact, payload, timeout)

    def join_contacts(self) -> list[str]:
        """The contacts (for ``request``) of the peers this one was told to join through."""
        return []

    def connect(self, addresses: list[str]) -> None:  # noqa: B027 - optional hook
        """Dial more peers at runtime (no-op where discovery is implicit)."""

    def rejoin(self) -> bool:
        """Dial the join peers again if they could not be reached at start (over a slow link both
        tries can fail, and a peer nobody knows stays alone); a no-op once they were reached.
        Whether this peer is connected to them (True where discovery is implicit)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources; idempotent (a second call does nothing)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
