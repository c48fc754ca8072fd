"""The ``onebyte`` commands, one function each (``main`` in ``cli`` picks one by name): build the
run's configuration from the run file and the flags (``run_spec``), call the library, print what it did.

Each returns the exit code. Errors are raised, never printed here: ``cli.main`` turns every
``OnebyteError`` into one line on stderr and exit code 2 (``EXIT_ERROR``), naming flags, not fields.
Heavy modules (torch, transformers) load only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import ListedKey
    from .identity import SiteKey

__all__ = ["EXIT_ERROR", "HANDLERS", "run_spec"]

EXIT_ERROR = 2


def run_spec(a: argparse.Namespace):
    """The run: the run file (if any), then every flag given on the command line."""
    from .config import Estimator, RunSpec, TrainConfig, settings

    spec = RunSpec.load(a.config) if getattr(a, "config", None) else RunSpec()
    run = {s.name: getattr(a, s.name, None) for s in settings(RunSpec)}
    run = {k: v for k, v in run.items() if v is not None}
    if "template" in run:
        run["template"] = run["template"].replace("\\n", "\n")
    if "labels" in run:
        names = [t.strip() for t in run["labels"].split(",") if t.strip()]
        if len(names) < 2:
            raise ConfigError.of("labels", "needs at least two comma-separated names")
        run["labels"] = names
    train = {s.name: getattr(a, s.name, None) for s in settings(TrainConfig)}
    train = {k: v for k, v in train.items() if v is not None}
    base = spec.train
    if "estimator" in train and getattr(a, "config", None):
        if "scalar" not in train and Estimator(train["estimator"]).exact:
            # --estimator grad or jvp is how this site measures: it keeps the run file's kind of
            # scalar, so the run (and its tag) stays the one the other sites run
            train["scalar"] = spec.train.meaning.value
    elif "estimator" in train:  # no run file: the estimator's own defaults, then the other flags
        base = TrainConfig.for_estimator(train["estimator"])
    if train:
        train = TrainConfig.from_dict({**base.to_dict(), **train}).to_dict()
    return RunSpec.from_dict({**spec.to_dict(), **run, "train": train or spec.train.to_dict()})


def _dp_config(a: argparse.Namespace):
    from .privacy import DPConfig

    cfg = DPConfig(a.dp_epsilon if a.dp_epsilon is not None else 1.0, a.dp_delta, a.dp_clip)
    if cfg.problems():  # checked even without --dp-epsilon: a bad value is never ignored silently
        raise ConfigError.many(cfg.problems())
    return None if a.dp_epsilon is None else cfg


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _cmd_init(a: argparse.Namespace) -> int:
    path = Path(a.path)
    if path.exists() and not a.force:
        raise ConfigError(f"{path} exists; use --force to overwrite it")
    spec = run_spec(a)
    try:
        spec.save(path)
    except OSError as exc:
        from .errors import storage_error

        raise storage_error(exc, str(path)) from None
    print(f"wrote {path}: share it with every site, then: onebyte simulate --config {path} --out DIR")
    return 0


def _cmd_simulate(a: argparse.Namespace) -> int:
    from .api import simulate
    from .identity import SiteKey
    from .track import Trackers

    Trackers.check(a.log_to)
    spec = run_spec(a)
    dp = _dp_config(a)
    site_keys = [SiteKey.load(f) for f in a.keys or ()]  # a bad key file is one line before any work
    _threads(a.threads)
    bar = None

    def on_round(line: dict) -> None:
        nonlocal bar
        if bar is None and not a.no_progress:  # created after set-up, so load errors stay one line
            from tqdm import tqdm

            bar = tqdm(total=a.rounds, unit="round", file=sys.stderr, dynamic_ncols=True)
        if bar is not None:
            post = {"loss": f"{line['train_loss']:.4f}", "bytes": line["payload_bytes"]}
            if "eval" in line:
                post["acc"] = f"{line['eval']['accuracy']:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)

    try:
        result = simulate(spec, out=a.out, peers=a.peers, rounds=a.rounds, split=a.split, seed=a.seed,
                          eval_every=a.eval_every, eval_size=a.eval_size, dp=dp, on_round=on_round,
                          log_to=a.log_to, attack=a.attack, identities=not a.no_identities, keys=site_keys)
    finally:
        if bar is not None:
            bar.close()
    summary = result.summary
    keys = ["peers", "rounds", "records", "gradients", "payload_bytes", "codec", "eval_before", "eval_after",
            "state_hash", "set_digest", "forward_passes", "seconds", "dp", "attack", "refused_records"]
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"wrote {Path(a.out) / 'summary.json'}, metrics.jsonl, curve.png, ledger.obl")
    return 0


def _peer_id(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        v = int(text, 0)
    except ValueError:
        v = -1
    if not 0 <= v < 1 << 64:
        raise ConfigError.of("peer_id", f"must be an integer in 0..2^64-1, not {text!r}")
    return v


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError.of("shard", f"must be I/N with 0 <= I < N, not {text!r}")
    return i, n


def _cmd_peer(a: argparse.Namespace) -> int:
    import signal
    import threading

    from .config import parse_split
    from .identity import SiteKey
    from .peer import Peer, _read_secret
    from .track import Trackers

    Trackers.check(a.log_to)
    if a.secret_file:
        _read_secret(a.secret_file)  # a bad secret file is reported before anything loads
    key = SiteKey.load(a.key) if a.key else None  # so is a bad key file
    spec = run_spec(a)
    shard, peer_id = _shard(a.shard), _peer_id(a.peer_id)
    parse_split(a.split)
    dp = _dp_config(a)
    if dp is not None and a.rounds is None:
        raise ConfigError.of("dp.epsilon", "needs --rounds: the noise is set for the planned number of rounds")
    _threads(a.threads)
    with Peer.open(spec, out=a.out, join=a.join, secret_file=a.secret_file, peer_id=peer_id, key=key, shard=shard,
                   split=a.split, seed=a.seed, host=a.host, port=a.port, announce_host=a.announce_host,
                   private=a.private, relay=a.relay, dp=dp,
                   rounds=a.rounds, lockstep=a.lockstep, snapshot_every=a.snapshot_every,
                   max_deadline=a.max_deadline, eval_size=a.eval_size, log_to=tuple(a.log_to),
                   catchup=a.catchup, min_peers=a.min_peers, link_budget=a.link_budget) as peer:
        print(f"peer {peer.opts.peer_id:x} listening; others can join with:", flush=True)
        for addr in peer.addresses:
            print(f"  --join {addr}", flush=True)
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            print(f"onebyte: signal {signum}: finishing the round, then exiting", file=sys.stderr, flush=True)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        summary = peer.run(stop, on_round=lambda p: print(
            f"round {p.round - 1} done: {len(p.records)} records, digest {p.digest.hex()[:12]}", flush=True))
        print(json.dumps({k: summary[k] for k in ("peer_id", "rounds_completed", "records_accepted",
                                                  "records_rejected", "state_hash", "set_digest")}), flush=True)
    return 0


def _cmd_swarm(a: argparse.Namespace) -> int:
    import signal

    from .config import ListedKey, parse_split
    from .swarm import run_swarm

    def on_signal(signum: int, _frame: object) -> None:  # stop the peers too (run_swarm's finally)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)

    spec = run_spec(a)
    parse_split(a.split)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = _swarm_keys(out / "keys", a.peers, spec.keys) if a.site_keys else []
    if keys:
        spec = spec.with_overrides(keys=tuple(ListedKey(path.stem, key.public) for path, key in keys))
    run_file = out / "run.toml"
    spec.save(run_file)  # every peer reads the same run file
    common = ["--config", str(run_file), "--rounds", str(a.rounds), "--split", a.split, "--seed", str(a.seed),
              "--host", "127.0.0.1", "--threads", str(a.threads)]
    # the peers start as a quorum: on 2 cores the 16th peer is up long after the first could have
    # run all its rounds alone (lockstep rounds wait for every peer anyway)
    common += ["--lockstep", str(a.peers)] if a.lockstep else ["--min-peers", str(a.peers)]

    def peer_args(i: int) -> list[str]:
        who = ["--key", str(keys[i][0])] if keys else ["--peer-id", str(i)]
        return [*common, *who, "--shard", f"{i}/{a.peers}"]

    bar = None
    if not a.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=a.rounds, unit="round", file=sys.stderr, dynamic_ncols=True, desc="slowest peer")

    def progress(summaries: list) -> None:
        if bar is not None:
            done = min((s or {}).get("rounds_completed", 0) for s in summaries)
            bar.update(max(0, min(done, a.rounds) - bar.n))
            bar.set_postfix({"records": max((s or {}).get("records", 0) for s in summaries)}, refresh=False)

    try:
        result = run_swarm(a.peers, peer_args, out, a.rounds, a.timeout, progress)
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps({k: result[k] for k in ("peers", "rounds", "agree", "state_hash", "set_digest")}, indent=2))
    print(f"wrote {out / 'swarm.json'}")
    return 0 if result["agree"] else EXIT_ERROR


def _swarm_keys(folder: Path, n: int, listed: tuple[ListedKey, ...]) -> list[tuple[Path, SiteKey]]:
    """``onebyte swarm --site-keys``: one key file per peer in ``folder``, made once and then reused
    (a rerun into the same --out is the same sites)."""
    from .identity import SiteKey

    if listed:
        raise ConfigError.of("keys", "the run file already lists site keys; --site-keys makes its own (give one "
                             "or the other)")
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"site-{i}.key"
        if not path.exists():
            SiteKey.generate().save(path)
        out.append((path, SiteKey.load(path)))
    return out


def _cmd_keygen(a: argparse.Namespace) -> int:
    from .config import ListedKey
    from .identity import SiteKey

    path = Path(a.path)
    name = a.name if a.name is not None else path.stem
    if not 1 <= len(name) <= 200:
        raise ConfigError.of("name", f"must be a name of 1..200 characters, not {name!r}")
    key = SiteKey.generate()
    key.save(path)
    print(f"wrote {path} (peer id {key.peer_id:x}): keep it at this site only. Add these lines to the run file "
          "every site shares:\n")
    print(ListedKey(name, key.public).to_toml(), end="")
    return 0


def _cmd_revoke(a: argparse.Namespace) -> int:
    from .config import Run
    from .identity import Roster, SiteKey, append_revocation
    from .rundir import RunDir

    d = RunDir(a.run)
    run = Run.load(d.run)
    roster = Roster.of(run.spec, run.run_tag, d.revocations)
    if roster is None:
        raise ConfigError(f"{d.run}: this run lists no [[keys]]; revocations are for runs in identity mode")
    rev = roster.sign_revocation(SiteKey.load(a.key), run.run_tag, a.site, a.from_round)
    if not roster.wins(rev):
        print(f"{a.site!r} is already revoked from round {roster.until(rev.revoked)}: nothing to do")
        return 0
    append_revocation(d.revocations, rev)
    print(f"wrote the revocation of {a.site!r} from round {a.from_round} to {d.revocations}: the peer running in "
          f"{d.root} passes it to the swarm within a heartbeat (or when it next starts)")
    return 0


def _cmd_replay(a: argparse.Namespace) -> int:
    from .api import replay

    tuned = replay(a.run, a.base, shuffle=a.shuffle)
    print(f"records {tuned.records}")
    print(f"state_hash {tuned.state_hash}")
    if a.out:
        print(f"wrote {tuned.export(a.out, merge=a.merge)}")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from .training import Setup

    spec = run_spec(a)
    setup = Setup.build(spec)
    result = setup.objective.evaluate(setup.dataset.test)
    print(json.dumps({"model": spec.model, "task": spec.task, "examples": len(setup.dataset.test), **result}))
    return 0


def _cmd_dashboard(a: argparse.Namespace) -> int:
    from .dashboard import Dashboard

    with Dashboard(a.runs, host=a.host, port=a.port) as board:
        print(f"onebyte dashboard: {board.url} (Ctrl-C to stop)", flush=True)
        try:
            board.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(a.runs, a.out, alone=a.alone)
    print(f"wrote {path}")
    return 0


def _cmd_ledger(a: argparse.Namespace) -> int:
    from .ledger import verify_ledger

    n = verify_ledger(a.path)
    print(f"ok: {n} records")
    return 0


#: ``onebyte COMMAND``: its function.
HANDLERS = {"init": _cmd_init, "simulate": _cmd_simulate, "peer": _cmd_peer, "swarm": _cmd_swarm,
            "keygen": _cmd_keygen, "revoke": _cmd_revoke, "replay": _cmd_replay, "eval": _cmd_eval,
            "ledger": _cmd_ledger, "dashboard": _cmd_dashboard, "report": _cmd_report}
