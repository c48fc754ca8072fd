"""Counter-based Rademacher perturbations: Philox4x64-10 in integer tensor ops.

Philox (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) maps a
(counter, key) pair to 256 random bits with no state, so element i of tensor t can be grown
from (seed, t, i) alone: it is bit ``i mod 256`` of the block whose counter is
``(i // 256, 0, t, 0)`` under key ``(seed, 0)``. Chunking, device and order never change a value.

Sparse directions (density 2^-m, Sparse-MeZO's random masks): element i is kept when bit i of
the blocks under keys ``(seed, 1)`` ... ``(seed, m)`` is set in all m of them, else it is 0; a
kept element has the sign above. So z is in {-1, 0, +1}, still a function of (seed, t, i) alone.

We use the 4x64 variant because it is the one NumPy ships (``numpy.random.Philox``), which gives
known answers to test against. Torch has no unsigned 64-bit multiply, so each 64-bit word is
held as two 32-bit limbs in ``int64`` tensors and the 64x64->128 multiply is done limb by limb:
every intermediate stays below 2**63, so CPU and CUDA compute the same bits.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence

import torch

from .config import MAX_SPARSITY

Limb = torch.Tensor | int

__all__ = ["BITS_PER_BLOCK", "MAX_SPARSITY", "PerturbationLayout", "key_limbs", "philox4x64", "tensor_id",
           "fused_available"]

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


def key_limbs(seed: int, stream: int = 0) -> list[int]:
    """The Philox key for a 64-bit seed: words (seed, stream) as 4 limbs (stream 0: the signs,
    1..m: a sparse direction's mask)."""
    return [*_split(seed & _M64), stream, 0]


def tensor_id(name: str) -> int:
    """A stable 64-bit id for a parameter name: the tensor coordinate of the counter."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _sign_tables(device: torch.device, sparse: bool = False) -> dict[torch.dtype, torch.Tensor]:
    """For each output dtype, the 8 signs (+-1) of every byte value as one row of int64 words,
    so expanding random bytes into signs is a single row gather with no type conversion.
    ``sparse``: 65,536 rows, row ``sign_byte | mask_byte << 8`` holding sign * mask bit."""
    v = torch.arange(65536 if sparse else 256, dtype=torch.int64).unsqueeze(1)
    k = torch.arange(8, dtype=torch.int64)
    signs = 2 * ((v >> k) & 1) - 1  # (rows, 8), bit k -> column k
    if sparse:
        signs = signs * ((v >> (k + 8)) & 1)
    out = {}
    for dtype in (torch.int8, torch.int32, torch.float32):
        words = signs.to(dtype).contiguous().view(torch.int64)  # (256, 8 * itemsize / 8)
        out[dtype] = words.to(device)
    return out


def _signs_from_counter(blk: torch.Tensor, t_lo: torch.Tensor, t_hi: torch.Tensor, key: torch.Tensor,
                        dtype: torch.dtype, sparsity: int = 0) -> torch.Tensor:
    """Philox of (blk, 0, tensor id, 0) under ``key`` (two int64 limbs), expanded straight into
    signs: bit b of output limb l of a block is value ``32 l + b`` of that block, the same order
    as the byte-and-table path (limb l's byte j holds values 32 l + 8 j .. 32 l + 8 j + 7). Written
    in elementwise tensor ops only, so ``torch.compile`` fuses it into one GPU kernel."""
    words = _words_from_counter(blk, t_lo, t_hi, key, 0)
    shifts = torch.arange(32, dtype=torch.int64, device=blk.device)
    z = 2 * ((words >> shifts) & 1) - 1
    if sparsity:
        z = z * ((_mask_from_counter(blk, t_lo, t_hi, key, sparsity) >> shifts) & 1)
    return z.to(dtype).reshape(-1)


def _words_from_counter(blk: torch.Tensor, t_lo: torch.Tensor, t_hi: torch.Tensor, key: torch.Tensor,
                        stream: int) -> torch.Tensor:
    """Philox of (blk, 0, tensor id, 0) under key (seed, stream): (blocks, 8, 1) limbs in [0, 2^32)."""
    zero = torch.zeros_like(blk)
    limbs = philox4x64([blk, zero, zero, zero, t_lo, t_hi, zero, zero], [key[0], key[1], stream, 0])
    return torch.stack(limbs, dim=1).unsqueeze(-1)


def _mask_from_counter(blk: torch.Tensor, t_lo: torch.Tensor, t_hi: torch.Tensor, key: torch.Tensor,
                       sparsity: int) -> torch.Tensor:
    """The AND of mask streams 1..sparsity, as ``_words_from_counter``'s limbs."""
    mask = _words_from_counter(blk, t_lo, t_hi, key, 1)
    for j in range(2, sparsity + 1):
        mask = mask & _words_from_counter(blk, t_lo, t_hi, key, j)
    return mask


def _bytes_from_counter(blk: torch.Tensor, t_lo: torch.Tensor, t_hi: torch.Tensor, key: torch.Tensor,
                        sparsity: int = 0) -> torch.Tensor:
    """The same Philox output as little-endian bytes, as int32 (the sign table's row indices);
    with ``sparsity`` the mask's bytes instead (the AND of its streams)."""
    words = (_mask_from_counter(blk, t_lo, t_hi, key, sparsity) if sparsity
             else _words_from_counter(blk, t_lo, t_hi, key, 0))
    shifts = 8 * torch.arange(4, dtype=torch.int64, device=blk.device)
    return ((words >> shifts) & 255).to(torch.int32).reshape(-1)


_COMPILED: dict[str, object] = {}


def fused_available(device: torch.device | str) -> bool:
    """Whether the one-kernel generator can run on ``device``: CUDA with Triton importable."""
    if torch.device(device).type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _compiled(fn):
    """``fn`` compiled once per process (one Triton kernel on CUDA; an int argument such as the
    sparsity is specialised: one kernel per value)."""
    if fn.__name__ not in _COMPILED:
        _COMPILED[fn.__name__] = torch.compile(fn, dynamic=False, fullgraph=True)
    return _COMPILED[fn.__name__]


def numpy_counter(tid: int, block: int = 0) -> list[int]:
    """NumPy's Philox adds one to its 256-bit counter before each block; start one below
    (block, 0, tid, 0) so its first block is block ``block`` of tensor ``tid``."""
    v = ((tid << 128) + block - 1) % (1 << 256)
    return [(v >> (64 * k)) & _M64 for k in range(4)]


class PerturbationLayout:
    """Where each tuned tensor lives in one flat, block-aligned buffer, and how to grow the
    perturbation of a seed over it.

    Tensor t (taken in the given order) occupies ``[offsets[t], offsets[t] + numels[t])``;
    each segment starts on a multiple of 256 so its blocks are exactly the blocks of that tensor.
    The padding between segments receives perturbation values too; callers ignore it.

    On CPU the random blocks come from NumPy's C implementation of the same Philox4x64-10 (the
    same bits, several times faster than tensor ops); on other devices from ``philox4x64`` in
    tensor ops. Expansion into signs reuses preallocated buffers: allocating (and page-faulting)
    fresh 100 MB tensors would cost more than the arithmetic.

    On CUDA the tensor-op Philox launches hundreds of tiny kernels; with ``fused`` (the default
    where Triton is available) ``rademacher`` runs the same arithmetic compiled into one kernel
    that goes from counters to signs, with the same bits.
    """

    def __init__(self, names: Sequence[str], numels: Sequence[int], device: torch.device | str = "cpu",
                 fused: bool | None = None, sparsity: int = 0):
        if len(names) != len(numels) or not names:
            raise ValueError("layout needs one numel per name and at least one tensor")
        if not 0 <= sparsity <= MAX_SPARSITY:
            raise ValueError(f"sparsity must be in 0..{MAX_SPARSITY} (density 2^-sparsity), not {sparsity}")
        self.sparsity = int(sparsity)
        self.names = list(names)
        self.numels = [int(n) for n in numels]
        self.device = torch.device(device)
        self.offsets: list[int] = []
        self.blocks: list[int] = []
        self.tensor_ids = [tensor_id(n) for n in self.names]
        pos = 0
        for n in self.numels:
            self.offsets.append(pos)
            nblocks = -(-n // BITS_PER_BLOCK)
            self.blocks.append(nblocks)
            pos += nblocks * BITS_PER_BLOCK
        self.size = pos
        self._counter: list[torch.Tensor] | None = None
        self._tables = _sign_tables(self.device, sparse=bool(self.sparsity))
        self._index = torch.empty(self.size // 8, dtype=torch.uint8, device=self.device)  # a direction's bytes
        # a sparse direction's mask bytes, beside its sign bytes (same positions)
        self._mask = torch.empty(self.size // 8, dtype=torch.uint8, device=self.device) if self.sparsity else None
        self._index_seed: int | None = None  # the seed whose bytes fill all of ``_index``, if one does
        self.fused = fused_available(self.device) if fused is None else bool(fused)

    def _torch_counter(self) -> list[torch.Tensor]:
        """Counter limbs (block, 0, tensor id, 0) for every block, built on first use."""
        if self._counter is None:
            blk = torch.cat([torch.arange(nb, dtype=torch.int64) for nb in self.blocks])
            t_lo = torch.cat([torch.full((nb,), _split(t)[0], dtype=torch.int64)
                              for nb, t in zip(self.blocks, self.tensor_ids, strict=True)])
            t_hi = torch.cat([torch.full((nb,), _split(t)[1], dtype=torch.int64)
                              for nb, t in zip(self.blocks, self.tensor_ids, strict=True)])
            zero = torch.zeros_like(blk)
            self._counter = [x.to(self.device) for x in (blk, zero, zero, zero, t_lo, t_hi, zero, zero)]
        return self._counter

    def segment(self, flat: torch.Tensor, index: int) -> torch.Tensor:
        """The slice of a flat buffer that belongs to tensor ``index``."""
        off = self.offsets[index]
        return flat[off : off + self.numels[index]]

    def _fill_index(self, seed: int, lo: int = 0, hi: int | None = None) -> None:
        """The random bytes of ``seed`` over the layout into ``_index`` (uint8, size // 8: the sign
        table's rows) and, for a sparse layout, its mask bytes into ``_mask``; ``_rows`` widens them
        to int32 row indices a chunk at a time (4x less memory than holding int32).

        On CPU only the blocks overlapping positions [lo, hi) are written (the others keep stale
        bytes): a caller that expands one tensor, or one chunk, pays for that part alone."""
        hi = self.size if hi is None else hi
        if self._index_seed == seed:
            return  # already there: SPSA's second perturbation, a hook after ``fill``
        if self.device.type == "cpu":
            import numpy as np

            idx = self._index.numpy()
            mask = self._mask.numpy() if self._mask is not None else None
            first = max(0, bisect.bisect_right(self.offsets, lo) - 1)  # the tensor holding position lo
            last = bisect.bisect_left(self.offsets, hi)  # tensors from here on start at or after hi
            for t in range(first, last):
                off, nb, tid = self.offsets[t], self.blocks[t], self.tensor_ids[t]
                b0 = max(0, (lo - off) // BITS_PER_BLOCK)
                b1 = min(nb, -(-(hi - off) // BITS_PER_BLOCK))
                if b0 >= b1:
                    continue
                counter = np.array(numpy_counter(tid, b0), dtype=np.uint64)
                span = slice((off + b0 * BITS_PER_BLOCK) // 8, (off + b1 * BITS_PER_BLOCK) // 8)
                streams = (np.random.Philox(key=np.array([seed & _M64, j], dtype=np.uint64), counter=counter)
                           .random_raw(4 * (b1 - b0)).view(np.uint8) for j in range(self.sparsity + 1))
                idx[span] = next(streams)
                if mask is not None:
                    mask[span] = next(streams)
                    for more in streams:
                        mask[span] &= more
            self._index_seed = seed if lo <= 0 and hi >= self.size else None
            return
        if self.fused:
            blk, _, _, _, t_lo, t_hi, _, _ = self._torch_counter()
            self._index.copy_(_compiled(_bytes_from_counter)(blk, t_lo, t_hi, self._key(seed)).to(torch.uint8))
            if self._mask is not None:
                self._mask.copy_(_compiled(_bytes_from_counter)(blk, t_lo, t_hi, self._key(seed), self.sparsity)
                                 .to(torch.uint8))
        else:
            self._index.copy_(self.bits(seed))
            if self._mask is not None:
                self._mask.copy_(self.mask_bits(seed))
        self._index_seed = seed

    def _rows(self, a: int, b: int) -> torch.Tensor:
        """The sign table's row indices (int32) for the filled bytes [a, b) (positions 8a .. 8b)."""
        rows = self._index[a:b].to(torch.int32)
        if self._mask is not None:
            rows |= self._mask[a:b].to(torch.int32) << 8
        return rows

    def fill(self, seed: int) -> None:
        """Grow the bytes of ``seed`` over the whole layout now; expansions of that seed that follow
        (until another seed is grown) reuse them instead of running Philox again."""
        self._fill_index(seed)

    def _key(self, seed: int) -> torch.Tensor:
        return torch.tensor(key_limbs(seed)[:2], dtype=torch.int64).to(self.device)

    def bits(self, seed: int, stream: int = 0) -> torch.Tensor:
        """The raw Philox output for ``seed`` (key stream ``stream``) over the whole layout, as
        uint8 (size // 8 bytes), computed with tensor ops on the layout's device (the reference path)."""
        out = philox4x64(self._torch_counter(), key_limbs(seed, stream))
        words = torch.stack(out, dim=1)  # (blocks, 8) limbs in [0, 2^32)
        words = words - ((words >> 31) << 32)  # to the int32 range, same bits
        return words.to(torch.int32).view(torch.uint8).reshape(-1)

    def mask_bits(self, seed: int) -> torch.Tensor:
        """A sparse direction's mask (uint8, size // 8 bytes; bit set = element kept): the AND of
        streams 1..sparsity. All ones for a dense layout."""
        many = self.mask_many([seed])
        return torch.full((self.size // 8,), 255, dtype=torch.uint8, device=self.device) if many is None else many[0]

    def bits_many(self, seeds: Sequence[int], stream: int = 0) -> torch.Tensor:
        """``bits`` for several seeds at once, one row per seed (uint8, len(seeds) x size // 8): one
        vectorised Philox pass with one key per row. For small layouts this is far cheaper than a
        pass per seed."""
        counter = [c.unsqueeze(0) for c in self._torch_counter()]
        s = torch.tensor([x & _M64 for x in seeds], dtype=torch.uint64).view(torch.int64).to(self.device)
        lo, hi = (s & _M32).unsqueeze(1), ((s >> 32) & _M32).unsqueeze(1)
        out = philox4x64(counter, [lo, hi, stream, 0])
        words = torch.stack(out, dim=2)  # (seeds, blocks, 8) limbs in [0, 2^32)
        words = words - ((words >> 31) << 32)
        return words.to(torch.int32).view(torch.uint8).reshape(len(seeds), -1)

    def mask_many(self, seeds: Sequence[int]) -> torch.Tensor | None:
        """``mask_bits`` for several seeds (rows as ``bits_many``); None for a dense layout."""
        if not self.sparsity:
            return None
        mask = self.bits_many(seeds, 1)
        for j in range(2, self.sparsity + 1):
            mask &= self.bits_many(seeds, j)
        return mask

    def _bytes_block(self, seeds: Sequence[int]) -> torch.Tensor:
        """The sign table's row indices (int32, len(seeds) x size // 8) of several directions, from
        one vectorised Philox pass (``bits_many``: on CPU far cheaper than a NumPy pass per seed
        and tensor, which a layout of many small tensors pays per tensor)."""
        rows = self.bits_many(seeds).to(torch.int32)
        mask = self.mask_many(seeds)
        return rows if mask is None else rows | (mask.to(torch.int32) << 8)

    def signs_many(self, seeds: Sequence[int]) -> torch.Tensor:
        """The directions of ``seeds`` as rows of +-1 (0 where a sparse mask drops an element), float32,
        len(seeds) x size, from one vectorised Philox pass."""
        rows = self._bytes_block(seeds).reshape(-1)
        return torch.index_select(self._tables[torch.float32], 0, rows).view(torch.float32).reshape(len(seeds), -1)

    def project(self, vec: torch.Tensor, seeds: Sequence[int], block: int = 1 << 22) -> list[float]:
        """z(seed) . vec for each seed: a vector over the layout (padding ignored if ``vec`` is zero
        there) projected onto each direction. Directions are expanded a block of seeds at a time
        into at most ``block`` float32 signs, never K x size at once, and the dot products are one
        matrix-vector product per block (float32 products, float64 result)."""
        if vec.numel() != self.size:
            raise ValueError(f"vector has {vec.numel()} values, the layout {self.size}")
        return self.project_rows(vec.reshape(1, -1), seeds, block)[:, 0].tolist()

    def project_rows(self, rows: torch.Tensor, seeds: Sequence[int], block: int = 1 << 22) -> torch.Tensor:
        """``project`` for each row of a (B, size) matrix at once (per-example gradients): the
        (K, B) float64 matrix of z(seed_k) . rows[b], each block of directions expanded once."""
        if rows.dim() != 2 or rows.shape[1] != self.size:
            raise ValueError(f"rows must be (B, {self.size}), not {tuple(rows.shape)}")
        m = rows.to(device=self.device, dtype=torch.float32).T
        step = max(1, block // self.size)
        parts = [(self.signs_many(seeds[i:i + step]) @ m).double() for i in range(0, len(seeds), step)]
        return torch.cat(parts).cpu() if parts else torch.zeros(0, rows.shape[0], dtype=torch.float64)

    def rademacher(self, seed: int, dtype: torch.dtype = torch.int8, out: torch.Tensor | None = None) -> torch.Tensor:
        """z in {-1, +1} for every position of the layout, z_i = 2 * bit_i - 1 (times the mask bit
        for a sparse layout), as ``dtype``
        (int8, int32 or float32); written into ``out`` when given (reused across calls)."""
        table = self._tables[dtype]
        if out is not None and (out.dtype != dtype or out.numel() != self.size or not out.is_contiguous()):
            raise ValueError("out must be a contiguous tensor of the layout's size and dtype")
        if self.fused:
            blk, _, _, _, t_lo, t_hi, _, _ = self._torch_counter()
            z = _compiled(_signs_from_counter)(blk, t_lo, t_hi, self._key(seed), dtype, self.sparsity)
            return z if out is None else out.copy_(z)
        if out is None:
            out = torch.empty(self.size, dtype=dtype, device=self.device)
        rows = out.view(torch.int64).view(self.size // 8, -1)
        self._fill_index(seed)
        torch.index_select(table, 0, self._rows(0, self.size // 8), out=rows)
        return out

    def iter_rademacher(self, seed: int, dtype: torch.dtype, ranges: Sequence[tuple[int, int]],
                        scratch: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield (start, stop, z[start:stop]) over each flat range, chunk by chunk, with z
        expanded into the small ``scratch`` buffer (overwritten each step). Ranges must start
        and stop on multiples of 8. Costs one Philox pass and no full-size temporary."""
        table = self._tables[dtype]
        chunk = scratch.numel() - scratch.numel() % 8
        if scratch.dtype != dtype or chunk < 8:
            raise ValueError("scratch must hold at least 8 values of the requested dtype")
        self._fill_index(seed, min((a for a, _ in ranges), default=0), max((b for _, b in ranges), default=0))
        for start, stop in ranges:
            for a in range(start, stop, chunk):
                b = min(a + chunk, stop)
                z = scratch[: b - a]
                torch.index_select(table, 0, self._rows(a // 8, b // 8), out=z.view(torch.int64).view((b - a) // 8, -1))
                yield a, b, z
