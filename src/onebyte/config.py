"""Frozen, validated configuration, and the run file every site shares.

* ``TrainConfig``: everything that changes the math every replica must agree on.
* ``RunSpec``: a run as its sites describe it — run id, model, task, objective, labels and the
  ``TrainConfig`` — loadable from and writable to a TOML run file (``onebyte init run.toml``).
* ``ListedKey``: a site key the run lets publish (the run file's ``[[keys]]``; see ``identity``).
  The keys are part of the ``RunSpec`` but not of the run tag: sites are added and revoked
  mid-run without forking the run.
* ``Run``: a ``RunSpec`` bound to its base model's hash. Its *run tag* is a hash of the canonical
  configuration (the fields that change the math, plus the base hash): records and heartbeats
  carry it, and mismatched peers are rejected, with the differing fields named
  (``differing_fields``).

Problems are reported together, each naming its field as in the run file (``train.lr``); the
command line maps fields to its flags. Nothing here imports torch.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import reprlib
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from .codec import Codec
from .errors import ConfigError, RunMismatch
from .params import TuneSpec

__all__ = ["Aggregate", "Balance", "Directions", "Estimator", "Scalar", "Schedule", "Step", "forward_passes",
           "ObjectiveKind",
           "TrainConfig", "ListedKey", "RunSpec", "Defaults", "Setting", "doc", "settings", "reference_markdown",
           "Run", "parse_split", "differing_fields", "cosine_factor"]


#: Mask streams at most: sparse directions down to a density of 2^-8 of the tuned elements.
MAX_SPARSITY = 8


def doc(help: str, *, math: bool = False, legacy: Any = None, example: str | None = None,
        aliases: tuple[str, ...] = ()) -> dict[str, Any]:
    """A setting's one description, kept in its dataclass field's metadata; the run file's comment,
    the flag and its help, and the reference page are all derived from it (``settings``).

    ``help``: one paragraph. ``math``: the setting is in the run tag (the run file marks it
    [math]). ``legacy``: its value in runs written before it existed; a run at that value is tagged
    without it, so their run tags stay as they were (``TrainConfig.LEGACY``). ``example``: what the
    run file shows, commented out, for an optional setting left unset. ``aliases``: other names an
    enum setting accepts."""
    meta: dict[str, Any] = {"help": help, "math": math, "example": example, "aliases": aliases}
    if legacy is not None:
        meta["legacy"] = legacy
    return meta


class Directions(enum.Enum):
    """``distinct``: every gradient has its own direction (the paper's method; replay cost grows
    with the swarm). ``shared``: all peers of a round measure along the same K directions, so a
    round's records add their codes per direction first and replay costs K generations."""

    DISTINCT = "distinct"
    SHARED = "shared"


class Aggregate(enum.Enum):
    """How a round's records move the state along its directions (``update.py``).

    * ``sum``: every record's scalars are added (the paper's method): one bad record moves the model
      as far as the per-gradient cap allows.
    * ``median``, ``trimmed``: every peer of a round measures the same K directions (shared
      directions, whatever ``directions`` says), and the step along each is a robust statistic of
      the peers' scalars times their number: the coordinate-wise median, or the mean after dropping
      the lowest and highest quarter. With the ``sign`` codec the median is the majority sign.
    * ``clipped``: shared directions too; the step is the mean of the scalars that lie within 3
      robust standard deviations (median absolute deviation) of their median, times the number of
      peers: without an outlier ``sum``'s step; a flipped, capped or random record far from the
      others counts not at all, and the rest stand in for it. The recommended robust setting.
      ``robust`` names the median (BENCHMARKS.md, "Hostile insiders"; a trimmed mean lost more
      under a sign-flip attack in the one run measured). Run every robust aggregate below ``sum``'s
      learning rate (the median at about half, ``clipped`` at 0.002): the peers' measurements then
      fall along K directions instead of n·K, so each step carries ``sum``'s signal with more noise
      along fewer directions.
    """

    SUM = "sum"
    MEDIAN = "median"
    TRIMMED = "trimmed"
    CLIPPED = "clipped"

    @classmethod
    def _missing_(cls, value: object) -> Aggregate | None:
        return cls.MEDIAN if value == "robust" else None


class Estimator(enum.Enum):
    """How a peer turns forward passes into the scalars it sends (``estimator.py``).

    * ``spsa``: two-point, (L(θ+εz) − L(θ−εz)) / 2ε per direction, each on its own batch: 2K
      forward passes for K scalars (the paper's).
    * ``fzoo``: FZOO's one-sided, normalised form (arXiv 2506.09034): K directions on one batch
      against one shared unperturbed loss, each difference divided by the standard deviation of
      the K perturbed losses: K + 1 forward passes, scalars of unit scale whatever ε and the loss.
    * ``centered``: FZOO with the mean of the K perturbed losses as the baseline instead of the
      unperturbed loss (the z-scores of the perturbed losses): K forward passes, and the offset
      that one-sided differences share (the curvature term) is gone. Needs K >= 2.
    * ``es``: the mean of the K perturbed losses as baseline, unnormalised: K forward passes.
    * ``grad``: one forward and one backward pass, then the exact gradient projected onto the K
      directions (K dot products): K in the thousands costs little more than one pass.
    * ``jvp``: forward-mode exact directional derivatives (``torch.func.jvp``), one per direction,
      at inference-like memory: for sites that cannot hold the activations a backward pass needs.

    ``grad`` and ``jvp`` measure exactly and can send either meaning of scalar (``Scalar``); the
    forward-only estimators send their own.
    """

    SPSA = "spsa"
    FZOO = "fzoo"
    CENTERED = "centered"
    ES = "es"
    GRAD = "grad"
    JVP = "jvp"

    @property
    def exact(self) -> bool:
        """Measures the directional derivative exactly (autograd), not from loss differences."""
        return self in (Estimator.GRAD, Estimator.JVP)

    @property
    def native(self) -> Scalar | None:
        """The meaning of the scalars this estimator sends (None: whichever the run's is)."""
        if self in (Estimator.FZOO, Estimator.CENTERED):
            return Scalar.NORMALISED
        return None if self.exact else Scalar.DERIVATIVE


class Scalar(enum.Enum):
    """What a record's scalar along direction z *means*: the run's, in its run tag, because the
    update lr x scalar x z must mean the same for every author (DESIGN §14).

    * ``derivative``: the directional derivative, the gradient's projection g . z (spsa, es,
      grad, jvp).
    * ``normalised``: the projection divided by its spread over the record's K directions, about
      g . z / |g| (fzoo's; grad and jvp divide their exact projections by the same spread).
    * ``auto``: the run's estimator's own (derivative for grad and jvp).
    """

    AUTO = "auto"
    DERIVATIVE = "derivative"
    NORMALISED = "normalised"


class Balance(enum.Enum):
    """How a site draws the examples of a batch from its shard.

    * ``none``: uniformly: the shard's label mix, so a rare class weighs what it counts and a
      site's loss can fall by ignoring it (on a file of 64/27/9 % labels, macro-F1 fell while
      accuracy rose).
    * ``classes``: a class uniformly among those the shard holds, then an example of it: the
      expected loss is the mean of the per-class losses (the class-balanced loss), computed
      from the site's own labels, so nothing about them leaves the site. Unlabelled data
      (objective ``lm``) is drawn uniformly whatever this says.
    * ``sqrt``: between the two: a class with probability proportional to the square root of
      its examples (64/27/9 % becomes 49/32/18 %), then an example of it.
    """

    NONE = "none"
    CLASSES = "classes"
    SQRT = "sqrt"


class Step(enum.Enum):
    """How far a record's scalars move the state.

    * ``scalar``: each scalar q along z moves it by lr x q x z (the paper's; a record of K scalars
      moves it about K times as far as one, so the learning rate must be retuned with K).
    * ``mean``: lr x q x z / K, K the run's scalars per record: a record moves the state by lr
      times its mean estimate (1/K) sum q_k z_k, an unbiased estimate of the gradient (derivative
      scalars) or of its direction (normalised ones), so raising K lowers the noise without
      changing the step's size, and the learning rate means the same whatever K is.
    """

    SCALAR = "scalar"
    MEAN = "mean"


class Schedule(enum.Enum):
    """A value as a function of the round only: ``constant``, or ``cosine`` from the set value
    down to ``final_ratio`` times it over ``horizon`` rounds (then flat)."""

    CONSTANT = "constant"
    COSINE = "cosine"


def cosine_factor(round_: int, horizon: int, final_ratio: float) -> float:
    """``final + (1 - final) * (1 + cos(pi * t)) / 2`` at ``t = min(round, horizon) / horizon``.

    The cosine is a fixed Taylor polynomial evaluated by Horner's rule: only IEEE-754 additions and
    multiplications, which every machine rounds alike, where ``math.cos`` may differ in the last
    bit between C libraries. The learning rate enters every replica's integer update, so it must
    be the same double everywhere."""
    t = min(max(round_, 0), horizon) / horizon
    x2 = (math.pi * t) ** 2
    c = 0.0
    for n in range(24, 0, -1):  # cos x = sum (-1)^n x^2n / (2n)!, |x| <= pi: 24 terms are exact to 1 ulp
        c = 1.0 - c * x2 / ((2 * n - 1) * (2 * n))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + c)


class ObjectiveKind(enum.Enum):
    """``classify``: the label from the text; ``lm``: next-token loss; ``auto`` = classify."""

    AUTO = "auto"
    CLASSIFY = "classify"
    LM = "lm"


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
    reference_examples: int = field(default=0, metadata=doc(
        "sites count equally (0), or in proportion to their examples, this many counting once: each "
        "folds the weight examples / reference_examples into its scalars (FedAvg's weighting: use it "
        "when sites' data differ in size or labels; set it to a typical site's count)", math=True,
        legacy=0))
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
            out.append(("train.reference_examples", "must be a whole number of examples >= 0 (0: every site counts "
                        f"the same), not {self.reference_examples!r}"))
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
        changes = {k: _plain(v) for k, v in changes.items()}
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

    def site_weight(self, examples: int) -> float:
        """What a site holding ``examples`` multiplies its scalars by: 1, or examples /
        ``reference_examples`` when that is set. With label-skewed sites of unequal size the sum of
        equally weighted local gradients is the gradient of a reweighted mixture (a small site of one
        class pulls as hard as a large one); weighting by examples makes the sum the gradient of the
        loss over all the swarm's data, as FedAvg weights clients. Only the sender uses it: the weight
        is folded into the scalars it sends, so replay is unchanged."""
        return examples / self.reference_examples if self.reference_examples else 1.0

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
        legacy = _legacy(type(self))
        return {k: v for k, v in d.items() if not (k in legacy and legacy[k] == v)}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

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


#: What a forward-only estimator runs with by default (``TrainConfig.for_estimator``): the library's
#: defaults before exact projections, measured on the demo (BENCHMARKS.md, "Estimators").
FORWARD_ONLY = {"samples": 4, "lr": 3e-3, "step": "scalar", "directions": "distinct"}


def forward_passes(estimator: Estimator, count: int) -> int:
    """Forward passes (a backward pass counts as two, a jvp as two) a record of ``count`` scalars
    costs its sender."""
    return {Estimator.SPSA: 2 * count, Estimator.FZOO: count + 1, Estimator.CENTERED: count,
            Estimator.ES: count, Estimator.GRAD: 3, Estimator.JVP: 2 * count}[estimator]


def _plain(v: Any) -> Any:
    if isinstance(v, Codec):
        return v.label
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple):
        return list(v)
    return v


@dataclass(frozen=True)
class Setting:
    """One documented setting, as the run file, the command line and the reference page show it:
    read from its dataclass field (``settings``), never written down a second time."""

    name: str
    section: str  # "" (the run file's top level) or "train"
    kind: type  # int, float, str, bool, tuple (a list of names), or an enum
    default: Any  # as the run file writes it (plain JSON types)
    help: str
    math: bool
    example: str | None = None  # an unset optional setting, as the run file shows it commented out
    aliases: tuple[str, ...] = ()
    forward_only: Any = None  # the default a forward-only estimator brings (FORWARD_ONLY), if other

    @property
    def key(self) -> str:
        """Its name in error messages and in the run file: ``train.lr``, ``run_id``."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...]:
        """An enum setting's values (then its aliases); () for any other."""
        if self.kind is Codec:
            return tuple(c.label for c in Codec)
        if issubclass(self.kind, enum.Enum):
            return tuple(m.value for m in self.kind) + self.aliases
        return ()

    def shown_default(self) -> str:
        """The default as the flag's help and the reference show it ("" for an unset one)."""
        if self.default is None or self.default == []:
            return ""
        text = _toml(self.default).strip('"')
        if self.forward_only is not None:
            text += f"; a forward-only estimator: {_toml(self.forward_only).strip(chr(34))}"
        return text


def settings(cls: type) -> list[Setting]:
    """The documented settings of ``RunSpec`` or ``TrainConfig`` (or a subclass), in field order:
    every field whose metadata has its ``doc``."""
    hints = typing.get_type_hints(cls)
    section = "train" if issubclass(cls, TrainConfig) else ""
    out = []
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # str | None: an optional setting
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        kind = typing.get_origin(kind) or kind
        alt = FORWARD_ONLY.get(f.name) if section else None
        out.append(Setting(f.name, section, kind, _plain(f.default), f.metadata["help"], f.metadata["math"],
                           f.metadata["example"], f.metadata["aliases"], alt))
    return out


class Defaults:
    """The options of ``simulate`` and ``peer`` that are not the run's own (not in ``RunSpec``),
    shared by the Python API, the simulator and the command line: one place, one value."""

    peers = 4
    rounds = 300  # the demo: 1,200 records of K = 1,024 exact projections at 4 peers
    split = "iid"
    seed = 0
    #: held-out examples to evaluate: N (the same fixed-seed sample in every run), 0 (none), or
    #: None (all of them); the simulator evaluates about ten times a run, a peer at start and end
    eval_size: int | None = None


def reference_markdown(run: type | None = None, train: type | None = None) -> str:
    """The run file's settings and their flags as a Markdown reference page (the docs site's), from
    the same field documentation that the run file ``onebyte init`` writes and the flags' help use.
    ``run``, ``train``: ``RunSpec`` and ``TrainConfig`` (or subclasses of them)."""
    out = ["Every setting of the run file, the flag that overrides it (on `init`, `simulate`, `peer`, "
           "`swarm` and `eval`), and its default. Settings marked [math] change what a record means: "
           "every peer must agree on them, or its records are rejected as another run's. `onebyte init "
           "run.toml` writes this file with the same text as comments.", ""]
    for title, cls in (("Top level", run or RunSpec), ("`[train]`", train or TrainConfig)):
        out += [f"## {title}", "", "| setting | flag | default | values | [math] | what it sets |",
                "|---|---|---|---|---|---|"]
        for s in settings(cls):
            values = ", ".join(f"`{c}`" for c in s.choices) or _KIND_WORDS.get(s.kind, "text")
            default = f"`{s.shown_default()}`" if s.shown_default() else "unset"
            out.append(f"| `{s.name}` | `{s.flag}` | {default} | {values} | {'yes' if s.math else ''} | "
                       f"{s.help.replace('|', '&#124;')} |")
        out.append("")
    return "\n".join(out)


_KIND_WORDS = {int: "integer", float: "number", bool: "true or false", tuple: "list of names", str: "text"}


@dataclass(frozen=True)
class ListedKey:
    """A site's public key as the run file lists it (``[[keys]]``): ``name`` for people,
    ``public`` the 32-byte Ed25519 public key (written as 64 hex digits), and ``until``: None, or
    the round from which the key's records stop counting (revoked); ``admin``: the key may sign
    revocations of other keys (``identity.Revocation``; any key may revoke itself). The peer id is
    derived from the key (``identity.peer_id_of``), so it is not written down."""

    name: str
    public: bytes
    until: int | None = None
    admin: bool = False

    FIELDS = ("name", "public", "until", "admin")

    @classmethod
    def parse(cls, d: Any, where: str) -> tuple[ListedKey | None, list[tuple[str, str]]]:
        """A key from its run-file table, or None and the problems (fields named ``where.field``)."""
        if not isinstance(d, dict):
            return None, [(where, 'must be a table: name = "...", public = "<64 hex digits>", until = ROUND')]
        problems = [(f"{where}.{k}", "is not a setting of a key (known: name, public, until, admin)")
                    for k in d if k not in cls.FIELDS]
        name, public, until, admin = d.get("name"), d.get("public"), d.get("until"), d.get("admin", False)
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            problems.append((f"{where}.name", f"must be a name of 1..200 characters, not {name!r}"))
        raw = None
        if isinstance(public, str) and len(public) == 64:
            try:
                raw = bytes.fromhex(public)
            except ValueError:
                pass
        if raw is None:
            problems.append((f"{where}.public", f"must be the key's 64 hex digits (onebyte keygen prints them), "
                             f"not {public!r}"))
        if until is not None and not (isinstance(until, int) and not isinstance(until, bool)
                                      and 0 <= until < 1 << 32):
            problems.append((f"{where}.until", f"must be the round from which the key is revoked (>= 0), "
                             f"not {until!r}"))
        if not isinstance(admin, bool):
            problems.append((f"{where}.admin", f"must be true or false, not {admin!r}"))
        if problems:
            return None, problems
        return cls(name, raw, until, admin), []

    def to_toml(self) -> str:
        """The key as a ``[[keys]]`` table of the run file."""
        out = f"[[keys]]\nname = {_toml(self.name)}\npublic = {_toml(self.public.hex())}\n"
        out += f"until = {self.until}\n" if self.until is not None else ""
        return out + ("admin = true\n" if self.admin else "")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "public": self.public.hex()}
        if self.until is not None:
            d["until"] = self.until
        if self.admin:
            d["admin"] = True
        return d


def _parse_keys(value: Any) -> tuple[tuple[ListedKey, ...], list[tuple[str, str]]]:
    """The run file's ``[[keys]]`` (a list of tables), checked for repeated names and keys."""
    if not isinstance(value, list | tuple):
        return (), [("keys", "must be a list of [[keys]] tables")]
    keys, problems = [], []
    for i, d in enumerate(value):
        key, bad = (d, []) if isinstance(d, ListedKey) else ListedKey.parse(d, f"keys[{i}]")
        problems += bad
        if key is None:
            continue
        for other in keys:
            if other.name == key.name:
                problems.append((f"keys[{i}].name", f"{key.name!r} is listed twice"))
            if other.public == key.public:
                problems.append((f"keys[{i}].public", f"is the key of {other.name!r} again"))
        keys.append(key)
    return tuple(keys), problems


@dataclass(frozen=True)
class RunSpec:
    """A run as every site describes it. ``model`` and ``task`` are names or local paths (each
    site's own data); the rest must be equal at every site (it makes the run tag).

    ``keys``: the site keys allowed to publish (empty: the swarm secret's HMAC mode). They are
    deliberately not in the run tag (``math``), so a site can be added or revoked mid-run by
    editing the run file; a replica whose run file is older refuses a newer site's records as
    unlisted (and still counts a key revoked since) until its run file is updated and its peer
    restarted."""

    run_id: str = field(default="onebyte", metadata=doc("the run's name: part of the run tag", math=True))
    model: str = field(default="minilm", metadata=doc(
        "minilm, tiny-gpt2, smollm2, or a local Hugging Face model directory (each site may keep its own "
        "copy; the weights must be the same: the base hash is part of the run tag)"))
    task: str = field(default="vader", metadata=doc(
        "vader, tweets, or this site's own data file (.jsonl, .json, .csv, .tsv or .parquet)"))
    objective: ObjectiveKind = field(default=ObjectiveKind.AUTO, metadata=doc(
        "classify (the label from the text), lm (next-token loss), or auto (= classify)", math=True))
    labels: tuple[str, ...] = field(default=(), metadata=doc(
        "label names in index order, comma-separated on the command line (empty: sorted from the data)",
        math=True))
    eval_file: str | None = field(default=None, metadata=doc(
        "this site's held-out data file (unset: 20% of task, always the same texts)",
        example="held-out.jsonl"))
    text_column: str = field(default="text", metadata=doc("the column of this site's data file holding the text"))
    label_column: str = field(default="label", metadata=doc(
        "the column of this site's data file holding the label"))
    template: str | None = field(default=None, metadata=doc(
        "how an example is put to the model, naming any of its columns as {column} (on the command "
        "line \\n is a newline; unset: the text alone)", math=True, example="Review: {review}\nSentiment:"))
    chat: bool = field(default=False, metadata=doc(
        "wrap the prompt in the model's chat template (causal LMs that have one)", math=True))
    train: TrainConfig = field(default_factory=TrainConfig)
    keys: tuple[ListedKey, ...] = ()

    def __post_init__(self) -> None:  # friendly types from Python callers: strings and lists
        if not isinstance(self.keys, tuple) or not all(isinstance(k, ListedKey) for k in self.keys):
            keys, problems = _parse_keys(self.keys)
            if problems:
                raise ConfigError.many(problems)
            object.__setattr__(self, "keys", keys)
        if isinstance(self.objective, str):
            try:
                object.__setattr__(self, "objective", ObjectiveKind(self.objective))
            except ValueError:
                raise ConfigError.of("objective", f"must be auto, classify or lm, not {self.objective!r}") from None
        if isinstance(self.labels, list | str):
            labels = self.labels.split(",") if isinstance(self.labels, str) else self.labels
            object.__setattr__(self, "labels", tuple(str(x).strip() for x in labels if str(x).strip()))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))

    def problems(self) -> list[tuple[str, str]]:
        out = list(self.train.problems())
        if not isinstance(self.run_id, str) or not 1 <= len(self.run_id) <= 200:
            out.append(("run_id", f"must be a name of 1..200 characters, not {self.run_id!r}"))
        if not isinstance(self.model, str) or not self.model:
            out.append(("model", "must be minilm, tiny-gpt2, smollm2 or a local model directory"))
        if not isinstance(self.task, str) or not self.task:
            out.append(("task", "must be vader, tweets or a local data file"))
        if self.labels and len(self.labels) < 2:
            out.append(("labels", "needs at least two names"))
        for name in ("text_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                out.append((name, "must be a column name"))
        if self.template is not None and (not isinstance(self.template, str) or "{" not in self.template):
            out.append(("template", f"must name at least one column as {{column}}, not {self.template!r}"))
        if not isinstance(self.chat, bool):
            out.append(("chat", f"must be true or false, not {self.chat!r}"))
        out += _parse_keys(self.keys)[1]
        return out

    def validate(self) -> RunSpec:
        problems = self.problems()
        if problems:
            raise ConfigError.many(problems)
        return self

    def with_overrides(self, **changes: Any) -> RunSpec:
        """A copy with ``changes`` applied; keys of ``TrainConfig`` go to ``train``; None is ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        train_keys = {f.name for f in fields(TrainConfig)}
        train = {k: changes.pop(k) for k in list(changes) if k in train_keys}
        unknown = [k for k in changes if k not in {f.name for f in fields(self)}]
        if unknown:
            raise ConfigError.many([(k, "is not a setting") for k in unknown])
        spec = replace(self, **changes)
        if train:
            spec = replace(spec, train=replace(spec.train, **train))
        return spec

    def math(self) -> dict[str, Any]:
        """The canonical configuration: every field that changes the math, plain JSON types."""
        return {"run_id": self.run_id, "objective": self.objective.value, "labels": list(self.labels),
                "template": self.template, "chat": self.chat, "train": self.train.canonical()}

    def to_dict(self) -> dict[str, Any]:
        d = {"run_id": self.run_id, "model": self.model, "task": self.task, "objective": self.objective.value,
             "labels": list(self.labels), "text_column": self.text_column, "label_column": self.label_column,
             "chat": self.chat, "train": self.train.to_dict()}
        for optional in ("eval_file", "template"):
            if getattr(self, optional) is not None:
                d[optional] = getattr(self, optional)
        if self.keys:
            d["keys"] = [k.to_dict() for k in self.keys]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "run file") -> RunSpec:
        known = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ConfigError.many([(k, f"is not a setting of a {where} (known: {', '.join(sorted(known))})")
                                    for k in unknown])
        d = dict(d)
        train = d.pop("train", {})
        if not isinstance(train, dict):
            raise ConfigError.of("train", "must be a table of training settings")
        problems: list[tuple[str, str]] = []
        try:
            train_cfg = TrainConfig.from_dict(train)
        except ConfigError as exc:
            problems += exc.problems or [("train", str(exc))]
            train_cfg = TrainConfig()
        try:
            spec = cls(**d, train=train_cfg)
        except ConfigError as exc:
            raise ConfigError.many(problems + exc.problems) from None
        except TypeError as exc:
            raise ConfigError(f"invalid {where}: {exc}") from None
        problems += spec.problems() if not problems else []
        if problems:
            raise ConfigError.many(problems)
        return spec

    @classmethod
    def load(cls, path: Path | str) -> RunSpec:
        """Read a TOML run file (``onebyte init`` writes a commented template)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"run file {path} not found (onebyte init {path} writes one)") from None
        except OSError as exc:
            raise ConfigError(f"run file {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"run file {path} is not valid TOML: {exc}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            if not exc.problems:
                raise
            raise ConfigError(problems=exc.problems, prefix=f"run file {path}: ") from None

    def to_toml(self) -> str:
        """This spec as a commented run file (``RunSpec.load`` reads it back equal): every setting
        under its own documentation (``settings``), then the site keys."""
        return "\n".join([RUN_FILE_HEAD, *_toml_settings(self), "[train]", "", *_toml_settings(self.train),
                          _keys_toml(self.keys)])

    def save(self, path: Path | str) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def _keys_toml(keys: tuple[ListedKey, ...]) -> str:
    """The run file's site-key section: the listed keys, or a commented example."""
    out = KEYS_TEMPLATE
    if not keys:
        return out + '# [[keys]]\n# name = "plant-a"\n# public = "<the 64 hex digits onebyte keygen printed>"\n'
    return out + "".join(k.to_toml() for k in keys)


KEYS_TEMPLATE = """
# Site keys. Listed: every record and heartbeat must be signed by its site's key (onebyte keygen
# KEY writes one and prints its lines; onebyte peer --key KEY signs with it), and a peer's id is
# derived from its key; unlisted: peers share the swarm secret (--secret-file). until = R revokes
# a key: its records of rounds >= R stop counting, on every replica alike. Not part of the run
# tag: keys are added or revoked mid-run by updating this file at every site (and restarting
# its peer); until then a site with the old file refuses the new keys and counts revoked ones.
# admin = true lets a key sign revocations of others (onebyte revoke SITE --from R --key KEY
# --run DIR): they reach every peer without a new file or a restart.
"""


RUN_FILE_HEAD = """\
# onebyte run file: every site of a run uses the same file (copy it to each site).
# Settings marked [math] change what a record means: every peer must agree on them, or its
# records are rejected as another run's (the log names the differing settings).
# Command-line flags override what is written here.
"""


def _toml_settings(obj: Any) -> list[str]:
    """The run file's lines for ``obj``'s settings: each one's documentation as a comment, then
    its value (an unset optional one commented out, with its example), then a blank line."""
    lines = []
    for s in settings(type(obj)):
        text = ("[math] " if s.math else "") + s.help
        lines += textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ", break_long_words=False,
                               break_on_hyphens=False)
        value = getattr(obj, s.name)
        lines.append(f"# {s.name} = {_toml(s.example)}" if value is None else f"{s.name} = {_toml(_plain(value))}")
        lines.append("")
    return lines


@dataclass(frozen=True)
class Run:
    """A ``RunSpec`` bound to its base model: what ``run.json`` stores and the run tag names."""

    spec: RunSpec
    base_hash: str

    @property
    def train(self) -> TrainConfig:
        return self.spec.train

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def objective(self) -> ObjectiveKind:
        return self.spec.objective

    def canonical(self) -> dict[str, Any]:
        """What the run tag is a hash of: the math of the spec and the base model's hash."""
        return {**self.spec.math(), "base_hash": self.base_hash}

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()

    def shared(self) -> dict[str, Any]:
        """What every site's run file must agree on, and what a peer answers CONF with: the
        canonical configuration, and the listed site keys by public key (``differing_keys``). The
        keys are not part of the run tag (sites are added and revoked during a run), so peers
        compare them when they meet."""
        d = self.canonical()
        if self.spec.keys:
            d["keys"] = {k.public.hex(): k.to_dict() for k in self.spec.keys}
        return d

    def shared_bytes(self) -> bytes:
        return json.dumps(self.shared(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def run_tag(self) -> bytes:
        """16 bytes naming (run id, base model, math): records carry it; mismatches are rejected."""
        return hashlib.sha256(self.canonical_bytes()).digest()[:16]

    def to_json(self) -> str:
        d = {"spec": self.spec.to_dict(), "base_hash": self.base_hash, "run_tag": self.run_tag.hex()}
        return json.dumps(d, indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path | str) -> Run:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            train = d["spec"].get("train")
            if isinstance(train, dict):  # written before these settings existed: they had their LEGACY values
                d["spec"]["train"] = {**TrainConfig.LEGACY, **train}
            run = cls(RunSpec.from_dict(d["spec"], where="run.json"), str(d["base_hash"]))
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: is this a onebyte run directory?") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON, text, shape
            raise ConfigError(f"{path} is not a valid run description: {exc}") from None
        except OSError as exc:  # a directory, unreadable, ...
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        if "run_tag" in d and d["run_tag"] != run.run_tag.hex():
            raise RunMismatch(f"{path}: its run tag does not match its settings (edited by hand?)")
        return run


#: What a peer's configuration may show of itself in our logs: a short repr, a few lines.
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxdict = _SHOW.maxlist = 4
_SHOW.maxlevel = 2
MAX_DIFFERENCES = 12


def differing_fields(ours: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    """``"field: ours vs theirs"`` for every field of two canonical configurations that differs
    (``theirs`` comes from another peer: shown shortened, at most ``MAX_DIFFERENCES`` lines)."""
    out = []
    for k in sorted(set(ours) | set(theirs)):
        a, b = ours.get(k), theirs.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, f"{prefix}{k}.")
        elif a != b:
            if k == "base_hash" and isinstance(a, str) and isinstance(b, str):
                a, b = a[:12] + "…", b[:12] + "…"
            out.append(f"{prefix}{k}: {_SHOW.repr(a)} here, {_SHOW.repr(b)} there")
    return out if prefix else _at_most(out)


def differing_keys(ours: dict[str, dict[str, Any]], theirs: Any) -> list[str]:
    """What differs between our run file's site keys and another peer's (``Run.shared``'s
    ``keys``: public key hex -> its table), named by the key's name: keys one side lists, and
    ``until`` or ``admin`` that differ (a name alone is for people, and may differ)."""
    if not isinstance(theirs, dict) or not all(isinstance(v, dict) for v in theirs.values()):
        return [f"keys: not a list of keys there ({_SHOW.repr(theirs)})"]
    out = []
    for pub in sorted(set(ours) | set(theirs)):
        a, b = ours.get(pub), theirs.get(pub)
        name = _SHOW.repr((a or b).get("name"))
        if a is None or b is None:
            out.append(f"key {name} ({pub[:12]}…): listed {'there' if a is None else 'here'} only")
            continue
        out += [f"key {name}: {f} {_SHOW.repr(a.get(f))} here, {_SHOW.repr(b.get(f))} there"
                for f in ("until", "admin") if a.get(f) != b.get(f)]
    return _at_most(out)


def _at_most(lines: list[str]) -> list[str]:
    """The first ``MAX_DIFFERENCES`` lines, and how many more there were."""
    extra = len(lines) - MAX_DIFFERENCES
    return lines if extra <= 0 else [*lines[:MAX_DIFFERENCES], f"{extra} more"]


def parse_split(text: str) -> float | None:
    """``iid`` -> None; ``dirichlet:ALPHA`` -> ALPHA."""
    if text == "iid":
        return None
    if text.startswith("dirichlet:"):
        try:
            alpha = float(text.split(":", 1)[1])
        except ValueError:
            alpha = -1.0
        if math.isfinite(alpha) and alpha > 0:
            return alpha
    raise ConfigError.of("split", f"must be iid or dirichlet:ALPHA with ALPHA > 0, not {text!r}")
