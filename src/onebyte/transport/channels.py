"""Push channels: one long-lived libp2p stream to each neighbour, carrying varint-framed messages.

A push (a record, a heartbeat now and then) then costs its bytes plus the stream's framing (yamux
12 B, the secure channel's 18 B) and the TCP/IP headers, with no stream set-up, no protocol
negotiation and no reply; a stream per push cost several round trips and about a kilobyte each.
The far side never writes on a channel: its end (EOF, reset) is watched, and the next push opens a
new one. Delivery is TCP's: a peer that dies takes unread messages with it.

``Channels`` is the sending side, run on the transport's asyncio loop; ``receive`` is the handler
of the far side's end. ``DhtTransport`` owns both (``send``, ``serve``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ProtocolError
from .base import one_line

__all__ = ["CHANNEL", "MAX_FRAME", "Channels", "receive"]

log = logging.getLogger(__name__)

#: The protocol name of a push channel's stream.
CHANNEL = "onebyte.push"
#: The largest message a push channel carries (a record of MAX_COUNT float32 scalars and a
#: heartbeat fit); a longer length prefix means a broken or hostile sender and closes the channel.
MAX_FRAME = 80 << 10


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One varint-framed message; None at a clean end of stream, ProtocolError on a bad prefix."""
    n = 0
    for i in range(4):  # 28 bits: more than MAX_FRAME
        try:
            byte = (await reader.readexactly(1))[0]
        except asyncio.IncompleteReadError:
            if i == 0:
                return None
            raise ProtocolError("push channel ended inside a length prefix") from None
        n |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            break
    else:
        raise ProtocolError("push channel length prefix too long")
    if n > MAX_FRAME:
        raise ProtocolError(f"push channel message of {n} bytes (limit {MAX_FRAME})")
    return await reader.readexactly(n)


def frame(payload: bytes) -> bytes:
    """``payload`` as a channel writes it: its varint length, then its bytes (``ProtocolError`` if
    it is over ``MAX_FRAME``)."""
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"push of {len(payload)} bytes is over the channel limit of {MAX_FRAME}")
    return _varint(len(payload)) + payload


async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  on_frame: Callable[[bytes], Awaitable[None]], what: str = "push channel") -> None:
    """The far side's end of a channel: ``on_frame`` for each message, in order, one at a time (a
    pushed heartbeat is observed before the next record). A broken or hostile sender loses its
    channel, nothing more."""
    try:
        while (message := await _read_frame(reader)) is not None:
            await on_frame(message)
    except Exception as exc:
        log.debug("%s closed: %s", what, one_line(exc))
    finally:
        writer.close()


class Channels:
    """Our push streams, one per contact, opened on the first push and kept.

    ``open_stream(contact)`` opens a stream to a contact on the channel protocol and returns its
    (reader, writer); every method but ``send``'s coroutine runs on the transport's loop."""

    def __init__(self, open_stream: Callable[[str], Awaitable[tuple[Any, asyncio.StreamWriter]]]):
        self._open_stream = open_stream
        self.writers: dict[str, asyncio.StreamWriter] = {}  # contact -> our long-lived push stream
        self._opening: dict[str, asyncio.Lock] = {}  # one opener and one writer per channel at a time

    async def put(self, contact: str, data: bytes) -> None:
        """Write one framed message (``frame``) on our channel to ``contact``, opening it (or a new
        one, once, if the old one broke) as needed."""
        async with self._opening.setdefault(contact, asyncio.Lock()):
            writer = self.writers.get(contact)
            for attempt in (0, 1):
                if writer is None or writer.is_closing():
                    writer = await self._open(contact)
                try:
                    writer.write(data)
                    await writer.drain()
                    return
                except (ConnectionError, OSError):
                    self._forget(contact, writer)
                    writer = None
                    if attempt:
                        raise

    async def close(self) -> None:
        """Close every channel (the far side sees its end; a later ``put`` opens a new one)."""
        for contact, writer in list(self.writers.items()):
            self._forget(contact, writer)

    async def _open(self, contact: str) -> asyncio.StreamWriter:
        reader, writer = await self._open_stream(contact)
        self.writers[contact] = writer
        asyncio.ensure_future(self._watch(contact, reader, writer))
        return writer

    async def _watch(self, contact: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The far side never writes on a channel: anything from it, or its end, retires the channel."""
        try:
            await reader.read(1)
        except Exception as exc:
            log.debug("push channel to %s… ended: %s", contact[:16], one_line(exc))
        self._forget(contact, writer)

    def _forget(self, contact: str, writer: asyncio.StreamWriter) -> None:
        if self.writers.get(contact) is writer:
            del self.writers[contact]
        writer.close()

