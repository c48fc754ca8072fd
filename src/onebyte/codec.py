"""Codecs: how a round's projected gradients go on the wire.

* ``byte``: one signed exponent byte ``e`` per record, one int8 code ``q`` in [-127, 127] per
  gradient, ``g ~ q * 2^e``, stochastically rounded (unbiased) with randomness from the record's
  own seed, so the encoding is reproducible.
* ``sign``: one bit per gradient, packed 8 to a byte; the decoded magnitude is 1, so the step
  size is the learning rate itself (signSGD along z).
* ``float32``: four bytes per gradient, the exact baseline.

Decoding returns exact float64 values (``q * 2^e`` is exact), which is what replay turns into
integer updates.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from .errors import DivergenceError, ProtocolError

__all__ = ["Codec", "encode", "decode", "decode_codes", "payload_size", "EXPONENT_RANGE"]

#: Exponents a ``byte`` record may carry.  The bound caps any record's influence (see security).
EXPONENT_RANGE = (-100, 30)
_QMAX = 127


class Codec(enum.IntEnum):
    BYTE = 1
    SIGN = 2
    FLOAT32 = 3

    @classmethod
    def parse(cls, name: str) -> Codec:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown codec {name!r} (choose byte, sign or float32)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


def payload_size(codec: Codec, count: int) -> int:
    """Bytes of payload for ``count`` gradients (the exponent lives in the record header)."""
    if codec is Codec.BYTE:
        return count
    if codec is Codec.SIGN:
        return (count + 7) // 8
    return 4 * count


#: Wire bytes a record costs beyond its header, trailer and payload, per peer it is pushed to: TLS,
#: yamux and TCP/IP framing, and the share of heartbeats riding with it (the wire bench measured
#: 817 bytes per peer per round for three pushes of a 73-byte record at K = 16: about 200 each).
PUSH_OVERHEAD = 200

#: The share of a link budget records may fill; the rest is left to heartbeats, the DHT and sync.
RECORD_SHARE = 0.8


def fit_samples(codec: Codec, budget: float, seconds: float, fanout: int, record_bytes: int, k_max: int) -> int:
    """The largest K in 1..``k_max`` whose records fit a link of ``budget`` bytes a second: one
    record of ``record_bytes`` (header and trailer) plus K codes goes to each of ``fanout`` peers
    every ``seconds`` (a round), with ``PUSH_OVERHEAD`` each, within ``RECORD_SHARE`` of the budget.
    At least 1: a site always contributes."""
    per_push = RECORD_SHARE * budget * seconds / max(fanout, 1) - record_bytes - PUSH_OVERHEAD
    bits = {Codec.BYTE: 8, Codec.SIGN: 1, Codec.FLOAT32: 32}[codec]
    return max(1, min(k_max, int(per_push * 8 // bits)))


def _byte_exponent(gmax: float) -> int:
    """Smallest e in EXPONENT_RANGE with gmax <= 127 * 2^e."""
    lo, hi = EXPONENT_RANGE
    if gmax == 0.0:
        return lo
    _, k = math.frexp(gmax / _QMAX)  # gmax/127 < 2^k
    e = max(k, lo)
    while e > lo and gmax <= _QMAX * math.ldexp(1.0, e - 1):
        e -= 1
    if e > hi:
        raise DivergenceError(f"projected gradient {gmax:.3g} is too large for the byte codec")
    return e


def encode(codec: Codec, ghat: np.ndarray, rounding_seed: int) -> tuple[int, bytes]:
    """Encode projected gradients; returns (exponent, payload)."""
    g = np.asarray(ghat, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ValueError("encode takes a non-empty 1-D array of projected gradients")
    if not np.all(np.isfinite(g)):
        raise DivergenceError("a projected gradient is not finite (loss diverged?)")
    if codec is Codec.FLOAT32:
        return 0, g.astype("<f4").tobytes()
    if codec is Codec.SIGN:
        return 0, np.packbits(g >= 0, bitorder="little").tobytes()
    e = _byte_exponent(float(np.max(np.abs(g))))
    x = np.ldexp(g, -e)  # exact scaling, |x| <= 127
    lo = np.floor(x)
    u = np.random.Generator(np.random.Philox(key=rounding_seed)).random(g.size)
    q = lo + (u < (x - lo))
    q = np.clip(q, -_QMAX, _QMAX).astype(np.int8)
    return e, q.tobytes()


def decode(codec: Codec, exponent: int, payload: bytes, count: int) -> np.ndarray:
    """Exact float64 projected gradients from a validated payload; raises ProtocolError."""
    if len(payload) != payload_size(codec, count):
        raise ProtocolError(f"payload is {len(payload)} bytes, {codec.label} x {count} needs "
                            f"{payload_size(codec, count)}")
    if codec is Codec.BYTE:
        lo, hi = EXPONENT_RANGE
        if not lo <= exponent <= hi:
            raise ProtocolError(f"exponent {exponent} outside {lo}..{hi}")
        q = np.frombuffer(payload, dtype=np.int8).astype(np.float64)
        if np.any(q < -_QMAX):
            raise ProtocolError("byte code -128 is not a valid code")
        return np.ldexp(q, exponent)
    if exponent != 0:
        raise ProtocolError(f"{codec.label} records carry exponent 0, not {exponent}")
    if codec is Codec.SIGN:
        bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little")
        if np.any(bits[count:]):
            raise ProtocolError("sign payload has bits set past its count")
        return 2.0 * bits[:count].astype(np.float64) - 1.0
    with np.errstate(all="ignore"):
        g = np.frombuffer(payload, dtype="<f4").astype(np.float64)
    if not np.all(np.isfinite(g)):
        raise ProtocolError("float32 payload holds a non-finite value")
    return g


def decode_codes(exponents: np.ndarray, payloads: list[bytes], count: int) -> np.ndarray:
    """The int8 codes of n ``byte`` payloads of ``count`` gradients each, one (n x count) array,
    validated as ``decode`` validates each (the same ``ProtocolError``, for the first bad one). A
    round's records under shared directions decode in a few array passes rather than n calls."""
    lo, hi = EXPONENT_RANGE
    joined = b"".join(payloads)
    codes = np.frombuffer(joined, dtype=np.int8)
    if (len(joined) != count * len(payloads) or any(len(p) != count for p in payloads)
            or (exponents.size and (exponents.min() < lo or exponents.max() > hi))
            or (codes.size and codes.min() < -_QMAX)):
        for e, p in zip(exponents.tolist(), payloads, strict=True):
            decode(Codec.BYTE, e, p, count)  # raises for the first bad one
        raise ProtocolError("byte payloads failed validation")
    return codes.reshape(len(payloads), count)
