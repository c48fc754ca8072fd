"""Counter-based Rademacher perturbations: Philox4x64-10 in integer tensor ops.

Philox (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) maps a
(counter, key) pair to 256 random bits with no state, so element i of tensor t can be grown
from (seed, t, i) alone: it is bit ``i mod 256`` of the block whose counter is
``(i // 256, 0, t, 0)`` under key ``(seed, 0)``. Chunking, device and order never change a value.

We use the 4x64 variant because it is the one NumPy ships (``numpy.random.Philox``), which gives
known answers to test against. Torch has no unsigned 64-bit multiply, so each 64-bit word is
held as two 32-bit limbs in ``int64`` tensors and the 64x64->128 multiply is done limb by limb:
every intermediate stays below 2**63, so CPU and CUDA compute the same bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

Limb = torch.Tensor | int

__all__ = ["BITS_PER_BLOCK", "PerturbationLayout", "key_limbs", "philox4x64", "tensor_id"]

BITS_PER_BLOCK = 256
_M32 = 0xFFFFFFFF
_MUL = (0xD2E7470EE14C6C93, 0xCA5A826395121157)
_WEYL = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)
_M64 = (1 << 64) - 1


def _split(x: int) -> tuple[int, int]:
    return x & _M32, (x >> 32) & _M32


def _mulhilo(m: int, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(m * x) for a 64-bit constant m and x = hi*2^32 + lo; returns the 128-bit product as
    four 32-bit limbs (p0 least significant)."""
    m_lo, m_hi = _split(m)
    ll = lo * m_lo  # each partial product < 2^64: keep to 32-bit halves before adding
    lh = lo * m_hi
    hl = hi * m_lo
    hh = hi * m_hi
    # Split partial products into 32-bit halves.  ``>>`` on int64 is arithmetic, so mask.
    ll_lo, ll_hi = ll & _M32, (ll >> 32) & _M32
    lh_lo, lh_hi = lh & _M32, (lh >> 32) & _M32
    hl_lo, hl_hi = hl & _M32, (hl >> 32) & _M32
    hh_lo, hh_hi = hh & _M32, (hh >> 32) & _M32
    t = ll_hi + lh_lo + hl_lo
    p1 = t & _M32
    u = hh_lo + lh_hi + hl_hi + (t >> 32)
    p2 = u & _M32
    p3 = (hh_hi + (u >> 32)) & _M32
    return ll_lo, p1, p2, p3


def philox4x64(counter: Sequence[torch.Tensor], key: Sequence[Limb], rounds: int = 10) -> list[Limb]:
    """Philox4x64-R on 32-bit limbs.

    ``counter`` holds the four 64-bit counter words as 8 limbs (c0_lo, c0_hi, ..., c3_hi), each an
    int64 tensor of values in [0, 2^32); ``key`` holds the two key words as 4 limbs, each a Python
    int or a tensor broadcastable against the counter (one key per row). Returns the four output
    words as 8 limbs in the same order.
    """
    c = list(counter)
    k = list(key)
    if len(c) != 8 or len(k) != 4:
        raise ValueError("philox4x64 takes 8 counter limbs and 4 key limbs")
    for r in range(rounds):
        if r:
            k = _bump(k)
        a0, a1, a2, a3 = _mulhilo(_MUL[0], c[0], c[1])  # M0 * c0
        b0, b1, b2, b3 = _mulhilo(_MUL[1], c[4], c[5])  # M1 * c2
        c = [
            b2 ^ c[2] ^ k[0], b3 ^ c[3] ^ k[1],  # hi(M1*c2) ^ c1 ^ k0
            b0, b1,  # lo(M1*c2)
            a2 ^ c[6] ^ k[2], a3 ^ c[7] ^ k[3],  # hi(M0*c0) ^ c3 ^ k1
            a0, a1,  # lo(M0*c0)
        ]
    return c


def _bump(k: list[Limb]) -> list[Limb]:
    """Add the Weyl constants to the key words, mod 2^64 (works on ints and tensors alike)."""
    out: list[Limb] = []
    for w in range(2):
        wl, wh = _split(_WEYL[w])
        s = k[2 * w] + wl
        out.append(s & _M32)
        out.append((k[2 * w + 1] + wh + (s >> 32)) & _M32)
    return out


def key_limbs(seed: int) -> list[int]:
    """The Philox key for a 64-bit seed: words (seed, 0) as 4 limbs."""
    return [*_split(seed & _M64), 0, 0]


def tensor_id(name: str) -> int:
    """A stable 64-bit id for a parameter name: the tensor coordinate of the counter."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _sign_table() -> torch.Tensor:
    v = torch.arange(256, dtype=torch.int64).unsqueeze(1)
    bits = (v >> torch.arange(8, dtype=torch.int64)) & 1
    return (2 * bits - 1).to(torch.int8)


class PerturbationLayout:
    """Where each tuned tensor lives in one flat, block-aligned buffer, and the Philox counters
    that cover it.

    Tensor t (taken in the given order) occupies ``[offsets[t], offsets[t] + numels[t])``;
    each segment starts on a multiple of 256 so its blocks are exactly the blocks of that tensor.
    The padding between segments receives perturbation values too; callers ignore it.
    """

    def __init__(self, names: Sequence[str], numels: Sequence[int], device: torch.device | str = "cpu"):
        if len(names) != len(numels) or not names:
            raise ValueError("layout needs one numel per name and at least one tensor")
        self.names = list(names)
        self.numels = [int(n) for n in numels]
        self.device = torch.device(device)
        self.offsets: list[int] = []
        lo_parts, tlo_parts, thi_parts = [], [], []
        pos = 0
        for name, n in zip(self.names, self.numels, strict=True):
            self.offsets.append(pos)
            nblocks = -(-n // BITS_PER_BLOCK)
            lo_parts.append(torch.arange(nblocks, dtype=torch.int64))
            t_lo, t_hi = _split(tensor_id(name))
            tlo_parts.append(torch.full((nblocks,), t_lo, dtype=torch.int64))
            thi_parts.append(torch.full((nblocks,), t_hi, dtype=torch.int64))
            pos += nblocks * BITS_PER_BLOCK
        self.size = pos
        blk = torch.cat(lo_parts).to(self.device)
        zero = torch.zeros_like(blk)
        # counter = (block index, 0, tensor id, 0): 8 limbs.  Block indices are < 2^32.
        t_lo = torch.cat(tlo_parts).to(self.device)
        t_hi = torch.cat(thi_parts).to(self.device)
        self._counter = [blk, zero, zero, zero, t_lo, t_hi, zero, zero]
        # int8 signs of each byte value, 8 per row, packed as one int64 per row: one gather per byte.
        self._table = _sign_table().view(torch.int64).reshape(256).to(self.device)

    def segment(self, flat: torch.Tensor, index: int) -> torch.Tensor:
        """The slice of a flat buffer that belongs to tensor ``index``."""
        off = self.offsets[index]
        return flat[off : off + self.numels[index]]

    def bits(self, seed: int) -> torch.Tensor:
        """The raw Philox output for ``seed`` over the whole layout, as uint8 (size // 8 bytes)."""
        out = philox4x64(self._counter, key_limbs(seed))
        words = torch.stack(out, dim=1)  # (blocks, 8) limbs in [0, 2^32)
        words = words - ((words >> 31) << 32)  # to the int32 range, same bits
        return words.to(torch.int32).view(torch.uint8).reshape(-1)

    def rademacher(self, seed: int) -> torch.Tensor:
        """z in {-1, +1} (int8) for every position of the layout: z_i = 2*bit_i - 1."""
        idx = self.bits(seed).to(torch.int32)
        return torch.index_select(self._table, 0, idx).view(torch.int8)
