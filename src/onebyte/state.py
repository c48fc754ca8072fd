"""Integer fixed-point state: the model as a pure function of the records applied to it.

Each tuned tensor t lives as int32 accumulators ``A_t`` with a power-of-two step
``delta_t = 2^-f_t``; the float weights the model runs with are a *view*
``theta_t = float32(A_t) * delta_t``, recomputed whenever ``A_t`` changes. Integer addition
commutes, so replicas that applied the same set of records hold the same bits in any order.

All tuned tensors share two flat buffers (``acc`` int32 and ``view`` float32) laid out by
``PerturbationLayout``, ordered by (step, name) so tensors of equal step are contiguous and one
update is one vector op per step group. The model's parameters are re-pointed at slices of
``view``: perturbing the model is one ``add_`` over the flat view.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .rng import PerturbationLayout

__all__ = ["FixedPointState", "frac_bits_for"]

#: Elements per chunk when expanding a direction (1 MiB of float32: stays in cache).
CHUNK = 1 << 18

#: Layouts up to this size replay many directions at once (``add_many``); larger ones one by one.
SMALL_LAYOUT = 1 << 20

#: Values (directions x layout) expanded at once by ``add_many``: 32 MiB as float64.
_MANY_BLOCK = 1 << 22

#: Accumulators keep about 4x headroom over the base weights: |A| <= 2^29 * 4 < 2^31.
_ACC_BITS = 29


def frac_bits_for(max_abs: float) -> int:
    """f such that 2^(31-f) >= 4 * max(max_abs, 1): the representable range has 4x headroom."""
    if not math.isfinite(max_abs):
        raise ValueError("base weights are not finite")
    _, e = math.frexp(max(max_abs, 1.0))  # max_abs < 2^e
    return _ACC_BITS - e


@dataclass(frozen=True)
class _Group:
    frac_bits: int
    start: int
    stop: int


class FixedPointState:
    """The tuned tensors of ``model`` as int32 accumulators plus the float view the model uses."""

    def __init__(self, params: Iterable[tuple[str, torch.nn.Parameter]], device: str | torch.device = "cpu"):
        items = list(params)
        if not items:
            raise ValueError("no parameters to tune")
        frac = {n: frac_bits_for(float(p.detach().abs().max())) for n, p in items}
        items.sort(key=lambda np_: (-frac[np_[0]], np_[0]))
        self.names = [n for n, _ in items]
        self.shapes = {n: tuple(p.shape) for n, p in items}
        self.frac_bits = frac
        self.layout = PerturbationLayout(self.names, [p.numel() for _, p in items], device)
        self.acc = torch.zeros(self.layout.size, dtype=torch.int32, device=device)
        self.view = torch.empty(self.layout.size, dtype=torch.float32, device=device)
        # Directions are expanded chunk by chunk into this small reusable buffer (read as float32
        # to perturb, as int32 to update): a full-size z would cost memory and page faults.
        self.scratch = torch.empty(min(self.layout.size, CHUNK), dtype=torch.float32, device=device)
        self._params: dict[str, torch.nn.Parameter] = {}
        for i, (name, p) in enumerate(items):
            # float32 * 2^f is exact and |result| < 2^31, so rounding in float32 is exact too.
            # Chunked, so no full-size temporary of the largest tensor exists at any time.
            src, dst, scale = p.detach().reshape(-1), self.layout.segment(self.acc, i), math.ldexp(1.0, frac[name])
            for a in range(0, src.numel(), CHUNK):
                part = src[a:a + CHUNK].to(device=device, dtype=torch.float32) * scale
                dst[a:a + CHUNK].copy_(torch.round_(part))
            p.requires_grad_(False)  # forward-only: no autograd graph, no gradient buffers
            p.data = self.layout.segment(self.view, i).view(self.shapes[name])
            self._params[name] = p
        self.groups = self._make_groups()
        self.refresh()

    def _make_groups(self) -> list[_Group]:
        groups: list[_Group] = []
        for i, name in enumerate(self.names):
            f = self.frac_bits[name]
            start = self.layout.offsets[i]
            stop = self.layout.offsets[i + 1] if i + 1 < len(self.names) else self.layout.size
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
        """Recompute the float view exactly from the accumulators (also undoes any perturbation)."""
        for g in self.groups:
            self.view[g.start:g.stop].copy_(self.acc[g.start:g.stop]).mul_(math.ldexp(1.0, -g.frac_bits))

    def perturb(self, seed: int, scale: float) -> None:
        """view += scale * z(seed); undone exactly by ``refresh``."""
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
        the total is then added to the int32 accumulators with the same wrap-around as ``add``."""
        if self.layout.size > SMALL_LAYOUT or len(items) < 4:
            for seed, coeffs in items:
                self.add(seed, coeffs)
            return
        step = max(1, min(256, _MANY_BLOCK // self.layout.size))
        shifts = torch.arange(8, dtype=torch.uint8, device=self.acc.device)
        for i in range(0, len(items), step):
            block = items[i:i + step]
            raw = self.layout.bits_many([seed for seed, _ in block])  # (n, size // 8)
            bits = ((raw.unsqueeze(2) >> shifts) & 1).reshape(len(block), -1)  # bit k of byte j -> 8j + k
            for g in self.groups:
                c = torch.tensor([coeffs.get(g.frac_bits, 0) for _, coeffs in block], dtype=torch.float64,
                                 device=self.acc.device)
                if not bool(c.any()):
                    continue
                total = 2 * (c @ bits[:, g.start:g.stop].to(torch.float64)).to(torch.int64) - int(c.sum().item())
                part = self.acc[g.start:g.stop]
                part.copy_((((part.to(torch.int64) + total) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The accumulators per tensor name (views into ``acc``)."""
        return {n: self.layout.segment(self.acc, i).view(self.shapes[n]) for i, n in enumerate(self.names)}

    def state_hash(self) -> str:
        """SHA-256 over (name, shape, accumulator bytes) of every tuned tensor, in name order."""
        h = hashlib.sha256()
        tensors = self.tensors()
        for name in sorted(tensors):
            t = tensors[name]
            h.update(name.encode() + b"\0" + repr(tuple(t.shape)).encode() + b"\0")
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace the accumulators (from a snapshot) and refresh the view."""
        for i, name in enumerate(self.names):
            src = tensors[name]
            if tuple(src.shape) != self.shapes[name] or src.dtype != torch.int32:
                raise ValueError(f"snapshot tensor {name} has the wrong shape or dtype")
            self.layout.segment(self.acc, i).copy_(src.reshape(-1))
        self.refresh()
