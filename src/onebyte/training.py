"""The two halves of a round that the simulator and a networked peer share.

``Setup`` builds everything a replica needs from a ``RunSpec``: base model, objective, data and
the fixed-point state (``tuned_state``: base -> base hash -> run tag -> LoRA adapters if tuned ->
selected parameters -> state). ``make_record`` turns (state, a peer's shard, seeds) into one signed
record; ``replay.apply_records`` applies records to the state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .config import Balance, Estimator, ObjectiveKind, Run, RunSpec, Scalar, TrainConfig
from .errors import ConfigError
from .estimator import (
    Measurement,
    measure,
    measure_es,
    measure_fzoo,
    measure_grad,
    measure_grad_private,
    measure_jvp,
    measure_private,
)
from .models import LoadedModel, check_base, load_model
from .params import TuneSpec, select_parameters
from .privacy import Accountant
from .record import Record, build_record
from .seeds import direction_seeds, stream_seed
from .state import FixedPointState, magnitude_for
from .tasks.data import Dataset, Example, load_dataset
from .tasks.objectives import Objective, build_objective

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["Setup", "Privacy", "make_record", "batch_for", "class_groups", "tuned_state", "check_private",
           "private_steps"]


def check_private(train: TrainConfig) -> None:
    """Differential privacy clips per-example quantities: the K projections of each example's
    gradient (``grad``: DP-SGD on the projections) or each example's two-point difference
    (``spsa``: DP-ZO). The other estimators measure the batch as a whole."""
    if train.estimator not in (Estimator.GRAD, Estimator.SPSA):
        raise ConfigError.of("train.estimator", f"differential privacy needs grad (per-example gradients, their "
                             f"projections clipped) or spsa (per-example clipped two-point differences), not "
                             f"{train.estimator.value}")


def private_steps(train: TrainConfig, rounds: int) -> int:
    """Gaussian mechanisms a private site runs in ``rounds`` rounds: one per record for ``grad`` (its
    K noisy sums are one release), one per scalar for ``spsa`` (each on its own batch)."""
    return rounds * (1 if train.estimator is Estimator.GRAD else train.samples)


#: ``ONEBYTE_STATE``: ``auto`` (default) picks the compact state for large float32 tuned sets on
#: CPU, ``wide`` always keeps int32 accumulators, ``compact`` asks for the compact one wherever it
#: applies. Both give the same bits (see ``compact``); only memory and time differ.
STATE_ENV = "ONEBYTE_STATE"


def tuned_state(loaded: LoadedModel, tune: str, run_tag: bytes, probe: Callable[[LoadedModel], object] | None = None,
                sparsity: int = 0) -> tuple[LoadedModel, FixedPointState]:
    """The model a run trains and its fixed-point state: for ``lora:`` the base wrapped in adapters
    initialised from ``run_tag`` (only they are tuned), else the base itself.

    ``probe(model)``: one forward pass the state's perturbations must reach (a loss on a few
    examples). With it, a large float32 tuned set on CPU is held as a ``CompactState`` (5 bytes
    per weight, not 8) when its forward hooks are shown to see every use of the tuned tensors.
    Without it (replay, which never perturbs) the compact state is used unattached.
    ``sparsity``: the run's sparse directions (``TrainConfig.sparsity``)."""
    spec = TuneSpec.parse(tune)
    magnitudes = None
    if spec.kind == "lora":
        from .adapters import attach_lora, lora_magnitudes

        loaded = attach_lora(loaded, spec, run_tag)
        magnitudes = lora_magnitudes(loaded.model)
    device = next(loaded.model.parameters()).device  # the state lives where the model does
    params = select_parameters(loaded.model, spec)
    mode = os.environ.get(STATE_ENV, "auto")
    if mode not in ("auto", "wide", "compact"):
        raise ConfigError(f"{STATE_ENV}={mode!r}: must be auto, wide or compact")
    if mode == "wide" or not _compact_fits(params, device, mode == "compact"):
        return loaded, FixedPointState(params, device, magnitudes=magnitudes, sparsity=sparsity)
    from .compact import CompactState, hooks_cover

    # Built first, then checked: building releases each original tensor as it is taken, where a
    # forward pass before it would hold every original weight beside the new state.
    state = CompactState(params, device, magnitudes=magnitudes, sparsity=sparsity)
    if probe is None:
        return loaded, state
    if hooks_cover(loaded.model, [p for _, p in params], lambda: probe(loaded)):
        state.attach(loaded.model)
        return loaded, state
    log.info("some tuned tensors are used outside their modules' forwards: keeping int32 accumulators")
    # the same steps (magnitudes that give them back), then the accumulators with their remainders
    steps = {n: magnitude_for(f) for n, f in state.frac_bits.items()}
    wide = FixedPointState(params, device, magnitudes=steps, sparsity=sparsity)
    wide.load_tensors(state.tensors())
    return loaded, wide


def _compact_fits(params: list, device: torch.device, asked: bool) -> bool:
    import torch

    from .state import SMALL_LAYOUT

    if {p.dtype for _, p in params} != {torch.float32}:
        return False
    return asked or (device.type == "cpu" and sum(p.numel() for _, p in params) > SMALL_LAYOUT)


@dataclass
class Setup:
    """Everything one replica needs: the bound run, the model, the data, the objective, the state."""

    spec: Run
    loaded: LoadedModel
    dataset: Dataset
    objective: Objective
    state: FixedPointState

    @property
    def train(self) -> TrainConfig:
        return self.spec.train

    @classmethod
    def build(cls, spec: RunSpec, *, model: LoadedModel | None = None, dataset: Dataset | None = None,
              expect_base_hash: str | None = None) -> Setup:
        """Load ``spec.model`` and ``spec.task`` (unless given in memory) and build the state.

        ``expect_base_hash`` makes a run directory's base mandatory: a model with other weights
        is refused before anything is trained or replayed."""
        spec.validate()
        kind = spec.objective
        loaded = model if model is not None else load_model(spec.model)
        base_hash = loaded.base_hash
        if expect_base_hash is not None:
            check_base(loaded, expect_base_hash)
        if dataset is None:
            dataset = load_dataset(spec.task, label_names=list(spec.labels) or None,
                                   need_labels=kind is not ObjectiveKind.LM, eval_file=spec.eval_file,
                                   text_column=spec.text_column, label_column=spec.label_column,
                                   template=spec.template)
        run = Run(spec, base_hash)
        built: list[Objective] = []  # the probe's objective is the run's: same model, built once

        def probe(lm: LoadedModel) -> float:
            built.append(build_objective(lm, dataset, kind, spec.train.max_length, chat=spec.chat))
            return built[-1].loss(dataset.train[:2])

        loaded, state = tuned_state(loaded, spec.train.tune, run.run_tag, probe=probe, sparsity=spec.train.sparsity)
        obj = built[-1] if built else build_objective(loaded, dataset, kind, spec.train.max_length, chat=spec.chat)
        return cls(run, loaded, dataset, obj, state)


def class_groups(shard: list[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(order, starts, counts): the shard's indices grouped by class (in shard order within a class),
    where each class starts in ``order`` and how many it holds; None for unlabelled examples.
    Computed once per record (``make_record``): a record of K batches draws from it K times."""
    labels = np.fromiter((e.label for e in shard), dtype=np.int64, count=len(shard))
    if labels.min() < 0:
        return None
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    return order, starts, counts


def batch_for(run_tag: bytes, shard: list[Example], batch_size: int, round_: int, peer_id: int,
              sample: int, balance: Balance = Balance.NONE,
              groups: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[Example]:
    """The batch of one projected gradient: a seeded draw from the peer's own shard.

    ``Balance.CLASSES``: each example's class is drawn uniformly among the classes the shard holds,
    then the example uniformly within it (with replacement), so the batch's expected loss is the
    mean of the per-class losses; ``Balance.SQRT``: the class in proportion to the square root of
    its examples. A shard with unlabelled examples is drawn uniformly. ``groups``: the shard's
    ``class_groups``, when the caller has them."""
    rng = np.random.default_rng(stream_seed(run_tag, "batch", round_, peer_id, sample))
    if balance is not Balance.NONE and groups is None:
        groups = class_groups(shard)
    if balance is Balance.NONE or groups is None:
        idx = rng.choice(len(shard), size=batch_size, replace=len(shard) < batch_size)
        return [shard[i] for i in idx]
    order, starts, counts = groups
    if balance is Balance.CLASSES:
        c = rng.integers(len(counts), size=batch_size)
    else:  # SQRT: a class in proportion to the square root of its examples
        w = np.sqrt(counts)
        c = rng.choice(len(counts), size=batch_size, p=w / w.sum())
    idx = order[starts[c] + (rng.random(batch_size) * counts[c]).astype(np.int64)]
    return [shard[i] for i in idx]


@dataclass
class Privacy:
    """A peer's differential-privacy state: its accountant and its *private* randomness."""

    accountant: Accountant
    rng: np.random.Generator

    @classmethod
    def create(cls, accountant: Accountant) -> Privacy:
        import secrets

        return cls(accountant, np.random.default_rng(secrets.randbits(128)))


def make_record(setup: Setup, shard: list[Example], round_: int, peer_id: int, first_sample: int = 0,
                secret: bytes = b"", privacy: Privacy | None = None,
                estimator: Estimator | None = None, count: int | None = None,
                reference: float | None = None) -> tuple[Record, Measurement]:
    """Measure K projected gradients at the current state on the peer's data; return the record.

    ``estimator``: how this site measures (the run's estimator when None). It is the site's own
    choice, as long as it sends scalars of the run's meaning (``TrainConfig.check_method``).
    ``count``: how many of the round's K directions this site measures (its first ``count``; None:
    all K): a forward-only site in a run of thousands, or a thin link (``--link-budget``).
    ``reference``: the example count that weighs 1, learned from the swarm (``TrainConfig.site_weight``)."""
    train, tag = setup.train, setup.spec.run_tag
    method = train.estimator if estimator is None else estimator
    if method is not train.estimator:
        train.check_method(method)
    k = train.samples if count is None else count
    if not 1 <= k <= train.samples:
        raise ConfigError.of("samples", f"a site measures 1..{train.samples} of a round's directions, not {k}")
    seeds = direction_seeds(tag, train.shared_directions, round_, peer_id, first_sample, k, train.seed_pool)
    eps = train.eps_at(round_)
    normalised = train.meaning is Scalar.NORMALISED
    groups = class_groups(shard) if train.balance is not Balance.NONE and privacy is None else None

    def draw(sample: int) -> list[Example]:
        return batch_for(tag, shard, train.batch_size, round_, peer_id, sample, train.balance, groups)

    if privacy is None and method is Estimator.SPSA:  # a batch per direction
        m = measure(setup.state, setup.objective.loss, [draw(first_sample + i) for i in range(k)], seeds, eps)
    elif privacy is None:  # one batch for the record
        batch = draw(first_sample)
        if method is Estimator.GRAD:
            m = measure_grad(setup.state, setup.objective.loss_tensor, batch, seeds, normalised)
        elif method is Estimator.JVP:
            m = measure_jvp(setup.state, setup.loaded.model, setup.objective.loss_tensor, batch, seeds, normalised)
        elif method is Estimator.ES:
            m = measure_es(setup.state, setup.objective.loss, batch, seeds, eps)
        else:
            m = measure_fzoo(setup.state, setup.objective.loss, batch, seeds, eps,
                             centered=method is Estimator.CENTERED)
    else:
        check_private(replace(train, estimator=method))
        acc = privacy.accountant
        draws = 1 if method is Estimator.GRAD else k
        acc.spend(draws)  # refuses before measuring once the planned budget is used
        batches = [[shard[i] for i in privacy.rng.choice(len(shard), acc.batch, replace=False)] for _ in range(draws)]
        noise_std = 2.0 * acc.noise * acc.cfg.clip  # replace-one sensitivity of the clipped sum is 2C
        if method is Estimator.GRAD:
            m = measure_grad_private(setup.state, setup.loaded.model, setup.objective.example_rows, batches[0],
                                     seeds, acc.cfg.clip, noise_std, privacy.rng, normalised)
        else:
            m = measure_private(setup.state, setup.objective.losses, batches, seeds, eps, acc.cfg.clip,
                                noise_std, privacy.rng)
    weight = train.site_weight(len(shard), reference)
    if weight != 1.0:
        m = replace(m, ghat=m.ghat * weight)
    rounding = stream_seed(tag, "rounding", round_, peer_id, first_sample)
    return build_record(train.codec, tag, round_, peer_id, first_sample, m.ghat, rounding, secret), m
