"""The two-point SPSA estimator: g = (L(theta + eps z) - L(theta - eps z)) / (2 eps).

The perturbation is applied to the float view in place and undone exactly from the integer
accumulators, so measuring costs two forward passes, two chunk-by-chunk expansions of the
direction (cheaper than holding a full-size z), and no copy of the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .errors import DivergenceError
from .state import FixedPointState

__all__ = ["Measurement", "projected_gradient", "measure", "measure_private"]

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
