"""The fixed-point state in 5 bytes per float32 weight instead of 8.

``FixedPointState`` keeps int32 accumulators ``A`` beside the float32 view ``dtype(A) * 2^-f``:
8 bytes per tuned weight, 1.47x inference's peak when all of SmolLM2 is tuned. The view already
holds all but the lowest bits of ``A``: float32 keeps 24 significant bits, so
``R = view * 2^f`` (exact: a power-of-two scaling of an integer-valued float) differs from ``A``
by at most half a unit in the last place, 2^6 for |A| < 2^31. ``CompactState`` stores that
remainder ``r = A - R`` as int8 and nothing else: ``A = view * 2^f + r`` exactly, so the state,
its hash, its snapshots and every update are bit for bit those of ``FixedPointState``.

What the compact form cannot do is perturb the view in place: ``view + eps z`` is not on the
grid, and the unperturbed view, which ``A`` is read from, would be lost. So the view is never
perturbed. ``perturb`` only records (seed, scale); hooks on the modules that own tuned tensors
hand each module, for the length of its own forward, a perturbed copy of its tensors (the same
``view + scale z`` arithmetic, so the same losses) and put the view back after. Restoring is
free, and the extra memory is the largest module's tensors (the embedding, for a Llama).

The hooks are only right if every use of a tuned tensor happens inside the forward of a module
that owns it. ``hooks_cover`` checks that on a real forward pass before the compact form is
chosen: the tensors are emptied outside their modules' forwards, so any other use fails or
changes the output, and ``tuned_state`` falls back to ``FixedPointState``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from .state import CHUNK, SMALL_LAYOUT, FixedPointState, _wrap32

#: Positions read, updated and written at once by ``add_many`` (the directions of every item are
#: expanded over a span before it is written back): 2^20 keeps the per-call cost of the generator
#: small against the arithmetic, for 12 MiB of buffers.
SPAN = 1 << 20

__all__ = ["CompactState", "hooks_cover", "owners"]


def owners(model: torch.nn.Module, params: Iterable[torch.nn.Parameter]
           ) -> dict[torch.nn.Module, list[tuple[str, int]]]:
    """Module -> [(attribute name, index into ``params``)] for every module that registers one of
    ``params`` directly (a tied weight has several owners)."""
    index = {id(p): i for i, p in enumerate(params)}
    found: dict[torch.nn.Module, list[tuple[str, int]]] = {}
    for m in model.modules():
        own = [(k, index[id(p)]) for k, p in m._parameters.items() if p is not None and id(p) in index]
        if own:
            found[m] = own
    return found


def hooks_cover(model: torch.nn.Module, params: Sequence[torch.nn.Parameter], forward: Callable[[], object]) -> bool:
    """Whether ``forward()`` uses each of ``params`` only inside a forward of a module owning it.

    Runs ``forward`` twice: as it is, then with every tensor emptied except while its owner's
    forward runs. A use anywhere else reads an empty tensor: an error or another result."""
    found = owners(model, params)
    if len({i for own in found.values() for _, i in own}) != len(params):
        return False
    data = [p.data for p in params]
    try:
        with torch.inference_mode():
            expected = forward()
    except Exception:
        return False
    handles = []

    def fill(m: torch.nn.Module, _args: object) -> None:
        for k, i in found[m]:
            m._parameters[k].data = data[i]

    def empty(m: torch.nn.Module, _args: object, _out: object) -> None:
        for k, i in found[m]:
            m._parameters[k].data = data[i].new_empty(0)

    try:
        for m in found:
            handles += [m.register_forward_pre_hook(fill), m.register_forward_hook(empty)]
        for p in params:
            p.data = p.data.new_empty(0)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty tensor used as a matrix warns before it fails
            got = forward()
    except Exception:  # any failure means a use outside the owners' forwards
        return False
    finally:
        for h in handles:
            h.remove()
        for p, d in zip(params, data, strict=True):
            p.data = d
    if isinstance(expected, torch.Tensor):
        return isinstance(got, torch.Tensor) and torch.equal(expected, got)
    return bool(expected == got)


class CompactState(FixedPointState):
    """``FixedPointState`` for float32 views, as the view plus an int8 remainder (see the module).

    ``attach(model)`` must be called before ``perturb``; perturbations reach the model through
    its modules' forward hooks only."""

    def __init__(self, params: Iterable[tuple[str, torch.nn.Parameter]], device: str | torch.device = "cpu",
                 magnitudes: Mapping[str, float] | None = None, sparsity: int = 0):
        # the perturbations in force, in order, consecutive ones along one direction grouped:
        # [(seed, [scale, ...]), ...] (SPSA's +eps then -2 eps is one run: one expansion per tensor)
        self._runs: list[tuple[int, list[float]]] = []
        self._swapped: dict[int, torch.nn.Parameter] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._pool: torch.Tensor | None = None
        self._version = 0  # bumped by every perturb and refresh: which perturbation is in force
        super().__init__(params, device, magnitudes, sparsity)
        if self.dtype is not torch.float32:
            raise ValueError(f"the compact state holds float32 views only, not {self.dtype}")

    def _alloc(self, device: torch.device | str) -> None:
        self.acc = None  # type: ignore[assignment]
        self.view = torch.empty(self.layout.size, dtype=torch.float32, device=device)
        self.rem = torch.empty(self.layout.size, dtype=torch.int8, device=device)
        self._wide = torch.empty(min(self.layout.size, SPAN), dtype=torch.int64, device=device)
        self._acc = torch.empty(min(self.layout.size, SPAN), dtype=torch.int32, device=device)

    def _zero_padding(self, i: int) -> None:
        a, b = self._padding(i)
        self.view[a:b].zero_()
        self.rem[a:b].zero_()

    def _take(self, i: int, p: torch.Tensor, frac: int, device: torch.device | str) -> None:
        src, off, scale = p.detach().reshape(-1), self.layout.offsets[i], math.ldexp(1.0, frac)
        for a in range(0, src.numel(), CHUNK):
            part = src[a:a + CHUNK].to(device=device, dtype=torch.float32)
            self._write(off + a, frac, torch.round_(part * scale).to(torch.int64))

    # -- A <-> (view, rem), one chunk at a time --------------------------------------------------

    def _read(self, a: int, b: int, frac: int) -> torch.Tensor:
        """A[a:b] as int32 (in a reused buffer). view * 2^f may be 2^31 (A just below it rounds up
        in float32), so it is formed in int64; adding the remainder brings it back in range, and the
        int32 result is exact (two's complement wraps the same either way)."""
        wide = self._wide[:b - a]
        wide.copy_(self.view[a:b] * math.ldexp(1.0, frac))
        out = self._acc[:b - a]
        out.copy_(wide.add_(self.rem[a:b]))
        return out

    def _write(self, a: int, frac: int, acc: torch.Tensor) -> None:
        """Set A[a:a+n] = ``acc`` (int32, or int64 within the int32 range): the view as
        ``refresh`` computes it (int32 -> float32, times 2^-f), and the remainder it leaves out."""
        b = a + acc.numel()
        view = self.view[a:b]
        view.copy_(acc if acc.dtype == torch.int32 else acc.to(torch.int32)).mul_(math.ldexp(1.0, -frac))
        wide = self._wide[:b - a]
        wide.copy_(view * math.ldexp(1.0, frac))
        self.rem[a:b].copy_(torch.sub(acc, wide, out=wide))

    def _chunks(self, start: int, stop: int) -> Iterable[tuple[int, int]]:
        """Spans of at most SPAN positions, each read and written at once."""
        for a in range(start, stop, SPAN):
            yield a, min(a + SPAN, stop)

    # -- the FixedPointState interface ------------------------------------------------------------

    def refresh(self) -> None:
        """Drop the perturbations (the view itself is never perturbed)."""
        self._runs.clear()
        self._version += 1
        for i, p in self._swapped.items():
            p.data = self._segment(i)
        self._swapped.clear()

    def perturb(self, seed: int, scale: float) -> None:
        """From now until ``refresh``, modules see their tuned tensors as view + scale z(seed)
        (after any earlier perturbations, in order)."""
        if not self._handles:
            raise RuntimeError("CompactState.perturb needs attach(model) first")
        if self._runs and self._runs[-1][0] == seed:
            self._runs[-1][1].append(scale)
        else:
            self._runs.append((seed, [scale]))
        self._version += 1
        self.layout.fill(seed)  # one Philox pass; each module's hook expands its part from it

    def add(self, seed: int, coeffs: Mapping[int, int]) -> None:
        self.add_many([(seed, coeffs)])

    def add_many(self, items: Sequence[tuple[int, Mapping[int, int]]]) -> None:
        """A += sum c z over every item, read and written one chunk at a time: each chunk of A is
        read once, receives every direction, and is written once."""
        if self.layout.size <= SMALL_LAYOUT and len(items) >= 4:
            for g, total in self._group_totals(items):
                for a, b in self._chunks(g.start, g.stop):
                    acc = self._read(a, b, g.frac_bits).to(torch.int64).add_(total[a - g.start:b - g.start])
                    self._write(a, g.frac_bits, _wrap32(acc))
            return
        zbuf = self.scratch.view(torch.int32)
        for g in self.groups:
            terms = [(seed, coeffs[g.frac_bits]) for seed, coeffs in items if coeffs.get(g.frac_bits, 0)]
            if not terms:
                continue
            for a, b in self._chunks(g.start, g.stop):
                acc = self._read(a, b, g.frac_bits)
                for seed, c in terms:  # int32, wrapping: as FixedPointState.add
                    for x, y, z in self.layout.iter_rademacher(seed, torch.int32, [(a, b)], zbuf):
                        acc[x - a:y - a].add_(z, alpha=c)
                self._write(a, g.frac_bits, acc)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The accumulators per tensor name, materialised (int32 copies)."""
        return {n: self._acc_of(i).view(self.shapes[n]) for i, n in enumerate(self.names)}

    def _acc_of(self, i: int) -> torch.Tensor:
        n = self.layout.numels[i]
        out = torch.empty(n, dtype=torch.int32, device=self.view.device)
        pos = 0
        for part in self._acc_parts(i):
            out[pos:pos + part.numel()].copy_(part)
            pos += part.numel()
        return out

    def _acc_parts(self, i: int) -> Iterator[torch.Tensor]:
        """Tensor ``i``'s accumulators a span at a time (``state_hash`` streams them)."""
        off, n, frac = self.layout.offsets[i], self.layout.numels[i], self.frac_bits[self.names[i]]
        for a, b in self._chunks(off, off + n):
            yield self._read(a, b, frac)

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        for name in self.names:
            src = tensors[name]
            if tuple(src.shape) != self.shapes[name] or src.dtype != torch.int32:
                raise ValueError(f"snapshot tensor {name} has the wrong shape or dtype")
        self.refresh()
        for i, name in enumerate(self.names):
            src, off = tensors[name].reshape(-1), self.layout.offsets[i]
            for a in range(0, src.numel(), CHUNK):
                part = src[a:a + CHUNK].to(device=self.view.device, dtype=torch.int64)
                self._write(off + a, self.frac_bits[name], part)

    # -- perturbation through forward hooks -------------------------------------------------------

    def _segment(self, i: int) -> torch.Tensor:
        return self.layout.segment(self.view, i).view(self.shapes[self.names[i]])

    def _perturbed(self, i: int, out: torch.Tensor) -> torch.Tensor:
        """Tensor ``i`` as ``perturb`` would have left it in a FixedPointState, written to ``out``
        (flat, its size)."""
        off, n = self.layout.offsets[i], self.layout.numels[i]
        stop = off + -(-n // 8) * 8  # ranges stop on multiples of 8; the segment's padding covers it
        for r, (seed, scales) in enumerate(self._runs):  # each direction expanded once per run, in order
            for a, b, z in self.layout.iter_rademacher(seed, torch.float32, [(off, stop)], self.scratch):
                end = min(b, off + n)
                part, z = out[a - off:end - off], z[:end - a]
                for k, scale in enumerate(scales):
                    if r == 0 and k == 0:
                        torch.add(self.view[a:end], z, alpha=scale, out=part)  # view + scale z, no extra copy
                    else:
                        part.add_(z, alpha=scale)
        return out.view(self.shapes[self.names[i]])

    def attach(self, model: torch.nn.Module) -> None:
        """Hook the modules of ``model`` that own tuned tensors (see ``hooks_cover``)."""
        self.detach()
        params = list(self._params.values())
        found = owners(model, params)

        # One buffer, reused by every module in turn: fresh memory for each would cost a page fault
        # per 4 KiB per forward. A module whose forward runs inside another's (both owning tuned
        # tensors) gets fresh memory instead. A tensor with several owners (a tied embedding and
        # output layer) has a buffer of its own, filled once per perturbation and reused.
        numels = self.layout.numels
        counts: dict[int, int] = {}
        for own in found.values():
            for _, i in own:
                counts[i] = counts.get(i, 0) + 1
        shared = {i: torch.empty(numels[i], dtype=self.view.dtype, device=self.view.device)
                  for i, c in counts.items() if c > 1}
        filled: dict[int, int] = {}  # shared tensor -> the perturbation version it holds
        self._pool = torch.empty(max([sum(numels[i] for _, i in own if i not in shared) for own in found.values()]
                                     + [0]), dtype=self.view.dtype, device=self.view.device)

        def before(m: torch.nn.Module, _args: object) -> None:
            if not self._runs:
                return
            pos, pooled = 0, not self._swapped
            for k, i in found[m]:
                p = m._parameters[k]
                if i in shared:
                    out = shared[i]
                    if filled.get(i) != self._version:
                        self._perturbed(i, out)
                        filled[i] = self._version
                    p.data = out.view(self.shapes[self.names[i]])
                else:
                    if pooled:
                        out, pos = self._pool[pos:pos + numels[i]], pos + numels[i]
                    else:
                        out = torch.empty(numels[i], dtype=self.view.dtype, device=self.view.device)
                    p.data = self._perturbed(i, out)
                self._swapped[i] = p

        def after(m: torch.nn.Module, _args: object, _out: object) -> None:
            for k, i in found[m]:
                if self._swapped.pop(i, None) is not None:
                    m._parameters[k].data = self._segment(i)

        for m in found:
            self._handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._pool = None
        self.refresh()
