"""The modes of a run: enums, never piles of booleans (how directions are drawn, how records
combine, how a site measures, what a scalar means, how a batch is drawn, how far a record moves the
state, how a value follows the rounds, what the model is asked), and the small functions of them.

They are the vocabulary of ``TrainConfig`` (``trainconfig``), kept apart so that what only needs a
mode (the estimator, the update, the RNG's sparsity bound) does not need the whole configuration.
``onebyte.config`` exports them all.
"""

from __future__ import annotations

import enum
import math

__all__ = ["Aggregate", "Balance", "Directions", "Estimator", "ObjectiveKind", "Scalar", "Schedule", "Step",
           "Weighting", "FORWARD_ONLY", "MAX_SPARSITY", "cosine_factor", "forward_passes", "swarm_reference"]


#: Mask streams at most: sparse directions down to a density of 2^-8 of the tuned elements.
MAX_SPARSITY = 8


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


class Weighting(enum.Enum):
    """How much a site's record counts against another's.

    * ``equal``: every record the same: the sum of the sites' local gradients is the gradient of
      a mixture in which a small site of one label pulls as hard as a large one (what that costs
      under label skew: BENCHMARKS.md, "Label skew at large K").
    * ``examples``: in proportion to the site's examples (FedAvg's weighting), so the sum is the
      gradient of the loss over all the swarm's data. The count that weighs 1 is
      ``reference_examples`` when set, else learned from the swarm: each heartbeat advertises its
      site's count, and the reference is their mean (each count clipped to 8 times their median,
      so one site claiming millions cannot shrink everyone else's step). A learned weight is
      rounded to sixteenths within [1/16, 4]: sites of nearly equal size weigh exactly 1, whatever
      subset of the swarm each has heard from. Sites of unequal size weigh 1 until they have heard
      the others, where the simulator knows every count from its first round: their first records
      may differ from the simulator's. Replicas agree whatever each sender heard, because the
      weight is folded into the scalars its record carries.
    """

    EQUAL = "equal"
    EXAMPLES = "examples"


def swarm_reference(counts: list[int]) -> float:
    """The example count that weighs 1 under ``Weighting.EXAMPLES``, learned from the counts a site
    has heard (its own among them): their mean, each clipped to 8 times their median first."""
    known = sorted(c for c in counts if c > 0)
    if not known:
        return 1.0
    mid = len(known) // 2
    median = known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2
    return sum(min(c, 8 * median) for c in known) / len(known)


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


#: What a forward-only estimator runs with by default (``TrainConfig.for_estimator``): the library's
#: defaults before exact projections, measured on the demo (BENCHMARKS.md, "Estimators").
FORWARD_ONLY = {"samples": 4, "lr": 3e-3, "step": "scalar", "directions": "distinct"}


def forward_passes(estimator: Estimator, count: int) -> int:
    """Forward passes (a backward pass counts as two, a jvp as two) a record of ``count`` scalars
    costs its sender."""
    return {Estimator.SPSA: 2 * count, Estimator.FZOO: count + 1, Estimator.CENTERED: count,
            Estimator.ES: count, Estimator.GRAD: 3, Estimator.JVP: 2 * count}[estimator]
