"""Differential privacy on the scalar (the DP-ZO idea): in SPSA only the projected gradient
touches the data, so privatising that one number privatises the whole update.

Per projected gradient on a batch of B examples drawn *without replacement* from the peer's own
n examples (fixed-size sampling, with private randomness: public seeds would tell everyone which
examples were used and void the amplification), each example's directional derivative
``d_i = (l_i(θ+εz) − l_i(θ−εz)) / 2ε`` is clipped to [−C, C], and
``g = (Σ d_i + N(0, (2σC)²)) / B``: under replace-one adjacency one example moves Σ d_i by at
most 2C (its sensitivity), and σ is the noise multiplier relative to it. dp-accounting's RDP
accountant is told exactly that mechanism (a Gaussian of multiplier σ, sampled without
replacement, replace-one adjacency), composed over every gradient the peer measures; the
formulas are dp-accounting's, not ours.

With exact projections (``grad``) the mechanism is DP-SGD on the projections: each example of a
batch drawn the same way gets its own gradient, projected onto the record's K directions; that
K-vector is clipped to L2 norm C, the B vectors summed, and N(0, (2σC)²) added to each of the K
sums. One example moves the sum by at most 2C in L2, so the whole record (all K scalars) is one
Gaussian mechanism of multiplier σ: a grad site composes one event per record where spsa
composes K (``training.private_steps``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import BudgetExhausted, ConfigError, MissingDependency

__all__ = ["DPConfig", "Accountant", "calibrate_noise"]


@dataclass(frozen=True)
class DPConfig:
    epsilon: float
    delta: float
    clip: float = 1.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            out.append(("dp.epsilon", f"must be positive, not {self.epsilon}"))
        if not 0 < self.delta < 1:
            out.append(("dp.delta", f"must be in (0, 1), not {self.delta}"))
        if not (math.isfinite(self.clip) and self.clip > 0):
            out.append(("dp.clip", f"must be positive, not {self.clip}"))
        return out


def _accounting():
    try:
        import dp_accounting
        from dp_accounting import rdp
    except ImportError:
        raise MissingDependency("dp-accounting", "privacy", "differential privacy") from None
    return dp_accounting, rdp


def epsilon_for(noise: float, n: int, batch: int, steps: int, delta: float) -> float:
    """ε after ``steps`` Gaussian mechanisms (noise multiplier ``noise``), each on a batch of
    ``batch`` drawn without replacement from ``n`` examples (replace-one adjacency)."""
    if steps == 0:
        return 0.0
    dpa, rdp = _accounting()
    acc = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    event = dpa.SampledWithoutReplacementDpEvent(n, min(batch, n), dpa.GaussianDpEvent(noise))
    acc.compose(event, steps)
    return float(acc.get_epsilon(delta))


def calibrate_noise(cfg: DPConfig, n: int, batch: int, steps: int) -> float:
    """The smallest noise multiplier (to 1%) whose ε over the planned steps is at most the target."""
    lo, hi = 0.05, 1.0
    while epsilon_for(hi, n, batch, steps, cfg.delta) > cfg.epsilon:
        hi *= 2
        if hi > 1e4:
            raise ConfigError.of("dp.epsilon",
                                    f"no noise level reaches ε={cfg.epsilon} in {steps} steps; train fewer rounds")
    while hi / lo > 1.01:
        mid = math.sqrt(lo * hi)
        if epsilon_for(mid, n, batch, steps, cfg.delta) > cfg.epsilon:
            lo = mid
        else:
            hi = mid
    return hi


class Accountant:
    """Tracks one peer's budget: the planned steps fix the noise; training past them is refused."""

    def __init__(self, cfg: DPConfig, n: int, batch: int, planned_steps: int):
        if batch > n:
            raise ConfigError.of("train.batch_size", f"{batch} exceeds the {n} examples this peer holds")
        self.cfg, self.n, self.batch, self.planned = cfg, n, batch, planned_steps
        self.noise = calibrate_noise(cfg, n, batch, planned_steps)
        self.steps = 0

    def spend(self, steps: int) -> None:
        if self.steps + steps > self.planned:
            raise BudgetExhausted(f"privacy budget exhausted: {self.planned} gradients were planned for "
                                  f"ε={self.cfg.epsilon}; refusing to train further")
        self.steps += steps

    def report(self) -> dict[str, float | int | str]:
        return {"epsilon_spent": epsilon_for(self.noise, self.n, self.batch, self.steps, self.cfg.delta),
                "epsilon_target": self.cfg.epsilon, "delta": self.cfg.delta, "noise_multiplier": self.noise,
                "clip": self.cfg.clip, "steps": self.steps, "planned_steps": self.planned,
                "sampling": f"fixed-size batches of {self.batch} of {self.n}, without replacement, private "
                            "randomness; RDP accountant (dp-accounting), replace-one adjacency"}
