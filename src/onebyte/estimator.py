"""Estimators: forward passes in, one scalar per direction out.

* ``measure`` (``spsa``): two-point, g = (L(θ+εz) − L(θ−εz)) / 2ε, each direction on its own
  batch: 2K forward passes.
* ``measure_fzoo`` (``fzoo``, after FZOO, arXiv 2506.09034): the K directions share one batch and
  one unperturbed loss L0; the scalar of direction i is (L(θ+εz_i) − L0) / σ, σ the standard
  deviation of the K perturbed losses: K + 1 forward passes. Dividing by σ (≈ ε‖∇L‖ for
  Rademacher z) makes the step a normalised-gradient step: its size is set by the learning rate,
  not by the loss's scale or ε, and each peer normalises its own scalars, so a peer whose shard
  gives large losses does not outvote the others. The sender folds σ in before encoding; the
  update stays lr × scalar × z, an order-free integer sum like SPSA's.
* ``measure_fzoo(centered=True)`` (``centered``): the same, with the mean of the K perturbed
  losses as the baseline instead of L0: K forward passes, and no shared offset (see there).
* ``measure_private``: DP-ZO (per-example clipped two-point differences plus Gaussian noise).
* ``measure_grad`` (``grad``): one forward and backward pass gives the exact gradient g of the
  batch's loss with respect to the tuned tensors; its projections g . z_k onto the K directions
  cost K expansions and dot products (``PerturbationLayout.project``), never K x d at once.
* ``measure_jvp`` (``jvp``): the same projections by forward-mode AD, one ``torch.func.jvp`` per
  direction, holding no activations beyond a forward pass's.

Exact projections are sent as the run's scalars mean them (``scaled``): the directional
derivatives themselves, or divided by their spread over the K directions (about |g|, as fzoo's
normalised scalars are).

A perturbation is applied to the float view in place and undone exactly from the integer
accumulators, so measuring costs the forward passes, chunk-by-chunk expansions of the direction
(cheaper than holding a full-size z), and no copy of the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.attention

from .errors import DivergenceError
from .state import FixedPointState

#: The largest normalised scalar ``fzoo`` sends, in spreads. The one-sided differences share an
#: offset (the curvature term) that σ does not see; when it dwarfs σ (often with K = 2 or 3, rarely
#: with K = 4: the largest of 700 records on the demo was 6.4) the scalars would grow without bound
#: and one record could hit the update cap. Clipping is the sender's, so the update stays order-free.
FZOO_CLIP = 8.0

__all__ = ["FZOO_CLIP", "Measurement", "projected_gradient", "measure", "measure_es", "measure_fzoo", "measure_private",
           "measure_grad", "measure_grad_private", "measure_jvp", "gradient", "per_example_gradients", "scaled"]

B = TypeVar("B")


@dataclass(frozen=True)
class Measurement:
    ghat: np.ndarray  # projected gradients, float64
    loss: float  # mean of (L+ + L-)/2 over the gradients: the training loss at theta


def projected_gradient(state: FixedPointState, loss: Callable[[B], float], batch: B, seed: int,
                       eps: float) -> tuple[float, float, float]:
    """(g, L+, L-) along the direction grown from ``seed``; leaves the state as it found it."""
    try:
        state.perturb(seed, eps)
        plus = float(loss(batch))
        state.perturb(seed, -2.0 * eps)
        minus = float(loss(batch))
    finally:
        state.refresh()
    if not (np.isfinite(plus) and np.isfinite(minus)):
        raise DivergenceError(f"loss is not finite (L+={plus}, L-={minus})")
    return (plus - minus) / (2.0 * eps), plus, minus


@torch.inference_mode()
def measure(state: FixedPointState, loss: Callable[[B], float], batches: Sequence[B],
            seeds: Sequence[int], eps: float) -> Measurement:
    """One projected gradient per (batch, seed), all at the current state."""
    g, losses = [], []
    for batch, seed in zip(batches, seeds, strict=True):
        gk, plus, minus = projected_gradient(state, loss, batch, seed, eps)
        g.append(gk)
        losses.append(0.5 * (plus + minus))
    return Measurement(np.asarray(g, dtype=np.float64), float(np.mean(losses)))


@torch.inference_mode()
def measure_es(state: FixedPointState, loss: Callable[[B], float], batch: B, seeds: Sequence[int],
               eps: float) -> Measurement:
    """Mean-baseline differences on one batch, not normalised: g_i = (L_i − mean L) / ε · K/(K−1),
    K forward passes. E[g_i z_i] is the gradient (the factor undoes the baseline's share of L_i),
    as for SPSA, so peers' scalars keep their magnitudes and the swarm's sum estimates the gradient
    of the sum of the peers' losses, skewed shards included; each direction costs one pass, not two."""
    k = len(seeds)
    lp = _perturbed_losses(state, loss, batch, seeds, eps)
    return Measurement((lp - lp.mean()) / eps * (k / (k - 1)), float(lp.mean()))


def _perturbed_losses(state: FixedPointState, loss: Callable[[B], float], batch: B, seeds: Sequence[int],
                      eps: float) -> np.ndarray:
    """L(θ + εz_i) on one batch for each seed; the state is restored exactly after each."""
    perturbed = []
    for seed in seeds:
        try:
            state.perturb(seed, eps)
            perturbed.append(float(loss(batch)))
        finally:
            state.refresh()
    lp = np.asarray(perturbed, dtype=np.float64)
    if not np.all(np.isfinite(lp)):
        raise DivergenceError(f"loss is not finite (perturbed={perturbed})")
    return lp


@torch.inference_mode()
def measure_fzoo(state: FixedPointState, loss: Callable[[B], float], batch: B, seeds: Sequence[int],
                 eps: float, centered: bool = False) -> Measurement:
    """Normalised scalars along ``seeds`` on one batch.

    ``centered=False`` is FZOO: (L_i − L0) / σ, K + 1 forward passes (σ: the sample standard
    deviation of the K perturbed losses; FZOO's 1/(εN) is folded into the learning rate). With one
    direction there is no spread: the scalar is the sign of the difference.
    ``centered=True`` takes the mean of the perturbed losses as the baseline instead of L0:
    (L_i − mean L) / σ, K forward passes. The one-sided differences share an offset, the
    curvature term ε²zᵀHz/2 (measured on the demo: a record's mean scalar is 0.6 of their
    spread), which moves every record along the sum of its directions, a random direction;
    centring removes it and the unperturbed pass with it, at the price of a factor (1 − 1/K).
    When every perturbed loss is the same (σ = 0) the scalars are 0: no step. Scalars are clipped
    to ±``FZOO_CLIP`` (see there)."""
    base = None if centered else float(loss(batch))
    if base is not None and not np.isfinite(base):
        raise DivergenceError(f"loss is not finite (L0={base})")
    lp = _perturbed_losses(state, loss, batch, seeds, eps)
    if centered:
        base = float(lp.mean())
    diff = lp - base
    sigma = float(lp.std(ddof=1)) if len(lp) > 1 else float(abs(diff[0]))
    return Measurement(_normalise(diff, sigma), base)


def _normalise(values: np.ndarray, sigma: float) -> np.ndarray:
    """``values / sigma`` clipped to ±``FZOO_CLIP``; zeros when there is no spread (sigma = 0)."""
    return np.clip(values / sigma, -FZOO_CLIP, FZOO_CLIP) if sigma > 0 else np.zeros_like(values)


@torch.inference_mode()
def measure_private(state: FixedPointState, losses: Callable[[B], np.ndarray], batches: Sequence[B],
                    seeds: Sequence[int], eps: float, clip: float, noise_std: float,
                    rng: np.random.Generator) -> Measurement:
    """DP-ZO: per-example directional derivatives clipped to [-clip, clip], summed, plus
    N(0, noise_std^2), over the batch size. ``rng`` must be private (never a public seed)."""
    g, mean_loss = [], []
    for batch, seed in zip(batches, seeds, strict=True):
        try:
            state.perturb(seed, eps)
            plus = np.asarray(losses(batch), dtype=np.float64)
            state.perturb(seed, -2.0 * eps)
            minus = np.asarray(losses(batch), dtype=np.float64)
        finally:
            state.refresh()
        if not (np.all(np.isfinite(plus)) and np.all(np.isfinite(minus))):
            raise DivergenceError("a per-example loss is not finite")
        d = np.clip((plus - minus) / (2.0 * eps), -clip, clip)
        g.append((float(d.sum()) + float(rng.normal(0.0, noise_std))) / len(d))
        mean_loss.append(0.5 * float(plus.mean() + minus.mean()))
    return Measurement(np.asarray(g, dtype=np.float64), float(np.mean(mean_loss)))


def scaled(projections: np.ndarray, normalised: bool) -> np.ndarray:
    """Exact projections as the run's scalars: unchanged (directional derivatives), or divided by
    their standard deviation over the K directions (E[(g.z)^2] = |g|^2 for Rademacher z, so this
    is about g.z / |g|: fzoo's normalised scalar without its curvature offset), clipped like fzoo's.
    One direction has no spread: its scalar is the sign."""
    if not normalised:
        return projections
    sigma = float(projections.std(ddof=1)) if len(projections) > 1 else float(abs(projections[0]))
    return _normalise(projections, sigma)


def gradient(state: FixedPointState, loss: Callable[[B], torch.Tensor], batch: B) -> tuple[torch.Tensor, float]:
    """(g, L): the gradient of ``loss(batch)`` (a scalar tensor) with respect to the tuned tensors,
    as one float32 vector over the state's layout, and the loss. Autograd sees the float view (the
    integer accumulators stay the master copy); the parameters are frozen again afterwards."""
    params = state.parameters()
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            value = loss(batch)
            if not bool(torch.isfinite(value)):
                raise DivergenceError(f"loss is not finite (L={float(value)})")
            grads = torch.autograd.grad(value, params, allow_unused=True)
    finally:
        for p in params:
            p.requires_grad_(False)
    g = state.flatten(grads)
    if not bool(torch.isfinite(g).all()):
        raise DivergenceError("the gradient is not finite")
    return g, float(value.detach())


def measure_grad(state: FixedPointState, loss: Callable[[B], torch.Tensor], batch: B, seeds: Sequence[int],
                 normalised: bool) -> Measurement:
    """Exact projected gradients: one forward and backward pass, then g . z_k for every seed."""
    g, value = gradient(state, loss, batch)
    proj = np.asarray(state.layout.project(g, seeds), dtype=np.float64)
    return Measurement(scaled(proj, normalised), value)


def measure_grad_private(state: FixedPointState, model: torch.nn.Module, losses: ExampleRows, batch: Sequence,
                         seeds: Sequence[int], clip: float, noise_std: float, rng: np.random.Generator,
                         normalised: bool) -> Measurement:
    """DP-SGD on the projections: each example's gradient (``per_example_gradients``) projected onto
    the K directions, that K-vector clipped to L2 norm ``clip``, the B vectors summed, Gaussian
    noise of ``noise_std`` added to each of the K sums, over B. One example moves the sum by at most
    2 x clip in L2 (replace-one), so the released K scalars are one Gaussian mechanism, whatever K.
    ``rng`` must be private. Normalising (``normalised``) is post-processing of the noisy scalars."""
    grads, value = per_example_gradients(state, model, losses, batch)
    proj = state.layout.project_rows(grads, seeds).numpy()  # (K, B)
    norms = np.linalg.norm(proj, axis=0)
    clipped = proj * np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    noisy = (clipped.sum(axis=1) + rng.normal(0.0, noise_std, size=len(seeds))) / len(batch)
    return Measurement(scaled(noisy, normalised), value)


#: ``Objective.example_rows``: (each example's loss, for each call of the model in order the example
#: each row of its batch serves; None when the model is called once and row i is example i's).
ExampleRows = Callable[[Sequence], tuple[torch.Tensor, "list[torch.Tensor] | None"]]


def per_example_gradients(state: FixedPointState, model: torch.nn.Module, losses: ExampleRows,
                          batch: Sequence) -> tuple[torch.Tensor, float]:
    """(G, L): each example's gradient as a row of G (B x the state's layout) and the mean loss.

    When every tuned tensor is the bias of a module that adds it to each position of its output
    (``nn.Linear``, ``nn.LayerNorm``, GPT-2's ``Conv1D``: the default ``tune = bias``), one batched
    backward pass gives them all (``_bias_rows``). Otherwise, or when that pass's rows do not add up
    to its gradient, one backward pass per example."""
    owners = _bias_owners(model, state.parameters())
    fast = None if owners is None else _bias_rows(state, owners, losses, batch)
    if fast is not None:
        return fast
    rows, values = [], []
    for example in batch:
        g, v = gradient(state, lambda b: losses(b)[0].mean(), [example])
        rows.append(g)
        values.append(v)
    return torch.stack(rows), float(np.mean(values))


def _bias_rows(state: FixedPointState, owners: list[torch.nn.Module], losses: ExampleRows,
               batch: Sequence) -> tuple[torch.Tensor, float] | None:
    """Per-example bias gradients from one backward pass of the summed losses: an example's gradient
    of a bias is the sum, over the positions of the rows that serve it in each call of the module,
    of the gradient at that call's output, which the output's hook sees row by row (rows do not mix
    in a transformer). None when an output is not (rows, ..., features), the calls are not the ones
    ``losses`` names, or the rows do not add up to the gradient."""
    seen: list[dict[int, torch.Tensor]] = [{} for _ in owners]  # per module: its calls' output gradients
    calls = [0] * len(owners)

    def keep(i: int) -> Callable:
        def hook(_module: torch.nn.Module, _args: object, out: torch.Tensor) -> None:
            call, calls[i] = calls[i], calls[i] + 1
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(lambda g: seen[i].__setitem__(call, g.detach()))
        return hook

    which: list[list[torch.Tensor] | None] = []

    def total(b: Sequence) -> torch.Tensor:
        per, rows = losses(b)
        which.append(rows)
        return per.sum()

    handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(owners)]
    try:
        g, value = gradient(state, total, batch)
    finally:
        for h in handles:
            h.remove()
    n, params = len(batch), state.parameters()
    rows = [torch.arange(n)] if which[0] is None else [r.cpu() for r in which[0]]
    per_param = []
    for i, p in enumerate(params):
        acc = torch.zeros(n, p.numel(), dtype=torch.float32)  # no call: the loss does not use it (the pooler)
        for call, x in seen[i].items():
            if call >= len(rows) or x.dim() < 2 or x.shape[0] != len(rows[call]) or x.shape[-1] != p.numel():
                return None
            acc.index_add_(0, rows[call], x.reshape(x.shape[0], -1, x.shape[-1]).sum(dim=1).float().cpu())
        per_param.append(acc)
    out = torch.stack([state.flatten([t[b].view_as(p) for t, p in zip(per_param, params, strict=True)])
                       for b in range(n)])
    if not torch.allclose(out.sum(dim=0), g.cpu(), rtol=1e-3, atol=1e-5 * float(g.abs().max()) + 1e-12):
        return None
    return out.to(g.device), value / n


#: Modules whose output is some function of the input plus ``bias`` at every position.
_BIAS_ADDED = ("Linear", "LayerNorm", "Conv1D")


def _bias_owners(model: torch.nn.Module, params: Sequence[torch.Tensor]) -> list[torch.nn.Module] | None:
    """The module of each tuned tensor when every one is such a module's bias, else None."""
    by_id = {}
    for m in model.modules():
        b = getattr(m, "bias", None)
        if isinstance(b, torch.Tensor) and type(m).__name__ in _BIAS_ADDED:
            by_id.setdefault(id(b), m)
    owners = [by_id.get(id(p)) for p in params]
    return None if any(m is None for m in owners) else owners


def measure_jvp(state: FixedPointState, model: torch.nn.Module, loss: Callable[[B], torch.Tensor], batch: B,
                seeds: Sequence[int], normalised: bool) -> Measurement:
    """Exact projected gradients by forward-mode AD: for each seed, the directional derivative of
    ``loss(batch)`` along z (``torch.func.jvp``), at the memory of a forward pass (no activations
    are kept for a backward one). ``loss`` must call ``model``."""
    from torch.func import functional_call, jvp

    params = state.parameters()
    names = {id(p): n for n, p in model.named_parameters()}  # a tied tensor by its first name: tied again
    keys = [f"model.{names[id(p)]}" for p in params]
    call = _Call(model, loss)
    primals = tuple(p.detach() for p in params)
    z = torch.empty(state.layout.size, dtype=torch.float32, device=state.view.device)

    def f(*ps: torch.Tensor) -> torch.Tensor:
        return functional_call(call, dict(zip(keys, ps, strict=True)), (batch,))

    proj, value = [], math.nan
    for seed in seeds:
        state.layout.rademacher(seed, torch.float32, out=z)
        tangents = tuple(state.layout.segment(z, i).view_as(p).to(p.dtype) for i, p in enumerate(params))
        # the fused attention kernels have no forward-mode derivative; the math one has
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            out, d = jvp(f, primals, tangents)
        value, dz = float(out.detach()), float(d.detach())
        if not (math.isfinite(value) and math.isfinite(dz)):
            raise DivergenceError(f"loss or its derivative is not finite (L={value}, dL={dz})")
        proj.append(dz)
    return Measurement(scaled(np.asarray(proj, dtype=np.float64), normalised), value)


class _Call(torch.nn.Module):
    """``loss(batch)`` as a module holding the model, so ``functional_call`` can swap its tensors."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[B], torch.Tensor]):
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch: B) -> torch.Tensor:
        return self._loss(batch)
