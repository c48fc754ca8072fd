"""The peer-to-peer requests: their verbs, their framing, and every bound on what they may carry.

A request is a verb (3 or 4 ASCII bytes) and a body; a reply is raw bytes. Bodies and replies that
carry records carry *blobs*: each a 4-byte little-endian length and the bytes. Everything parsed
from the network is parsed here, with its size checked before anything is allocated for it.

=====  ==========================================  ===========================================
verb   request body                                reply
=====  ==========================================  ===========================================
REC    u16 length, a record, then a heartbeat      nothing (the author pushing its record)
PUT    blobs: records                              nothing
RND    u32 round                                   blobs: every record of that round
IDS    —                                           8-byte prefixes of every record id
GET    8-byte id prefixes                          blobs: those records
SIZE   —                                           u64 snapshot bytes, u64 ledger bytes
LEDG   — or u32 from, u32 to (rounds)[, u8 flags]  u32 round, blobs: every applied record (of
                                                   rounds from..to-1: a download in pieces);
                                                   flags bit 0 (DEFLATE): the blobs zlib-deflated
SNAP   —                                           u64 n, snapshot (n bytes), blobs: its records
COEF   —                                           u64 n, coefficient snapshot (n bytes, pool.py),
                                                   u32 first round held as records, blobs: the
                                                   applied records of that round on (seed pool)
CONF   —                                           the run configuration and site keys (JSON)
MEET   the requester's heartbeat                   blobs: the answerer's heartbeat, then the latest
                                                   of each live peer it knows, as their authors
                                                   signed them (a newcomer's first contact)
REVK   signed key revocations, 103 bytes each      every revocation the answerer holds in force
                                                   (identity mode; nothing otherwise)
=====  ==========================================  ===========================================
"""

from __future__ import annotations

import enum
import struct
import zlib

from .errors import ProtocolError
from .identity import REVOCATION_SIZE

__all__ = ["Verb", "MAX_IDS", "MAX_PUT", "MAX_REPLY", "MAX_CONFIG", "pack_blobs", "unpack_blobs", "parse",
           "push", "ledger_request", "round_request", "get_request", "put_request", "parse_config", "parse_ids",
           "parse_sizes",
           "parse_ledger", "ledger_reply", "DEFLATE", "meet_request", "parse_meet", "MAX_MEET", "MAX_HEARTBEAT",
           "parse_snapshot", "coefficients_reply", "parse_coefficients", "revocations_request", "parse_revocations",
           "MAX_REVOCATIONS"]

#: Bounds on what one bulk request or reply may carry.
MAX_IDS = 1 << 20
MAX_PUT = 4096
MAX_REPLY = 512 << 20
#: LEDG flag: deflate the reply's blobs.
DEFLATE = 1
#: The largest canonical configuration a peer may send in answer to CONF.
MAX_CONFIG = 64 << 10
ID_PREFIX = 8
#: A heartbeat is a few hundred bytes; MEET carries one, and answers with at most MAX_MEET.
MAX_HEARTBEAT = 4096
MAX_MEET = 1024
#: The most revocations one REVK request or reply carries.
MAX_REVOCATIONS = 1024


class Verb(enum.Enum):
    REC = b"REC"
    PUT = b"PUT"
    RND = b"RND"
    IDS = b"IDS"
    GET = b"GET"
    SIZE = b"SIZE"
    LEDG = b"LEDG"
    SNAP = b"SNAP"
    CONF = b"CONF"
    MEET = b"MEET"
    REVK = b"REVK"
    COEF = b"COEF"


#: Verbs whose request is the verb alone.
_BARE = {Verb.IDS, Verb.SIZE, Verb.SNAP, Verb.CONF, Verb.COEF}


def pack_blobs(blobs: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in blobs)


def unpack_blobs(data: bytes) -> list[bytes]:
    if len(data) > MAX_REPLY:
        raise ProtocolError("reply too large")
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolError("truncated reply")
        n, = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise ProtocolError("truncated reply")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


# ------------------------------------------------------------------ requests, as sent
def push(record: bytes, heartbeat: bytes) -> bytes:
    """REC: a record pushed by its author, with the author's heartbeat."""
    return Verb.REC.value + struct.pack("<H", len(record)) + record + heartbeat


def ledger_request(rounds: range | None = None, deflate: bool = False) -> bytes:
    """LEDG: every applied record, or those of ``rounds`` (a step-1 range); ``deflate``: asks for
    the blobs zlib-deflated (a ranged request only). A record's run tag, magic and most of its
    header repeat from record to record: 65 bytes per K = 4 record shrink to about 25 on the wire."""
    if rounds is None:
        return Verb.LEDG.value
    body = struct.pack("<II", rounds.start, min(rounds.stop, 0xFFFFFFFF))
    return Verb.LEDG.value + body + (bytes([DEFLATE]) if deflate else b"")


def meet_request(heartbeat: bytes) -> bytes:
    return Verb.MEET.value + heartbeat


def parse_meet(reply: bytes) -> list[bytes]:
    """A MEET reply: heartbeats (still to be authenticated), at most MAX_MEET of MAX_HEARTBEAT bytes."""
    beats = unpack_blobs(reply)
    if len(beats) > MAX_MEET or any(len(b) > MAX_HEARTBEAT for b in beats):
        raise ProtocolError(f"meet reply of {len(beats)} heartbeats, or one over {MAX_HEARTBEAT} bytes")
    return beats


def revocations_request(revocations: list[bytes]) -> bytes:
    return Verb.REVK.value + b"".join(revocations[:MAX_REVOCATIONS])


def parse_revocations(data: bytes) -> list[bytes]:
    """REVK's body or reply: whole revocations (still to be verified), at most MAX_REVOCATIONS."""
    if len(data) % REVOCATION_SIZE or len(data) > REVOCATION_SIZE * MAX_REVOCATIONS:
        raise ProtocolError(f"revocation list of {len(data)} bytes (not whole revocations, or too many)")
    return [data[i:i + REVOCATION_SIZE] for i in range(0, len(data), REVOCATION_SIZE)]


def round_request(round_: int) -> bytes:
    return Verb.RND.value + struct.pack("<I", round_)


def get_request(prefixes: list[bytes]) -> bytes:
    return Verb.GET.value + b"".join(prefixes[:MAX_IDS])


def put_request(records: list[bytes]) -> bytes:
    return Verb.PUT.value + pack_blobs(records[:MAX_PUT])


# ------------------------------------------------------------------ requests, as received
def parse(request: bytes) -> tuple[Verb, object] | None:
    """(verb, parsed body) of a request, or None for anything malformed or unknown (answered with
    nothing). REC: (record, heartbeat or b""); PUT: records (at most MAX_PUT); RND: the round;
    GET: the id prefixes; the bare verbs: None."""
    for verb in Verb:
        if not request.startswith(verb.value):
            continue
        body = request[len(verb.value):]
        if verb in _BARE:
            return (verb, None) if not body else None
        if verb is Verb.REC:
            if len(body) < 2:
                return None
            n, = struct.unpack_from("<H", body)
            if 2 + n > len(body):
                return None
            return verb, (body[2:2 + n], body[2 + n:])
        if verb is Verb.PUT:
            try:
                return verb, unpack_blobs(body)[:MAX_PUT]
            except ProtocolError:
                return None
        if verb is Verb.LEDG:  # bare (every record), or a range of rounds, and flags
            if not body:
                return verb, None
            if len(body) == 8:
                return verb, (*struct.unpack("<II", body), 0)
            if len(body) == 9 and not body[8] & ~DEFLATE:
                return verb, struct.unpack("<IIB", body)
            return None
        if verb is Verb.RND:
            return (verb, struct.unpack("<I", body)[0]) if len(body) == 4 else None
        if verb is Verb.MEET:
            return (verb, body) if 0 < len(body) <= MAX_HEARTBEAT else None
        if verb is Verb.REVK:
            try:
                return verb, parse_revocations(body)
            except ProtocolError:
                return None
        if verb is Verb.GET:
            if len(body) % ID_PREFIX or len(body) > ID_PREFIX * MAX_IDS:
                return None
            return verb, [body[i:i + ID_PREFIX] for i in range(0, len(body), ID_PREFIX)]
    return None


# ------------------------------------------------------------------ replies, as received
def parse_config(reply: bytes) -> dict:
    """A CONF reply: the peer's configuration (``Run.shared``), a JSON object of at most MAX_CONFIG bytes."""
    import json

    if len(reply) > MAX_CONFIG:
        raise ProtocolError("configuration reply too large")
    try:
        theirs = json.loads(reply)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise ProtocolError("configuration reply is not JSON") from None
    if not isinstance(theirs, dict):
        raise ProtocolError("configuration reply is not an object")
    return theirs


def parse_ids(reply: bytes) -> set[bytes]:
    if len(reply) % ID_PREFIX or len(reply) > ID_PREFIX * MAX_IDS:
        raise ProtocolError("malformed id list")
    return {reply[i:i + ID_PREFIX] for i in range(0, len(reply), ID_PREFIX)}


def parse_sizes(reply: bytes) -> tuple[int, int] | None:
    """(snapshot bytes, ledger bytes), or None from a peer that does not know SIZE."""
    return struct.unpack("<QQ", reply) if len(reply) == 16 else None


def ledger_reply(round_: int, records: list[bytes], flags: int = 0) -> bytes:
    blobs = pack_blobs(records)
    return struct.pack("<I", round_) + (zlib.compress(blobs, 6) if flags & DEFLATE else blobs)


def parse_ledger(reply: bytes, deflated: bool = False, limit: int = MAX_REPLY) -> tuple[int, list[bytes]]:
    """A LEDG reply: (the peer's round, the records). ``deflated``: as asked for with DEFLATE;
    inflating stops at ``limit`` bytes (a piece's bound), so a small reply cannot expand without bound."""
    if len(reply) < 4:
        raise ProtocolError("ledger reply too short")
    round_, = struct.unpack_from("<I", reply)
    blobs = reply[4:]
    if deflated:
        inflater = zlib.decompressobj()
        try:
            blobs = inflater.decompress(blobs, min(limit, MAX_REPLY))
        except zlib.error as exc:
            raise ProtocolError(f"ledger reply does not inflate: {exc}") from None
        if inflater.unconsumed_tail:
            raise ProtocolError(f"ledger reply inflates past {min(limit, MAX_REPLY)} bytes")
        if not inflater.eof or inflater.unused_data:
            raise ProtocolError("ledger reply is cut short, or has bytes after its end")
    return round_, unpack_blobs(blobs)


def parse_snapshot(reply: bytes) -> tuple[bytes, list[bytes]]:
    if len(reply) < 8:
        raise ProtocolError("snapshot reply too short")
    n, = struct.unpack_from("<Q", reply)
    if 8 + n > len(reply):
        raise ProtocolError("snapshot reply truncated")
    return reply[8:8 + n], unpack_blobs(reply[8 + n:])


def coefficients_reply(coefs: bytes, tail_from: int, records: list[bytes]) -> bytes:
    return struct.pack("<Q", len(coefs)) + coefs + struct.pack("<I", tail_from) + pack_blobs(records)


def parse_coefficients(reply: bytes) -> tuple[bytes, int, list[bytes]]:
    """A COEF reply: (coefficient snapshot bytes, first round held as records, those records)."""
    if len(reply) < 12:
        raise ProtocolError("coefficient reply too short")
    n, = struct.unpack_from("<Q", reply)
    if 8 + n + 4 > len(reply):
        raise ProtocolError("coefficient reply truncated")
    tail_from, = struct.unpack_from("<I", reply, 8 + n)
    return reply[8:8 + n], tail_from, unpack_blobs(reply[12 + n:])
