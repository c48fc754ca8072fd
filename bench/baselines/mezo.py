"""Float SPSA written the MeZO way (Malladi et al. 2023): in-place ``normal_`` perturbations of
the parameters, regenerated from a seed each time, one update per projected gradient.

The one float baseline for onebyte's fixed-point engine: the quality experiment trains with it,
the speed experiment times its step and its replay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


@torch.no_grad()
def perturb(params: Sequence[torch.Tensor], seed: int, scale: float) -> None:
    """θ += scale · z, with z ~ N(0, I) regenerated from ``seed`` (never stored)."""
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.add_(torch.normal(0.0, 1.0, size=p.shape, generator=gen, dtype=p.dtype), alpha=scale)


def projected_gradient(params: Sequence[torch.Tensor], seed: int, eps: float, loss: Callable[[], float]) -> float:
    """(L(θ + εz) − L(θ − εz)) / 2ε, leaving θ where it was (up to float rounding)."""
    perturb(params, seed, eps)
    plus = loss()
    perturb(params, seed, -2 * eps)
    minus = loss()
    perturb(params, seed, eps)
    return (plus - minus) / (2 * eps)


def update(params: Sequence[torch.Tensor], seed: int, lr: float, grad: float) -> None:
    """θ −= lr · g · z: apply one projected gradient along its direction."""
    perturb(params, seed, -lr * grad)
