"""Records: the only thing peers exchange about training, in a versioned binary format.

Layout (little-endian), 39-byte header, then payload, then a 16-byte authentication tag::

    magic "OB" | version u8 | codec u8 | run tag 16B | round u32 | peer id u64 |
    first sample u32 | count u16 | exponent i8 | payload | HMAC-SHA256(secret, header+payload)[:16]

A record's *id* is SHA-256 of header+payload: it names the content, not the tag, so two
different records for one slot have different ids. Decoding checks every field and raises
``ProtocolError``; nothing is ever unpickled or parsed as text.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

import numpy as np

from . import codec as codec_mod
from .codec import Codec
from .errors import ProtocolError

__all__ = ["Record", "build_record", "decode_record", "SetDigest", "MAX_COUNT", "TAG_SIZE", "RUN_TAG_SIZE"]

MAGIC = b"OB"
VERSION = 1
RUN_TAG_SIZE = 16
TAG_SIZE = 16
MAX_COUNT = 4096
_HEADER = struct.Struct("<2sBB16sIQIHb")
HEADER_SIZE = _HEADER.size
MAX_RECORD_SIZE = HEADER_SIZE + codec_mod.payload_size(Codec.FLOAT32, MAX_COUNT) + TAG_SIZE


@dataclass(frozen=True)
class Record:
    """Peer ``peer_id`` measured ``count`` projected gradients in ``round`` at the directions of
    samples ``first_sample .. first_sample + count - 1``."""

    codec: Codec
    run_tag: bytes
    round: int
    peer_id: int
    first_sample: int
    count: int
    exponent: int
    payload: bytes
    tag: bytes = b"\0" * TAG_SIZE

    def body(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, int(self.codec), self.run_tag, self.round,
                            self.peer_id, self.first_sample, self.count, self.exponent) + self.payload

    def to_bytes(self) -> bytes:
        return self.body() + self.tag

    @property
    def record_id(self) -> bytes:
        return hashlib.sha256(self.body()).digest()

    @property
    def slot(self) -> tuple[bytes, int, int, int]:
        """(run, round, peer, first sample): a peer may publish one record per slot."""
        return (self.run_tag, self.round, self.peer_id, self.first_sample)

    def gradients(self) -> np.ndarray:
        """The decoded projected gradients (exact float64)."""
        return codec_mod.decode(self.codec, self.exponent, self.payload, self.count)

    def signed(self, secret: bytes) -> Record:
        """This record with its authentication tag computed under ``secret``."""
        return Record(self.codec, self.run_tag, self.round, self.peer_id, self.first_sample,
                      self.count, self.exponent, self.payload, _tag(secret, self.body()))

    def payload_bytes(self) -> int:
        """What the gradients cost: the payload, plus the exponent byte for ``byte``."""
        return len(self.payload) + (1 if self.codec is Codec.BYTE else 0)


def _tag(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()[:TAG_SIZE]


def decode_record(data: bytes, *, run_tag: bytes | None = None, secret: bytes | None = None) -> Record:
    """Parse and validate one record; with ``run_tag``/``secret`` also check run and tag."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("record is not bytes")
    data = bytes(data)
    if len(data) < HEADER_SIZE + TAG_SIZE:
        raise ProtocolError(f"record too short ({len(data)} bytes)")
    if len(data) > MAX_RECORD_SIZE:
        raise ProtocolError(f"record too long ({len(data)} bytes)")
    magic, version, codec_id, tag_run, rnd, peer, first, count, exponent = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("not a onebyte record (bad magic)")
    if version != VERSION:
        raise ProtocolError(f"record version {version} is not supported (this is {VERSION})")
    try:
        codec = Codec(codec_id)
    except ValueError:
        raise ProtocolError(f"unknown codec id {codec_id}") from None
    if not 1 <= count <= MAX_COUNT:
        raise ProtocolError(f"record count {count} outside 1..{MAX_COUNT}")
    if first + count > 1 << 32:
        raise ProtocolError("record sample range overflows")
    expected = HEADER_SIZE + codec_mod.payload_size(codec, count) + TAG_SIZE
    if len(data) != expected:
        raise ProtocolError(f"record is {len(data)} bytes, header says {expected}")
    payload = data[HEADER_SIZE:-TAG_SIZE]
    rec = Record(codec, tag_run, rnd, peer, first, count, exponent, payload, data[-TAG_SIZE:])
    rec.gradients()  # validates the payload itself
    if run_tag is not None and tag_run != run_tag:
        raise ProtocolError("record belongs to another run or configuration (run tag mismatch)")
    if secret is not None and not hmac.compare_digest(rec.tag, _tag(secret, data[:-TAG_SIZE])):
        raise ProtocolError("record authentication failed (wrong or missing swarm secret)")
    return rec


class SetDigest:
    """An order-free name for a set of records: the sum of their ids mod 2^256."""

    _MOD = 1 << 256

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def add(self, record_id: bytes) -> None:
        self.value = (self.value + int.from_bytes(record_id, "big")) % self._MOD
        self.count += 1

    def remove(self, record_id: bytes) -> None:
        self.value = (self.value - int.from_bytes(record_id, "big")) % self._MOD
        self.count -= 1

    def hex(self) -> str:
        return f"{self.value:064x}"


def build_record(codec: Codec, run_tag: bytes, round_: int, peer_id: int, first_sample: int,
                 ghat: np.ndarray, rounding_seed: int, secret: bytes = b"") -> Record:
    """Encode measured gradients as a signed record."""
    exponent, payload = codec_mod.encode(codec, ghat, rounding_seed)
    rec = Record(codec, run_tag, round_, peer_id, first_sample, len(ghat), exponent, payload)
    return rec.signed(secret)
