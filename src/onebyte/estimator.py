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

A perturbation is applied to the float view in place and undone exactly from the integer
accumulators, so measuring costs the forward passes, chunk-by-chunk expansions of the direction
(cheaper than holding a full-size z), and no copy of the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .errors import DivergenceError
from .state import FixedPointState

#: The largest normalised scalar ``fzoo`` sends, in spreads. The one-sided differences share an
#: offset (the curvature term) that σ does not see; when it dwarfs σ (often with K = 2 or 3, rarely
#: with K = 4: the largest of 700 records on the demo was 6.4) the scalars would grow without bound
#: and one record could hit the update cap. Clipping is the sender's, so the update stays order-free.
FZOO_CLIP = 8.0

__all__ = ["FZOO_CLIP", "Measurement", "projected_gradient", "measure", "measure_es", "measure_fzoo", "measure_private"]

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
    g = np.clip(diff / sigma, -FZOO_CLIP, FZOO_CLIP) if sigma > 0 else np.zeros_like(diff)
    return Measurement(g, base)


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
