"""N virtual peers on one model: replicas are identical, so they differ only in shard and peer id.

A synchronous round: every virtual peer measures its K gradients at the state left by all
earlier rounds, then all the round's records are applied at once and appended to the ledger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig, parse_split
from .errors import ConfigError
from .ledger import LEDGER_NAME, LedgerWriter
from .privacy import Accountant, DPConfig
from .record import SetDigest
from .replay import apply_records
from .tasks.data import split_shards
from .training import Privacy, Setup, make_record

__all__ = ["SimConfig", "simulate", "RUN_NAME"]

RUN_NAME = "run.json"


@dataclass(frozen=True)
class SimConfig:
    model: str = "tiny-gpt2"
    task: str = "vader"
    peers: int = 4
    rounds: int = 20
    split: str = "iid"
    seed: int = 0
    run_id: str = "onebyte"
    objective: str = "auto"
    eval_every: int = 0  # 0: about ten evaluations per run
    eval_size: int = 0  # 0: the whole held-out set
    label_names: tuple[str, ...] = ()
    eval_file: str | None = None
    train: TrainConfig = TrainConfig()
    dp: DPConfig | None = None  # differential privacy per peer (each peer's own data)

    def validate(self) -> SimConfig:
        problems = self.train.problems()
        if not 1 <= self.peers <= 4096:
            problems.append(f"--peers must be in 1..4096, not {self.peers}")
        if not 1 <= self.rounds <= 10_000_000:
            problems.append(f"--rounds must be at least 1, not {self.rounds}")
        if self.eval_every < 0 or self.eval_size < 0:
            problems.append("--eval-every and --eval-size must be >= 0")
        try:
            parse_split(self.split)
        except ConfigError as exc:
            problems.append(str(exc))
        if self.dp is not None:
            problems += self.dp.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self


RoundHook = Callable[[dict[str, Any]], None]


def simulate(cfg: SimConfig, out: Path | str, on_round: RoundHook | None = None) -> dict[str, Any]:
    """Run the simulation, writing run.json, the ledger, metrics.jsonl, curve.png, summary.json."""
    cfg.validate()
    out = Path(out)
    if (out / LEDGER_NAME).exists():
        raise ConfigError(f"{out} already holds a run; choose a new --out")
    start = time.perf_counter()
    setup = Setup.build(cfg.run_id, cfg.model, cfg.task, cfg.train, objective=cfg.objective,
                        label_names=list(cfg.label_names) or None, eval_file=cfg.eval_file)
    try:
        out.mkdir(parents=True, exist_ok=True)
        setup.spec.save(out / RUN_NAME)
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {out}: {exc.strerror}") from None
    shards = split_shards(setup.dataset.train, cfg.peers, parse_split(cfg.split), cfg.seed)
    privacy = None
    if cfg.dp is not None:
        steps = cfg.rounds * cfg.train.samples
        privacy = [Privacy.create(Accountant(cfg.dp, len(s), cfg.train.batch_size, steps)) for s in shards]
    test = setup.dataset.test[: cfg.eval_size] if cfg.eval_size else setup.dataset.test
    every = cfg.eval_every or max(1, cfg.rounds // 10)
    digest, payload, records_n, forwards = SetDigest(), 0, 0, 0
    # The wall-clock a swarm of real machines would need: peers measure in parallel, so a round
    # costs its slowest peer's measurement plus applying the round's records (no network).
    swarm_seconds = 0.0
    eval_before = setup.objective.evaluate(test)
    eval_after = eval_before
    with LedgerWriter(out / LEDGER_NAME) as ledger, open(out / "metrics.jsonl", "w") as metrics:
        for r in range(cfg.rounds):
            made, slowest = [], 0.0
            for p in range(cfg.peers):
                t = time.perf_counter()
                made.append(make_record(setup, shards[p], r, p, privacy=privacy[p] if privacy else None))
                slowest = max(slowest, time.perf_counter() - t)
            records = [rec for rec, _ in made]
            t = time.perf_counter()
            apply_records(setup.state, records, cfg.train)
            swarm_seconds += slowest + time.perf_counter() - t
            ledger.append(records)
            for rec in records:
                digest.add(rec.record_id)
                payload += rec.payload_bytes()
            records_n += len(records)
            forwards += 2 * sum(rec.count for rec in records)
            line: dict[str, Any] = {
                "round": r,
                "train_loss": sum(m.loss for _, m in made) / len(made),
                "payload_bytes": payload,
                "forward_passes": forwards,
                "seconds": round(time.perf_counter() - start, 3),
                "swarm_seconds": round(swarm_seconds, 3),
            }
            if (r + 1) % every == 0 or r + 1 == cfg.rounds:
                eval_after = setup.objective.evaluate(test)
                line["eval"] = eval_after
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            if on_round is not None:
                on_round(line)
    summary = {
        "model": cfg.model,
        "task": cfg.task,
        "peers": cfg.peers,
        "rounds": cfg.rounds,
        "samples_per_round": cfg.train.samples,
        "records": records_n,
        "gradients": records_n * cfg.train.samples,
        "payload_bytes": payload,
        "codec": cfg.train.codec.label,
        "tune": cfg.train.tune,
        "tuned_parameters": setup.state.numel,
        "split": cfg.split,
        "eval_before": eval_before,
        "eval_after": eval_after,
        "state_hash": setup.state.state_hash(),
        "set_digest": digest.hex(),
        "base_hash": setup.spec.base_hash,
        "run_tag": setup.spec.run_tag.hex(),
        "forward_passes": forwards,
        "seconds": round(time.perf_counter() - start, 3),
        "swarm_seconds": round(swarm_seconds, 3),
    }
    if privacy:  # the weakest guarantee among the peers (each protects its own shard)
        summary["dp"] = max((p.accountant.report() for p in privacy), key=lambda d: d["epsilon_spent"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from .plots import plot_curve

    plot_curve(out / "metrics.jsonl", out / "curve.png", title=f"{cfg.model} on {cfg.task}, {cfg.peers} peers, "
               f"{cfg.train.codec.label}", before=eval_before)
    return summary
