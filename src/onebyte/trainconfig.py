"""``TrainConfig``: every setting that changes the math the replicas of a run must agree on (and
the estimator, each site's own way of measuring), frozen and validated, each field documenting
itself once (``settings.doc``). Its ``canonical`` form is what the run tag hashes (with the run's
top-level math, ``config.Run``), so a field added later carries a ``legacy`` value under which old
runs keep their tags. ``onebyte.config`` exports it with the rest of the configuration.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .codec import Codec
from .errors import ConfigError
from .modes import (
    FORWARD_ONLY,
    MAX_SPARSITY,
    Aggregate,
    Balance,
    Directions,
    Estimator,
    Scalar,
    Schedule,
    Step,
    Weighting,
    cosine_factor,
    forward_passes,
)
from .params import TuneSpec
from .settings import doc, plain, settings

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Every setting that changes the math the replicas of a run must agree on (and the estimator,
    each site's own way of measuring). Each field documents itself once (``doc``): the run file,
    the command line's flags and the reference page are derived from it.

    Defaults are the demo's: MiniLM on VADER learns well within minutes when only biases move.
    Exact projections (grad: one backward pass, then K = 1,024 normalised scalars along the round's
    shared directions, a record moving the model by lr times their mean) with a cosine learning
    rate over the demo's 300 rounds: measured against fzoo side by side (BENCHMARKS.md, "Exact
    projected gradients"). ``TrainConfig.for_estimator`` gives a forward-only estimator the
    settings it was measured with (``FORWARD_ONLY``)."""

    codec: Codec = field(default=Codec.BYTE, metadata=doc(
        "wire format of a gradient: byte (one byte each, plus one exponent byte per record), sign (one "
        "bit), or float32 (four bytes: the exact baseline)", math=True))
    lr: float = field(default=0.1, metadata=doc(
        "learning rate: how far a scalar moves the model (see step)", math=True))
    eps: float = field(default=1e-3, metadata=doc("perturbation size (epsilon)", math=True))
    samples: int = field(default=1024, metadata=doc(
        "projected gradients per peer per round (K): thousands with grad (one backward pass gives them "
        "all), a few with a forward-only estimator (each costs a forward pass); a site may send fewer "
        "(onebyte peer --link-budget sizes them to its line)", math=True))
    batch_size: int = field(default=32, metadata=doc("examples per projected gradient", math=True))
    tune: str = field(default="bias", metadata=doc(
        "which weights are tuned: all, bias, norm, bias+norm, regex:PATTERN (on parameter names), or "
        "lora:r=R[,alpha=A][,targets=M1,M2]", math=True))
    directions: Directions = field(default=Directions.SHARED, metadata=doc(
        "distinct: every gradient has its own direction; shared: the peers of a round share its K "
        "directions (a round's records add their codes per direction first: replay costs K "
        "generations, whatever the swarm's size)", math=True))
    max_length: int = field(default=32, metadata=doc("tokens per example", math=True))
    estimator: Estimator = field(default=Estimator.GRAD, metadata=doc(
        "how this site measures its scalars (each site may choose its own, if it sends the run's kind "
        "of scalar): grad (one forward and backward pass, then exact projections onto the K "
        "directions), jvp (exact, forward-mode, one pass per direction, inference-like memory), spsa "
        "(two-point, 2K forward passes for K), fzoo (one-sided, normalised by the spread of the K "
        "perturbed losses, K + 1 passes on one batch), centered (fzoo with the mean perturbed loss as "
        "baseline, K passes), or es (the mean perturbed loss as baseline, unnormalised, K passes). On "
        "the command line without a run file, a forward-only estimator brings the settings it was "
        "measured with", legacy="spsa"))
    lr_schedule: Schedule = field(default=Schedule.COSINE, metadata=doc(
        "the learning rate over rounds: constant, or cosine (from lr down to final_ratio times it over "
        "horizon rounds, then flat)", math=True, legacy="constant"))
    eps_schedule: Schedule = field(default=Schedule.CONSTANT, metadata=doc(
        "the perturbation size over rounds: constant, or cosine (as lr_schedule)", math=True,
        legacy="constant"))
    warmup: int = field(default=0, metadata=doc(
        "rounds of linear learning-rate warm-up before the schedule", math=True, legacy=0))
    horizon: int = field(default=300, metadata=doc(  # the demo's rounds (Defaults.rounds)
        "rounds a cosine schedule runs over", math=True, legacy=0))
    final_ratio: float = field(default=0.1, metadata=doc(
        "where a cosine schedule ends, times its start", math=True, legacy=0.1))
    weighting: Weighting = field(default=Weighting.EXAMPLES, metadata=doc(
        "how much a site's record counts: examples (in proportion to its examples, FedAvg's weighting: "
        "the sum is the gradient over all the swarm's data however sites differ in size and labels) "
        "or equal (every record the same)", math=True, legacy="equal"))
    reference_examples: int = field(default=0, metadata=doc(
        "with weighting = examples, the count that weighs 1: 0 learns it from the swarm (the mean "
        "count its heartbeats advertise; the weight is then rounded to sixteenths in [1/16, 4]), "
        "or a fixed number (a typical site's count)", math=True, legacy=0))
    density: float = field(default=1.0, metadata=doc(
        "sparse directions: the fraction of the tuned elements each direction moves: 1 (dense), 1/2, "
        "1/4, ... down to 1/256 (a random mask grown from the direction's seed, as Sparse-MeZO's)",
        math=True, legacy=1.0))
    aggregate: Aggregate = field(default=Aggregate.SUM, metadata=doc(
        "how a round's records combine: sum (each record counts fully), or robust: every peer "
        "measures the round's shared directions and the step is a robust statistic of their scalars: "
        "median (also called robust; use about half sum's lr), trimmed (a trimmed mean), or clipped "
        "(the mean of the scalars within 3 robust standard deviations of their median, times their "
        "number: the recommended robust setting, with lr = 0.002)", math=True, legacy="sum",
        aliases=("robust",)))
    scalar: Scalar = field(default=Scalar.AUTO, metadata=doc(
        "what a scalar means: derivative (the projection g.z: spsa, es), normalised (divided by its "
        "spread over the record's K directions: fzoo, centered), or auto (the estimator's own; grad "
        "and jvp send either, normalised when auto)", math=True, legacy="auto"))
    step: Step = field(default=Step.MEAN, metadata=doc(
        "how far a record moves the model: scalar (lr x each scalar, the paper's: retune lr with K), "
        "or mean (lr x the mean of its K estimates: lr means the same step whatever K is)", math=True,
        legacy="scalar"))
    balance: Balance = field(default=Balance.SQRT, metadata=doc(
        "how a site draws a batch from its data: sqrt (a class in proportion to the square root of its "
        "examples, then an example of it: rare labels weigh more than their count), classes (a class "
        "uniformly among those it holds: rare labels weigh as much as common ones) or none (uniformly: the "
        "file's label mix)",
        math=True, legacy="none"))
    seed_pool: int = field(default=0, metadata=doc(
        "a finite pool of directions: 0 (every direction grows from its own seed), or P, a power of two "
        "up to 2^20: every direction of every round is one of P pool seeds, so the fine-tune is the base "
        "plus one integer total per pool seed and step group, and a newcomer catches up from those "
        "totals (kilobytes) however long the run has been (pool.py)", math=True, legacy=0))

    #: What the settings added after the first runs were implicitly then (each field's ``legacy``):
    #: a run that keeps them is described (and tagged) without them, so run directories written
    #: before keep their run tags.
    LEGACY: ClassVar[dict[str, Any]]
    #: The run file's table of these settings (``settings``).
    SECTION: ClassVar[str] = "train"

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            out.append(("train.lr", f"must be a positive number, not {self.lr}"))
        if not (isinstance(self.eps, int | float) and math.isfinite(self.eps) and self.eps > 0):
            out.append(("train.eps", f"must be a positive number, not {self.eps}"))
        for name, lo, hi in (("samples", 1, 16384), ("batch_size", 1, 4096), ("max_length", 4, 4096)):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                out.append((f"train.{name}", f"must be an integer in {lo}..{hi}, not {v!r}"))
        try:
            TuneSpec.parse(self.tune)
        except ConfigError as exc:
            out += [("train.tune", m) for _, m in exc.problems] or [("train.tune", str(exc))]
        if not (isinstance(self.reference_examples, int) and not isinstance(self.reference_examples, bool)
                and 0 <= self.reference_examples <= 1 << 40):
            out.append(("train.reference_examples", "must be a whole number of examples >= 0 (0: learned from the "
                        f"swarm), not {self.reference_examples!r}"))
        elif self.reference_examples and self.weighting is Weighting.EQUAL:
            out.append(("train.reference_examples", "weighs sites by their examples: it needs weighting = examples, "
                        "not equal"))
        for name in ("warmup", "horizon"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1 << 31):
                out.append((f"train.{name}", f"must be a whole number of rounds >= 0, not {v!r}"))
        if not (isinstance(self.final_ratio, int | float) and 0 <= self.final_ratio <= 1):
            out.append(("train.final_ratio", f"must be a number in [0, 1], not {self.final_ratio!r}"))
        if not (isinstance(self.density, int | float) and not isinstance(self.density, bool)
                and any(self.density == 2.0 ** -m for m in range(MAX_SPARSITY + 1))):
            out.append(("train.density", f"must be 1, 0.5, 0.25, ... down to 1/{1 << MAX_SPARSITY} (a power of two), "
                        f"not {self.density!r}"))
        if self.estimator in (Estimator.CENTERED, Estimator.ES) and self.samples < 2:
            out.append(("train.samples", f"the {self.estimator.value} estimator needs at least 2 directions"))
        if self.scalar is not Scalar.AUTO and self.estimator.native not in (None, self.scalar):
            out.append(("train.scalar", f"the {self.estimator.value} estimator sends {self.estimator.native.value} "
                        f"scalars, not {self.scalar.value} (grad and jvp send either)"))
        if Schedule.COSINE in (self.lr_schedule, self.eps_schedule) and not self.horizon:
            out.append(("train.horizon", "a cosine schedule needs the rounds it runs over (horizon > 0)"))
        p = self.seed_pool
        if not (isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 1 << 20 and not p & (p - 1)):
            out.append(("train.seed_pool", f"must be 0 (no pool) or a power of two up to {1 << 20}, not {p!r}"))
        return out

    def validate(self) -> TrainConfig:
        problems = self.problems()
        if problems:
            raise ConfigError.many(problems)
        return self

    @property
    def shared_directions(self) -> bool:
        """Every peer of a round measures the same K directions (robust aggregation needs it)."""
        return self.directions is Directions.SHARED or self.aggregate is not Aggregate.SUM

    @property
    def sparsity(self) -> int:
        """Mask streams of a sparse direction: density = 2^-sparsity (0: dense)."""
        return max(0, round(-math.log2(self.density)))

    @classmethod
    def for_estimator(cls, estimator: Estimator | str, **changes: Any) -> TrainConfig:
        """The defaults for ``estimator`` (then ``changes``): ``TrainConfig()``'s for grad and jvp,
        and for a forward-only estimator the settings it was measured with (``FORWARD_ONLY``: K = 4
        directions of its own per peer, lr per scalar), since K forward passes per record at the
        exact estimators' K = 1,024 would take minutes a round."""
        estimator = Estimator(estimator)
        base = {} if estimator.exact else FORWARD_ONLY
        changes = {k: plain(v) for k, v in changes.items()}
        return cls.from_dict({**cls().to_dict(), **base, "estimator": estimator.value, **changes})

    @property
    def meaning(self) -> Scalar:
        """What this run's scalars mean (``scalar``, or the estimator's own; normalised for grad and
        jvp, whose normalised steps were measured best on the demo)."""
        if self.scalar is not Scalar.AUTO:
            return self.scalar
        return self.estimator.native or Scalar.NORMALISED

    def check_method(self, estimator: Estimator) -> None:
        """Refuse a site's ``estimator`` that cannot send this run's scalars (``ConfigError``)."""
        if estimator.native not in (None, self.meaning):
            raise ConfigError.of("estimator", f"this run's scalars are {self.meaning.value}; {estimator.value} "
                                 f"sends {estimator.native.value} ones (grad and jvp send either)")

    def lr_at(self, round_: int) -> float:
        """The learning rate of one scalar in a round: linear warm-up over ``warmup`` rounds, then the
        schedule, divided by K under ``step = mean``. A function of the round only, computed with
        the same IEEE operations everywhere."""
        lr = self.lr if self.step is Step.SCALAR else self.lr / self.samples
        if self.lr_schedule is Schedule.COSINE:
            lr *= cosine_factor(round_ - self.warmup, self.horizon, self.final_ratio)
        if round_ < self.warmup:
            lr *= (round_ + 1) / self.warmup
        return lr

    def eps_at(self, round_: int) -> float:
        """The perturbation size of a round (only the sender uses it: it is not in the update)."""
        if self.eps_schedule is Schedule.COSINE:
            return self.eps * cosine_factor(round_, self.horizon, self.final_ratio)
        return self.eps

    @property
    def learns_reference(self) -> bool:
        """Whether sites weigh themselves against the count the swarm advertises (so each heartbeat
        says its site's count; otherwise it says 0, and the count stays at the site)."""
        return self.weighting is Weighting.EXAMPLES and not self.reference_examples

    def site_weight(self, examples: int, reference: float | None = None) -> float:
        """What a site holding ``examples`` multiplies its scalars by (``Weighting``): 1 when
        weighting is equal; else examples / ``reference_examples`` when that is set; else examples
        / ``reference`` (``modes.swarm_reference`` of the counts the site has heard; None: it has
        heard none, and weighs 1), rounded to sixteenths in [1/16, 4]. With label-skewed sites of
        unequal size the sum of equally weighted local gradients is the gradient of a reweighted
        mixture (a small site of one class pulls as hard as a large one); weighting by examples
        makes it the gradient of the loss over all the swarm's data, as FedAvg weights clients.
        Only the sender uses it: the weight is folded into the scalars it sends, so replay is
        unchanged."""
        if self.weighting is Weighting.EQUAL:
            return 1.0
        if self.reference_examples:
            return examples / self.reference_examples
        if not reference:
            return 1.0
        return min(max(round(16 * examples / reference), 1), 64) / 16

    def forward_passes(self, count: int) -> int:
        """Forward passes a record of ``count`` scalars cost its sender."""
        return forward_passes(self.estimator, count)

    def canonical(self) -> dict[str, Any]:
        """``to_dict`` less the settings that are at their ``LEGACY`` value (see there), with the
        estimator (how a site measures: its own choice) replaced by what its scalars mean: ``fzoo``
        for normalised scalars, nothing (the legacy ``spsa``) for derivatives. So sites that
        backpropagate and sites that run forward passes share one run tag when their scalars mean
        the same, and runs of spsa and fzoo keep the tags they always had."""
        d = self.to_dict()
        d["estimator"] = "fzoo" if self.meaning is Scalar.NORMALISED else "spsa"
        d["scalar"] = "auto"
        if self.reference_examples:  # weighting by examples was implied by a reference, before it had a name
            del d["weighting"]
        legacy = _legacy(type(self))
        return {k: v for k, v in d.items() if not (k in legacy and legacy[k] == v)}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Parse a (run file or run.json) ``[train]`` table; unknown keys are errors."""
        problems: list[tuple[str, str]] = []
        known = {f.name for f in fields(cls)}
        problems += [(f"train.{k}", "is not a setting (known: " + ", ".join(sorted(known)) + ")")
                     for k in d if k not in known]
        values = {k: v for k, v in d.items() if k in known}
        for s in settings(cls):
            if s.name not in values:
                continue
            v = values[s.name]
            if s.kind is Codec:
                try:
                    values[s.name] = Codec.parse(str(v))
                except ValueError as exc:
                    problems.append((s.key, str(exc)))
            elif issubclass(s.kind, enum.Enum):
                try:
                    values[s.name] = s.kind(v)
                except ValueError:
                    choices = ", ".join(s.choices[:-1]) + " or " + s.choices[-1]
                    problems.append((s.key, f"must be {choices}, not {v!r}"))
            elif s.kind is float and isinstance(v, int) and not isinstance(v, bool):
                values[s.name] = float(v)  # TOML writes 1 for 1.0; accept ints where floats are meant
        if problems:
            raise ConfigError.many(problems)
        return cls(**values).validate()


@functools.cache
def _legacy(cls: type) -> dict[str, Any]:
    """The ``legacy`` values of a ``TrainConfig`` class's settings (``doc``)."""
    return {f.name: f.metadata["legacy"] for f in fields(cls) if "legacy" in f.metadata}


TrainConfig.LEGACY = _legacy(TrainConfig)
