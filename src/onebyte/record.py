"""Records: the only thing peers exchange about training, in a versioned binary format.

Layout (little-endian), 39-byte header, then payload, then the authentication trailer::

    magic "OB" | version u8 | codec u8 | run tag 16B | round u32 | peer id u64 |
    first sample u32 | count u16 | exponent i8 | payload | trailer

Version 1 (the swarm secret's mode) ends in ``HMAC-SHA256(secret, header+payload)[:16]``.
Version 2 (identity mode: the run file lists site keys, see ``identity``) ends in the author's
Ed25519 signature over header+payload, 64 bytes: it *replaces* the HMAC tag (+48 bytes per
record; a K = 16 byte record goes from 71 to 119 bytes), since a signature by a listed key already
proves more than the shared secret could. Both versions decode everywhere, so a ledger of
version-1 records stays readable; which one a replica accepts from the network is its mode's.

A record's *id* is SHA-256 of header+payload: it names the content, not the trailer, so two
different records for one slot have different ids (the version byte is in the header, so a
record signed and the same record HMAC-tagged are different records). Decoding checks every
field and raises ``ProtocolError``; nothing is ever unpickled or parsed as text.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from . import auth
from . import codec as codec_mod
from .auth import SIGNATURE_SIZE, SIGNED_VERSION, TAG_SIZE, TRAILER_SIZE
from .codec import Codec
from .errors import ProtocolError

if TYPE_CHECKING:
    from .auth import Signer, Verifier

__all__ = ["Record", "build_record", "decode_record", "SetDigest", "MAX_COUNT", "TAG_SIZE", "SIGNATURE_SIZE",
           "RUN_TAG_SIZE", "VERSION", "SIGNED_VERSION"]

MAGIC = b"OB"
VERSION = auth.HMAC_VERSION  # HMAC-tagged under the swarm secret; SIGNED_VERSION: by a site key
RUN_TAG_SIZE = 16
MAX_COUNT = 16384  # a 2 KB record of sign bits; 64 KB at most (float32)
_HEADER = struct.Struct("<2sBB16sIQIHb")
HEADER_SIZE = _HEADER.size
MAX_RECORD_SIZE = HEADER_SIZE + codec_mod.payload_size(Codec.FLOAT32, MAX_COUNT) + SIGNATURE_SIZE


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
    tag: bytes = b"\0" * TAG_SIZE  # the trailer: HMAC tag (version 1) or Ed25519 signature (version 2)
    version: int = VERSION

    def body(self) -> bytes:
        return _HEADER.pack(MAGIC, self.version, int(self.codec), self.run_tag, self.round,
                            self.peer_id, self.first_sample, self.count, self.exponent) + self.payload

    @property
    def is_signed(self) -> bool:
        """Signed by a site key (version 2), rather than HMAC-tagged under the swarm secret."""
        return self.version == SIGNED_VERSION

    def to_bytes(self) -> bytes:
        return self.body() + self.tag

    @cached_property
    def record_id(self) -> bytes:
        """SHA-256 of header+payload, hashed once per record: a replica names a record by it several
        times as it admits and applies it (about 2 µs each at K = 1,024; the record is immutable)."""
        return hashlib.sha256(self.body()).digest()

    @property
    def slot(self) -> tuple[bytes, int, int, int]:
        """(run, round, peer, first sample): a peer may publish one record per slot."""
        return (self.run_tag, self.round, self.peer_id, self.first_sample)

    def gradients(self) -> np.ndarray:
        """The decoded projected gradients (exact float64)."""
        return codec_mod.decode(self.codec, self.exponent, self.payload, self.count)

    def signed(self, secret: bytes) -> Record:
        """This record (version 1) with its authentication tag computed under ``secret``."""
        rec = replace(self, version=VERSION)
        return replace(rec, tag=auth.seal(rec.body(), secret))

    def signed_by(self, key: Signer) -> Record:
        """This record as version 2, signed by a site key. The record says which peer it is from;
        a receiver checks the signature under the key that peer id derives from, so a key can sign
        only for its own id (``identity.Roster``)."""
        rec = replace(self, version=SIGNED_VERSION)
        return replace(rec, tag=auth.seal(rec.body(), key=key))

    def payload_bytes(self) -> int:
        """What the gradients cost: the payload, plus the exponent byte for ``byte``."""
        return len(self.payload) + (1 if self.codec is Codec.BYTE else 0)


def decode_record(data: bytes, *, run_tag: bytes | None = None, secret: bytes | None = None,
                  roster: Verifier | None = None) -> Record:
    """Parse and validate one record; with ``run_tag`` also check its run. Authentication:

    * ``roster`` (identity mode): the record must be signed (version 2) by a listed key (whether
      its round still counts is ``Roster.counts``, the caller's);
    * else ``secret``: the record must be HMAC-tagged (version 1) under it;
    * neither: no authentication (a local ledger, already checked when it was accepted).

    The trailer is checked by ``auth.check``, as a heartbeat's is."""
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
    if version not in TRAILER_SIZE:
        raise ProtocolError(f"record version {version} is not supported (this reads {VERSION} and {SIGNED_VERSION})")
    trailer = TRAILER_SIZE[version]
    try:
        codec = Codec(codec_id)
    except ValueError:
        raise ProtocolError(f"unknown codec id {codec_id}") from None
    if not 1 <= count <= MAX_COUNT:
        raise ProtocolError(f"record count {count} outside 1..{MAX_COUNT}")
    if first + count > 1 << 32:
        raise ProtocolError("record sample range overflows")
    expected = HEADER_SIZE + codec_mod.payload_size(codec, count) + trailer
    if len(data) != expected:
        raise ProtocolError(f"record is {len(data)} bytes, header says {expected}")
    payload = data[HEADER_SIZE:-trailer]
    rec = Record(codec, tag_run, rnd, peer, first, count, exponent, payload, data[-trailer:], version)
    rec.gradients()  # validates the payload itself
    if run_tag is not None and tag_run != run_tag:
        raise ProtocolError("record belongs to another run or configuration (run tag mismatch)")
    auth.check("record", version, peer, data[:-trailer], rec.tag, secret=secret, roster=roster)
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
