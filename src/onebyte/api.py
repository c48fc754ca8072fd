"""The Python API: what the command line does, callable from Python with the same defaults.

    import onebyte
    spec = onebyte.RunSpec.load("run.toml")            # or onebyte.RunSpec(model=..., task=..., ...)
    result = onebyte.simulate(spec, peers=4, rounds=100, out="runs/x")
    result.model, result.tokenizer, result.state_hash, result.summary
    tuned = onebyte.replay("runs/x")                  # base taken from the run; .model, .state_hash
    with onebyte.Peer.open(spec, out="site-a", join=[addr], secret_file="swarm.key") as peer:
        peer.run(rounds=100)
    # a run file listing site keys ([[keys]]): key=onebyte.SiteKey.load("site.key") or key="site.key"

Models and data may also be given in memory: ``model=(module, tokenizer)`` and
``train_data=[(text, label), ...]`` (or dicts, or ``Example``s).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Defaults, ObjectiveKind, Run, RunSpec
from .errors import ConfigError, LedgerError, ProtocolError

if TYPE_CHECKING:
    from .identity import SiteKey
    from .models import LoadedModel
    from .privacy import DPConfig
    from .simulator import RoundHook, SimResult
    from .state import FixedPointState

__all__ = ["simulate", "replay", "Replayed", "Defaults"]


def _loaded(model: Any) -> LoadedModel | None:
    """``None``, a ``LoadedModel``, or ``(module, tokenizer)`` -> a loaded base (or None: load by name)."""
    from .models import LoadedModel, wrap_model

    if model is None or isinstance(model, LoadedModel):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return wrap_model(*model)
    raise ConfigError.of("model", "give a name or path in the spec, or model=(module, tokenizer)")


def simulate(spec: RunSpec, *, out: Path | str, peers: int = Defaults.peers, rounds: int = Defaults.rounds,
             split: str = Defaults.split, seed: int = Defaults.seed, eval_every: int = 0,
             eval_size: int | None = Defaults.eval_size,
             dp: DPConfig | None = None, model: Any = None, train_data: list | None = None,
             eval_data: list | None = None, on_round: RoundHook | None = None,
             log_to: Sequence[str] = (), attack: str | None = None, identities: bool = True,
             keys: Sequence[SiteKey] = (), estimators: Sequence[str] = (),
             site_samples: Sequence[int] = ()) -> SimResult:
    """Simulate ``peers`` virtual peers for ``rounds`` rounds; write the run to ``out``.

    The result holds the fine-tuned ``model`` and ``tokenizer``, the ``state_hash`` and the
    ``summary``. ``model=(module, tokenizer)`` and ``train_data``/``eval_data`` (Python lists)
    replace loading ``spec.model``/``spec.task`` from disk. ``log_to``: trackers that get every
    metrics line too (``"tensorboard:DIR"``). ``attack="KIND:FRACTION"`` makes that fraction of
    the peers hostile insiders (``onebyte.attacks``); ``identities=False`` counts records from any
    peer id, as the swarm secret alone would. ``keys``: for a run file that lists site keys, one
    private key per peer (``SiteKey.load``): each virtual peer publishes and signs as its site, and
    the run equals a swarm of those sites in lockstep, state hash and record set alike.
    ``eval_size``: held-out examples evaluated about ten times a run (``eval_every`` rounds apart):
    the same fixed-seed sample in every run, 0 none, None all of them.
    ``estimators``: how each site measures, cycled over the peers (``("grad", "fzoo")``: a mixed
    swarm); each must send the run's kind of scalar (``TrainConfig.check_method``). ``site_samples``:
    how many of a round's K directions each site measures, cycled the same way (() = all K)."""
    from .simulator import SimConfig, run_simulation
    from .tasks.data import dataset_from_examples
    from .track import Trackers
    from .training import Setup

    spec = spec.validate()
    cfg = SimConfig.from_spec(spec, peers=peers, rounds=rounds, split=split, seed=seed, eval_every=eval_every,
                              eval_size=eval_size, dp=dp, attack=attack, identities=identities,
                              estimators=tuple(estimators), site_samples=tuple(site_samples)).validate()
    setup = None
    loaded = _loaded(model)
    if loaded is not None or train_data is not None:
        dataset = None
        if train_data is not None:
            dataset = dataset_from_examples(train_data, eval_data, label_names=list(spec.labels) or None,
                                            need_labels=spec.objective is not ObjectiveKind.LM)
        setup = Setup.build(spec, model=loaded, dataset=dataset)
    with Trackers(log_to) as trackers:
        def hook(line: dict) -> None:
            trackers.log(line)
            if on_round is not None:
                on_round(line)

        return run_simulation(cfg, out, hook, setup=setup, keys=keys)


@dataclass
class Replayed:
    """A run rebuilt from its base model and ledger: the fine-tuned model and its state hash."""

    run: Run
    loaded: LoadedModel
    state: FixedPointState
    records: int
    state_hash: str

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def export(self, out: Path | str, merge: bool = False) -> Path:
        """Write the fine-tuned model as a Hugging Face directory (safetensors + tokenizer).

        A LoRA run writes a PEFT adapter directory (``PeftModel.from_pretrained(base, out)``
        loads it), or with ``merge`` the base with the adapters merged in."""
        from .adapters import export_adapter, is_lora
        from .models import export_model

        if is_lora(self.loaded):
            return export_adapter(self.loaded, out, merge=merge)
        return export_model(self.loaded, out)


def replay(run_dir: Path | str, base: Any = None, *, shuffle: int | None = None) -> Replayed:
    """Rebuild a run's fine-tuned weights from its base model and its ledger.

    ``base``: the base model (a name or directory, or ``(module, tokenizer)``); by default the
    one named in the run's ``run.json``. It must have the run's base hash. ``shuffle``: apply the
    records in an order shuffled by this seed (the result is the same in any order). A run that
    lists site keys counts only the records its run file's roster still counts, after the signed
    revocations in the directory's ``revocations.txt``, as its peer did."""
    from .identity import Roster
    from .ledger import read_ledger
    from .models import check_base, load_model
    from .record import decode_record
    from .replica import Replica
    from .rundir import RunDir
    from .training import tuned_state

    d = RunDir(run_dir)
    run = Run.load(d.run)
    raws = read_ledger(d.ledger)
    try:
        records = [decode_record(b, run_tag=run.run_tag) for b in raws]
    except ProtocolError as exc:
        raise LedgerError(f"{d.ledger}: {exc}") from None
    # a revoked key's records of rounds >= its until, and unlisted ones, do not count (Replica.admit)
    roster = Roster.of(run.spec, run.run_tag, d.revocations)
    loaded = _loaded(base) if not isinstance(base, str | Path) else load_model(str(base))
    if loaded is None:
        loaded = load_model(run.model)
    check_base(loaded, run.base_hash)
    loaded, state = tuned_state(loaded, run.train.tune, run.run_tag, sparsity=run.train.sparsity)
    if shuffle is not None:
        random.Random(shuffle).shuffle(records)
    replica = Replica(state, run.train, run.run_tag, counts=roster)
    applied = replica.add(records)
    return Replayed(run, loaded, state, applied, replica.state_hash())
