"""Integer fixed-point state: the model as a pure function of the records applied to it.

Each tuned tensor t lives as int32 accumulators ``A_t`` with a power-of-two step
``delta_t = 2^-f_t``; the float weights the model runs with are a *view*
``theta_t = dtype(float32(A_t) * delta_t)`` in the model's own dtype (float32, bfloat16, float16),
recomputed whenever ``A_t`` changes. Integer addition commutes, so replicas that applied the same
set of records hold the same bits in any order.

All tuned tensors share two flat buffers (``acc`` int32 and ``view`` in the model's dtype) laid
out by ``PerturbationLayout``, ordered by (step, name) so tensors of equal step are contiguous and
one update is one vector op per step group. The model's parameters are re-pointed at slices of
``view``: perturbing the model is one ``add_`` over the flat view.

**Exact restore in every dtype.** The view is always computed the same way: int32 -> float32
(round to nearest even, exact below 2^24), times 2^-f (exact), then one cast to the view's dtype
(round to nearest even). Every step is a correctly rounded IEEE operation, the same on any CPU or
GPU, so a view recomputed from the same ``A`` has the same bits however it was perturbed before.
A perturbation (``theta + eps z`` rounded to bf16/fp16) may be inexact; it never matters, because
restoring never subtracts: it recomputes.

**The step does not depend on the dtype (except for fp16's range).** ``f`` gives 4x headroom over
the base weights with a 29-bit grid, as for float32, even though a bfloat16 view shows only 8
significant bits. The grid is not wasted: ``A`` is the master copy, and updates far below the
view's resolution (lr ~ 1e-6 x g, while a bf16 step at 0.05 is 2^-12 ~ 2.4e-4) accumulate in
``A`` until they move the view, like float32 master weights in mixed precision. A grid as coarse
as the view would round every such update to zero and stall training (DESIGN §13's price for
"float32 as exact fixed point", 2^16 times worse in bf16). The dtype matters only for range: the
accumulators' range 2^(31-f) is kept within the dtype's finite range (float16 tops out at 65504),
so no reachable state has an infinite view (``frac_bits_for(max_abs, dtype)``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from .rng import PerturbationLayout

__all__ = ["FixedPointState", "frac_bits_for", "magnitude_for"]

#: Elements per chunk when expanding a direction (1 MiB of float32: stays in cache).
CHUNK = 1 << 18

#: Layouts up to this size replay many directions at once (``add_many``); larger ones one by one.
SMALL_LAYOUT = 1 << 20

#: Values (directions x layout) expanded at once by ``add_many``: 16 MiB as float32.
_MANY_BLOCK = 1 << 22


def _digits(c: int) -> tuple[int, int, int]:
    """c = d0 + d1 2^11 + d2 2^22 with balanced digits |d_i| <= 2^10 (for |c| <= 2^31)."""
    d0 = ((c + 1024) & 2047) - 1024
    c = (c - d0) >> 11
    d1 = ((c + 1024) & 2047) - 1024
    return d0, d1, (c - d1) >> 11

#: Accumulators keep about 4x headroom over the base weights: |A| <= 2^29 * 4 < 2^31.
_ACC_BITS = 29


#: Dtypes a view may have: the int32 -> float32 -> dtype chain is correctly rounded for each.
VIEW_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def frac_bits_for(max_abs: float, dtype: torch.dtype = torch.float32) -> int:
    """f such that 2^(31-f) >= 4 * max(max_abs, 1): the representable range has 4x headroom.

    For a dtype whose finite range is narrower than that (float16 weights above 8192), f is made
    finer so the range 2^(31-f) stays finite in ``dtype``, though never so fine that the base
    weights themselves would overflow int32 (then the headroom shrinks instead)."""
    if not math.isfinite(max_abs):
        raise ValueError("base weights are not finite")
    _, e = math.frexp(max(max_abs, 1.0))  # max_abs < 2^e
    f = _ACC_BITS - e
    _, top = math.frexp(torch.finfo(dtype).max)  # dtype max < 2^top, and 2^(top-1) is finite
    if 31 - f > top - 1:
        f = min(31 - (top - 1), 31 - e)
    return f


def _wrap32(x: torch.Tensor) -> torch.Tensor:
    """int64 values reduced to the int32 range with two's-complement wrap-around (in place)."""
    return x.add_(1 << 31).bitwise_and_(0xFFFFFFFF).sub_(1 << 31)


#: madvise(2) advice: reclaim these pages now (Linux >= 5.4). Clean file pages are dropped and
#: read again from the file if touched; nothing is lost.
_MADV_PAGEOUT = 21


def release_file_pages(t: torch.Tensor) -> None:
    """Let the kernel reclaim the resident pages of ``t`` when they belong to a file mapping (a
    memory-mapped checkpoint: the weights the state has just copied). Without this every page of
    the checkpoint stays resident until the last tensor of the file is released, beside the state
    being built. Anonymous memory is left alone; where the advice is not supported, nothing
    happens."""
    if t.device.type != "cpu" or t.numel() == 0:
        return
    import ctypes
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    start, stop = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    lo, hi = -(-start // page) * page, stop // page * page  # whole pages inside the tensor only
    if hi <= lo:
        return
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                fields = line.split()
                a, b = (int(x, 16) for x in fields[0].split("-"))
                if a <= lo and hi <= b:
                    if len(fields) < 6 or not fields[5].startswith("/"):
                        return  # anonymous or special: not ours to reclaim
                    break
            else:
                return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), ctypes.c_int(_MADV_PAGEOUT))
    except OSError:
        return


def magnitude_for(frac: int) -> float:
    """A magnitude for which ``frac_bits_for`` gives ``frac`` (float32; frac <= _ACC_BITS - 1)."""
    return math.ldexp(0.75, _ACC_BITS - frac)


@dataclass(frozen=True)
class _Group:
    frac_bits: int
    start: int
    stop: int


class FixedPointState:
    """The tuned tensors of ``model`` as int32 accumulators plus the float view the model uses.

    Not thread-safe: ``perturb``, ``add`` and ``refresh`` share one scratch buffer, so callers run
    them one at a time (a peer measures and applies under its replica's lock)."""

    def __init__(self, params: Iterable[tuple[str, torch.nn.Parameter]], device: str | torch.device = "cpu",
                 magnitudes: Mapping[str, float] | None = None, sparsity: int = 0):
        """``magnitudes``: for tensors whose base values say nothing of their future scale (LoRA's
        B starts at zero), the magnitude their step should hold with 4x headroom instead of
        ``max|theta|`` (see ``adapters.lora_magnitudes``). ``sparsity``: directions keep 2^-sparsity
        of the elements (``rng``: sparse directions)."""
        items = list(params)
        if not items:
            raise ValueError("no parameters to tune")
        dtypes = {p.dtype for _, p in items}
        if len(dtypes) != 1:
            raise ValueError(f"tuned parameters mix dtypes ({', '.join(sorted(map(str, dtypes)))}); "
                             "tune tensors of one dtype")
        self.dtype = dtypes.pop()
        if self.dtype not in VIEW_DTYPES:
            raise ValueError(f"tuned parameters are {self.dtype}; the float view supports "
                             f"{', '.join(map(str, VIEW_DTYPES))}")
        magnitudes = magnitudes or {}
        frac = {n: frac_bits_for(magnitudes.get(n, float(p.detach().abs().max())), self.dtype) for n, p in items}
        items.sort(key=lambda np_: (-frac[np_[0]], np_[0]))
        self.names = [n for n, _ in items]
        self.shapes = {n: tuple(p.shape) for n, p in items}
        self.frac_bits = frac
        self.layout = PerturbationLayout(self.names, [p.numel() for _, p in items], device, sparsity=sparsity)
        self._alloc(device)
        # Directions are expanded chunk by chunk into this small reusable buffer (read as float32
        # to perturb, as int32 to update): a full-size z would cost memory and page faults. It
        # also holds float32(A) * 2^-f on its way to a bf16/fp16 view.
        self.scratch = torch.empty(min(self.layout.size, CHUNK), dtype=torch.float32, device=device)
        self._params: dict[str, torch.nn.Parameter] = {}
        for i, (name, p) in enumerate(items):
            self._take(i, p, frac[name], device)
            self._zero_padding(i)
            release_file_pages(p.data)
            p.requires_grad_(False)  # forward-only: no autograd graph, no gradient buffers
            p.data = self.layout.segment(self.view, i).view(self.shapes[name])
            self._params[name] = p
        self.groups = self._make_groups()
        self.refresh()

    def _alloc(self, device: torch.device | str) -> None:
        """The flat buffers: int32 accumulators and the view in the model's dtype. Left unwritten
        (``empty``): each page is first touched when its tensor is taken, after the tensors before
        it have been released, so the original weights and the state are never all resident at once."""
        self.acc = torch.empty(self.layout.size, dtype=torch.int32, device=device)
        self.view = torch.empty(self.layout.size, dtype=self.dtype, device=device)

    def _zero_padding(self, i: int) -> None:
        """Zero the accumulators between tensor ``i`` and the next segment (block alignment)."""
        a, b = self._padding(i)
        self.acc[a:b].zero_()

    def _padding(self, i: int) -> tuple[int, int]:
        stop = self.layout.offsets[i + 1] if i + 1 < len(self.layout.offsets) else self.layout.size
        return self.layout.offsets[i] + self.layout.numels[i], stop

    def _take(self, i: int, p: torch.Tensor, frac: int, device: torch.device | str) -> None:
        """Tensor ``i``'s weights into the accumulators. float32 * 2^f is exact and |result| < 2^31,
        so rounding in float32 is exact too (bf16 and fp16 convert to float32 exactly). Chunked,
        so no full-size temporary exists; a method, so no reference to the original weights
        outlives it (a memory-mapped checkpoint would otherwise stay resident beside the view)."""
        src, dst, scale = p.detach().reshape(-1), self.layout.segment(self.acc, i), math.ldexp(1.0, frac)
        for a in range(0, src.numel(), CHUNK):
            dst[a:a + CHUNK].copy_(torch.round_(src[a:a + CHUNK].to(device=device, dtype=torch.float32) * scale))

    def _make_groups(self) -> list[_Group]:
        groups: list[_Group] = []
        for i, name in enumerate(self.names):
            f = self.frac_bits[name]
            start, stop = self.layout.offsets[i], self._padding(i)[1]
            if groups and groups[-1].frac_bits == f:
                groups[-1] = _Group(f, groups[-1].start, stop)
            else:
                groups.append(_Group(f, start, stop))
        return groups

    @property
    def numel(self) -> int:
        """Number of tuned scalars (padding excluded)."""
        return sum(self.layout.numels)

    def refresh(self) -> None:
        """Recompute the float view exactly from the accumulators (also undoes any perturbation):
        dtype(float32(A) * 2^-f), the same correctly rounded steps every time."""
        for g in self.groups:
            scale = math.ldexp(1.0, -g.frac_bits)
            if self.dtype in (torch.float32, torch.float64):  # float64 holds every int32 exactly
                self.view[g.start:g.stop].copy_(self.acc[g.start:g.stop]).mul_(scale)
                continue
            # Via float32 chunk by chunk (no full-size temporary): copy_ from int32 straight to a
            # 16-bit float would round once from the integer, scaling after would round again.
            for a in range(g.start, g.stop, CHUNK):
                b = min(a + CHUNK, g.stop)
                part = self.scratch[:b - a]
                part.copy_(self.acc[a:b]).mul_(scale)
                self.view[a:b].copy_(part)

    def perturb(self, seed: int, scale: float) -> None:
        """view += scale * z(seed) (rounded to the view's dtype); undone exactly by ``refresh``."""
        for a, b, z in self.layout.iter_rademacher(seed, torch.float32, [(0, self.layout.size)], self.scratch):
            self.view[a:b].add_(z, alpha=scale)

    def add(self, seed: int, coeffs: Mapping[int, int]) -> None:
        """acc += c_f * z(seed) in each step group f (int32, wrapping). Does not refresh."""
        groups = [g for g in self.groups if coeffs.get(g.frac_bits, 0)]
        coeff = [coeffs[g.frac_bits] for g in groups]
        ranges = [(g.start, g.stop) for g in groups]
        k = 0
        for a, b, z in self.layout.iter_rademacher(seed, torch.int32, ranges, self.scratch.view(torch.int32)):
            while b > groups[k].stop:
                k += 1
            self.acc[a:b].add_(z, alpha=coeff[k])

    def add_many(self, items: Sequence[tuple[int, Mapping[int, int]]]) -> None:
        """``add(seed, coeffs)`` for every item, with the same result bit for bit. Does not refresh.

        On a small layout (the demo tunes 26k biases) the per-direction overhead of generating one
        seed at a time dominates, so directions are grown together (one vectorised Philox pass
        per block of seeds) and summed per step group with one float64 matrix product: with
        z = 2b - 1 for bits b, sum_m c_m z_m = 2 (c . b) - sum_m c_m. Every term and partial sum is
        an integer below 2^31 * 256 < 2^53, so float64 holds it exactly in any summation order;
        the total is then added to the int32 accumulators with the same wrap-around as ``add``.
        A sparse direction is z = (2b - 1) m for mask bits m: sum_m c_m z_m = 2 (c . bm) - c . m."""
        if self.layout.size > SMALL_LAYOUT or len(items) < 4:
            for seed, coeffs in items:
                self.add(seed, coeffs)
            return
        for g, total in self._group_totals(items):
            part = self.acc[g.start:g.stop]
            part.copy_(_wrap32(part.to(torch.int64) + total))

    def _group_totals(self, items: Sequence[tuple[int, Mapping[int, int]]]) -> Iterator[tuple[_Group, torch.Tensor]]:
        """For a small layout: sum_m c_m z_m per step group (int64), a block of seeds at a time.

        The block's directions are grown together (``PerturbationLayout.signs_many``: one vectorised
        Philox pass, bytes expanded to +-1 (or 0, sparse) float32 through the sign table), and each
        coefficient is split into three balanced 11-bit digits, c = c0 + c1 2^11 + c2 2^22 with
        |c_i| <= 2^10. One float32 matrix product (3 x n) @ (n x d) then sums each digit's terms:
        with n <= 256 seeds a block, every partial sum is an integer below 2^18 < 2^24, which float32
        holds exactly, so the result is the same in any summation order; the digits are recombined
        in int64."""
        step = max(1, min(256, _MANY_BLOCK // self.layout.size))
        totals: dict[int, torch.Tensor] = {}  # group index -> int64 sum over every block
        for i in range(0, len(items), step):
            block = items[i:i + step]
            signs = self.layout.signs_many([seed for seed, _ in block])  # (n, size) float32
            for k, g in enumerate(self.groups):
                c = [coeffs.get(g.frac_bits, 0) for _, coeffs in block]
                if not any(c):
                    continue
                digits = torch.tensor([_digits(x) for x in c], dtype=torch.float32, device=self.view.device).T
                parts = (digits @ signs[:, g.start:g.stop]).to(torch.int64)  # (3, group size), exact
                total = parts[0].add_(parts[1], alpha=1 << 11).add_(parts[2], alpha=1 << 22)
                totals[k] = totals[k].add_(total) if k in totals else total
        for k, total in totals.items():
            yield self.groups[k], total

    def parameters(self) -> list[torch.nn.Parameter]:
        """The model's tuned parameters, in layout order (their data is the view)."""
        return [self._params[n] for n in self.names]

    def flatten(self, tensors: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Per-parameter tensors (layout order; None for zero) as one float32 vector over the layout,
        zero in the padding: what ``PerturbationLayout.project`` takes."""
        flat = torch.zeros(self.layout.size, dtype=torch.float32, device=self.view.device)
        for i, t in enumerate(tensors):
            if t is not None:
                self.layout.segment(flat, i).copy_(t.reshape(-1))
        return flat

    def tensors(self) -> dict[str, torch.Tensor]:
        """The accumulators per tensor name (views into ``acc``)."""
        return {n: self.layout.segment(self.acc, i).view(self.shapes[n]) for i, n in enumerate(self.names)}

    def state_hash(self) -> str:
        """SHA-256 over (name, shape, accumulator bytes) of every tuned tensor, in name order."""
        h = hashlib.sha256()
        for name, i in sorted((n, i) for i, n in enumerate(self.names)):
            h.update(name.encode() + b"\0" + repr(self.shapes[name]).encode() + b"\0")
            for part in self._acc_parts(i):
                h.update(part.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _acc_parts(self, i: int) -> Iterator[torch.Tensor]:
        """Tensor ``i``'s accumulators (int32, flat), in consecutive pieces."""
        yield self.layout.segment(self.acc, i)

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace the accumulators (from a snapshot) and refresh the view."""
        for i, name in enumerate(self.names):
            src = tensors[name]
            if tuple(src.shape) != self.shapes[name] or src.dtype != torch.int32:
                raise ValueError(f"snapshot tensor {name} has the wrong shape or dtype")
            self.layout.segment(self.acc, i).copy_(src.reshape(-1))
        self.refresh()
