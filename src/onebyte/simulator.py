"""N virtual peers on one model: replicas are identical, so they differ only in shard and peer id.

A synchronous round: every virtual peer measures its K gradients at the state left by all
earlier rounds, then all the round's records are applied at once and appended to the ledger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .attacks import Attack, Attacker
from .config import Defaults, Estimator, RunSpec, TrainConfig, forward_passes, parse_split
from .errors import ConfigError, ProtocolError, storage_error
from .identity import Roster, SiteKey, check_site_key
from .modes import swarm_reference
from .privacy import Accountant, DPConfig
from .replica import Replica
from .rundir import RunDir
from .summary import write_json
from .tasks.data import eval_subset, split_shards
from .training import Privacy, Setup, check_private, make_record, private_steps
from .update import check_cap

__all__ = ["SimConfig", "SimResult", "run_simulation"]


@dataclass(frozen=True, init=False)
class SimConfig:
    """A simulation: the run (``spec``, as every site would describe it) and how the swarm is
    simulated. ``SimConfig(spec, peers=4)``; the run's own settings may instead be given by name,
    as ``RunSpec`` takes them (``SimConfig(model="tiny-gpt2", train=..., peers=2)``): they go to
    ``spec``, with ``RunSpec``'s defaults for the rest."""

    spec: RunSpec
    peers: int = Defaults.peers
    rounds: int = Defaults.rounds
    split: str = Defaults.split
    seed: int = Defaults.seed
    eval_every: int = 0  # 0: about ten evaluations per run
    eval_size: int | None = Defaults.eval_size  # held-out examples: N (a fixed-seed sample), 0 none, None all
    dp: DPConfig | None = None  # differential privacy per peer (each peer's own data)
    attack: str | None = None  # hostile insiders, "KIND:FRACTION" (attacks.py)
    # only the virtual peers' own ids count (each site one listed key); False: any id holding the
    # swarm secret counts, to measure what identities prevent (the sybil attack)
    identities: bool = True
    # how each virtual site measures (its own choice, DESIGN §14), cycled over the peers: () = the
    # run's estimator everywhere; ("grad", "fzoo") = a mixed swarm, even peers backpropagating
    estimators: tuple[str, ...] = ()
    # how many of a round's K directions each virtual site measures, cycled like ``estimators``
    # (() = all K): forward-only sites in a run of thousands of directions measure a few
    site_samples: tuple[int, ...] = ()

    def __init__(self, spec: RunSpec | None = None, **options: Any) -> None:
        run = {k: options.pop(k) for k in list(options) if k in _RUN_FIELDS}
        unknown = set(options) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"SimConfig has no option {', '.join(sorted(unknown))}")
        object.__setattr__(self, "spec", replace(spec, **run) if spec is not None else RunSpec(**run))
        for f in fields(self)[1:]:
            object.__setattr__(self, f.name, options.get(f.name, f.default))

    @classmethod
    def from_spec(cls, spec: RunSpec, **sim: Any) -> SimConfig:
        return cls(spec, **sim)

    @property
    def train(self) -> TrainConfig:
        return self.spec.train

    def samples_of(self, peer: int) -> int:
        """How many directions virtual peer ``peer`` measures each round."""
        return self.site_samples[peer % len(self.site_samples)] if self.site_samples else self.train.samples

    def estimator_of(self, peer: int) -> Estimator:
        """How virtual peer ``peer`` measures."""
        return Estimator(self.estimators[peer % len(self.estimators)]) if self.estimators else self.train.estimator

    def validate(self) -> SimConfig:
        problems = self.spec.problems()
        if not 1 <= self.peers <= 4096:
            problems.append(("peers", f"must be in 1..4096, not {self.peers}"))
        if not 1 <= self.rounds <= 10_000_000:
            problems.append(("rounds", f"must be at least 1, not {self.rounds}"))
        if self.eval_every < 0:
            problems.append(("eval_every", "must be >= 0"))
        if self.eval_size is not None and not (isinstance(self.eval_size, int) and self.eval_size >= 0):
            problems.append(("eval_size", f"must be a number of examples >= 0, or None (all), not {self.eval_size!r}"))
        try:
            parse_split(self.split)
        except ConfigError as exc:
            problems += exc.problems
        if self.dp is not None:
            problems += self.dp.problems()
        if not all(isinstance(n, int) and 1 <= n <= self.train.samples for n in self.site_samples):
            problems.append(("site_samples", f"each site measures 1..{self.train.samples} directions, not "
                             f"{list(self.site_samples)}"))
        for name in self.estimators:
            try:
                self.train.check_method(Estimator(name))
            except ValueError:
                problems.append(("estimators", f"{name!r} is not an estimator (one of "
                                 f"{', '.join(e.value for e in Estimator)})"))
            except ConfigError as exc:
                problems += exc.problems
        if self.attack is not None:
            try:
                Attack.parse(self.attack)
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError.many(problems)
        return self


#: What ``SimConfig`` passes on to its ``RunSpec`` when given by name.
_RUN_FIELDS = frozenset(f.name for f in fields(RunSpec))

RoundHook = Callable[[dict[str, Any]], None]


@dataclass
class SimResult:
    """What a simulation leaves: its summary and the setup holding the fine-tuned model."""

    summary: dict[str, Any]
    setup: Setup
    out: Path

    @property
    def model(self):
        """The fine-tuned model (its tuned weights are the final state's view)."""
        return self.setup.loaded.model

    @property
    def tokenizer(self):
        return self.setup.loaded.tokenizer

    @property
    def state_hash(self) -> str:
        return self.summary["state_hash"]


def _within_cap(records: list, train: TrainConfig, setup: Setup) -> None:
    """Our own records obey the per-record update cap every replica enforces, or the learning rate
    is too large for this model: said before anything is written, naming the setting."""
    finest = max(setup.state.frac_bits.values())
    for rec in records:
        try:
            check_cap(rec, train, finest)
        except ProtocolError:
            raise ConfigError.of("train.lr", f"{train.lr} is too large for this model: a gradient of round "
                                 f"{rec.round} would move a weight by more than the update cap (1/16 of its "
                                 "range); lower it") from None


def run_simulation(cfg: SimConfig, out: Path | str, on_round: RoundHook | None = None, *,
                   setup: Setup | None = None, keys: Sequence[SiteKey] = ()) -> SimResult:
    """Run the simulation, writing run.json, the ledger, metrics.jsonl, curve.png, summary.json.

    ``setup``: a prebuilt one (an in-memory model or data); it must match ``cfg``'s settings.
    ``keys``: for a run that lists site keys, one private key per virtual peer, in shard order:
    peer p publishes as ``keys[p]``'s peer id and signs with it, so the run is the one a swarm of
    those sites in lockstep computes (records of a key revoked by the run file do not count).
    A disk that refuses a write ends the run with ``StorageError``; the ledger stays a valid prefix."""
    cfg.validate()
    d = RunDir(out)
    if d.ledger.exists():
        raise ConfigError.of("out", f"{d.root} already holds a run; choose a new directory")
    roster = None
    if keys:
        roster = Roster.of(cfg.spec)
        _check_keys(roster, keys, cfg)
    else:  # virtual peers 0..peers-1, unsigned: the run (and its run.json) of the swarm secret's mode
        cfg = replace(cfg, spec=replace(cfg.spec, keys=()))
    setup = setup if setup is not None else Setup.build(cfg.spec)
    try:
        d.root.mkdir(parents=True, exist_ok=True)
        setup.spec.save(d.run)
    except OSError as exc:
        raise storage_error(exc, str(d.run)) from None
    # a key the run file revokes from a round: its records of that round on are refused (Replica.admit)
    replica = Replica.open(d, setup.state, cfg.train, setup.spec.run_tag,
                           counts=roster)
    try:
        summary = _rounds(cfg, setup, replica, d, on_round, list(keys))
    except OSError as exc:  # metrics, summary, curve: the ledger itself raises StorageError
        raise storage_error(exc, str(d.root)) from None
    finally:
        replica.ledger.close()
    return SimResult(summary, setup, d.root)


def _check_keys(roster: Roster | None, keys: Sequence[SiteKey], cfg: SimConfig) -> None:
    """Keys for every virtual peer, each listed by the run; ``ConfigError`` naming what is wrong."""
    if roster is None:
        raise ConfigError.of("keys", "the run file lists no site keys ([[keys]]): simulate without keys")
    if len(keys) != cfg.peers:
        raise ConfigError.of("keys", f"the run lists site keys: give one private key per peer ({cfg.peers}), "
                             f"not {len(keys)}")
    for key in keys:
        check_site_key(roster, key, None, warn=False)
    if len({key.peer_id for key in keys}) != len(keys):
        raise ConfigError.of("keys", "one key given for two peers")
    if cfg.attack is not None:
        raise ConfigError.of("attack", "attacks are simulated without site keys (identities=True stands for them)")


def _rounds(cfg: SimConfig, setup: Setup, replica: Replica, d: RunDir, on_round: RoundHook | None,
            keys: list[SiteKey]) -> dict[str, Any]:
    start = time.perf_counter()
    shards = split_shards(setup.dataset.train, cfg.peers, parse_split(cfg.split), cfg.seed)
    reference = swarm_reference([len(s) for s in shards])  # what every peer's heartbeats would advertise
    privacy = None
    if cfg.dp is not None:
        check_private(cfg.train)
        steps = private_steps(cfg.train, cfg.rounds)
        privacy = [Privacy.create(Accountant(cfg.dp, len(s), cfg.train.batch_size, steps)) for s in shards]
    test = eval_subset(setup.dataset.test, cfg.eval_size) if cfg.eval_size != 0 else []  # 0: no evaluation

    def evaluate() -> dict[str, float] | None:
        return setup.objective.evaluate(test) if test else None

    every = cfg.eval_every or max(1, cfg.rounds // 10)
    forwards = 0
    # The wall-clock a swarm of real machines would need: peers measure in parallel, so a round
    # costs its slowest peer's measurement plus applying the round's records (no network).
    swarm_seconds = 0.0
    eval_before = evaluate()
    eval_after = eval_before
    attacker = None
    if cfg.attack is not None:
        attacker = Attacker(Attack.parse(cfg.attack), cfg.peers, cfg.train, max(setup.state.frac_bits.values()),
                            setup.spec.run_tag)
    refused = 0
    with open(d.metrics, "w") as metrics:
        for r in range(cfg.rounds):
            made, slowest = [], 0.0
            for p in range(cfg.peers):
                t = time.perf_counter()
                rec, m = make_record(setup, shards[p], r, keys[p].peer_id if keys else p,
                                     privacy=privacy[p] if privacy else None, estimator=cfg.estimator_of(p),
                                     count=cfg.samples_of(p), reference=reference)
                made.append((rec.signed_by(keys[p]) if keys else rec, m))
                slowest = max(slowest, time.perf_counter() - t)
            records = [rec for rec, _ in made]
            _within_cap(records, cfg.train, setup)
            if attacker is not None:
                records = attacker.round(r, records, last=r + 1 == cfg.rounds)
                if cfg.identities:  # a record from an id no listed key derives is refused everywhere
                    refused += sum(rec.peer_id >= cfg.peers for rec in records)
                    records = [rec for rec in records if rec.peer_id < cfg.peers]
            t = time.perf_counter()
            replica.add(records)  # durable in the ledger, then applied
            swarm_seconds += slowest + time.perf_counter() - t
            forwards += sum(forward_passes(cfg.estimator_of(p), rec.count) for p, (rec, _) in enumerate(made))
            line: dict[str, Any] = {
                "round": r,
                "train_loss": sum(m.loss for _, m in made) / len(made),
                "payload_bytes": replica.payload_bytes,
                "forward_passes": forwards,
                "seconds": round(time.perf_counter() - start, 3),
                "swarm_seconds": round(swarm_seconds, 3),
                "peers": cfg.peers,
            }
            if test and ((r + 1) % every == 0 or r + 1 == cfg.rounds):
                eval_after = line["eval"] = evaluate()
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            if on_round is not None:
                on_round(line)
    records_n = len(replica.applied)
    summary = {
        "model": cfg.spec.model,
        "task": cfg.spec.task,
        "peers": cfg.peers,
        "rounds": cfg.rounds,
        "samples_per_round": cfg.train.samples,
        "records": records_n,
        "gradients": sum(replica.records[rid].count for rid in replica.applied),
        "payload_bytes": replica.payload_bytes,
        "codec": cfg.train.codec.label,
        "tune": cfg.train.tune,
        "tuned_parameters": setup.state.numel,
        "split": cfg.split,
        "eval_before": eval_before,
        "eval_after": eval_after,
        "state_hash": replica.state_hash(),
        "set_digest": replica.digest.hex(),
        "base_hash": setup.spec.base_hash,
        "run_tag": setup.spec.run_tag.hex(),
        "forward_passes": forwards,
        "seconds": round(time.perf_counter() - start, 3),
        "swarm_seconds": round(swarm_seconds, 3),
    }
    if attacker is not None:
        summary["attack"] = str(attacker.attack)
        summary["hostile_peers"] = sorted(attacker.hostile)
        summary["refused_records"] = refused + attacker.refused
        summary["aggregate"] = cfg.train.aggregate.value
    if privacy:  # the weakest guarantee among the peers (each protects its own shard)
        reports = [p.accountant.report() for p in privacy]
        summary["dp"] = max(reports, key=lambda d: d["epsilon_spent"])
        summary["dp_epsilon_per_peer"] = [d["epsilon_spent"] for d in reports]
    write_json(d.summary, summary)  # atomically, as a peer writes its own
    from .plots import plot_curve

    plot_curve(d.metrics, d.curve, title=f"{cfg.spec.model} on {cfg.spec.task}, {cfg.peers} peers, "
               f"{cfg.train.codec.label}", before=eval_before)
    return summary
