"""The ``onebyte`` command: parse flags, build a config, call the library, report.

Every error the library raises on purpose (``OnebyteError``) and every bad flag becomes one line
on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .codec import Codec
from .config import Directions, TrainConfig
from .errors import ConfigError, LedgerError, OnebyteError

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own code too)
        self.exit(EXIT_ERROR, f"onebyte: error: {message}\n")


def _number(parse, ok, what: str):
    """An argparse type: ``parse`` the text, accept it if ``ok``, else say ``what`` was expected."""
    def convert(text: str):
        try:
            v = parse(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}")
        return v
    return convert


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")


_D = TrainConfig()


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (every peer of a run must agree on these)")
    g.add_argument("--model", default="minilm", help="minilm, tiny-gpt2, or a local Hugging Face model directory")
    g.add_argument("--task", default="vader", help="vader, or a local .jsonl/.csv file with text,label columns")
    g.add_argument("--eval-file", help="held-out .jsonl/.csv (default: 20%% of --task, fixed split)")
    g.add_argument("--labels", help="comma-separated label names, in index order (default: from the data)")
    g.add_argument("--objective", choices=["auto", "classify", "lm"], default="auto",
                   help="classify (label from text) or lm (next-token loss); auto = classify")
    g.add_argument("--samples", type=_positive_int, default=_D.samples,
                   help="projected gradients per peer per round (K)")
    g.add_argument("--batch-size", type=_positive_int, default=_D.batch_size, help="examples per projected gradient")
    g.add_argument("--lr", type=_positive_float, default=_D.lr, help="learning rate")
    g.add_argument("--eps", type=_positive_float, default=_D.eps, help="perturbation size")
    g.add_argument("--codec", choices=[c.label for c in Codec], default=_D.codec.label,
                   help="wire format of gradients")
    g.add_argument("--tune", default=_D.tune, help="all, bias, or regex:PATTERN over parameter names")
    g.add_argument("--directions", choices=[d.value for d in Directions], default="distinct",
                   help="distinct: one direction per gradient; shared: peers share a round's K directions")
    g.add_argument("--max-length", type=_positive_int, default=_D.max_length, help="tokens per example")
    g.add_argument("--run-id", default="onebyte", help="name of the run (part of the run tag)")


def _add_dp_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("differential privacy of each peer's own data (DP-ZO on the scalar)")
    g.add_argument("--dp-epsilon", type=_positive_float, help="privacy budget ε for the planned rounds")
    g.add_argument("--dp-delta", type=_positive_float, default=1e-5, help="δ (default 1e-5)")
    g.add_argument("--dp-clip", type=_positive_float, default=1.0, help="clip of per-example derivatives")


def _dp_config(a: argparse.Namespace):
    from .privacy import DPConfig

    cfg = DPConfig(a.dp_epsilon if a.dp_epsilon is not None else 1.0, a.dp_delta, a.dp_clip)
    if cfg.problems():  # checked even without --dp-epsilon: a bad value is never ignored silently
        raise ConfigError("; ".join(cfg.problems()))
    return None if a.dp_epsilon is None else cfg


def _train_config(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(codec=Codec.parse(a.codec), lr=a.lr, eps=a.eps, samples=a.samples, batch_size=a.batch_size,
                       tune=a.tune, directions=Directions(a.directions), max_length=a.max_length).validate()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="onebyte", description="Decentralized fine-tuning, one byte per projected gradient.")
    p.add_argument("--version", action="version", version=f"onebyte {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("simulate", help="N virtual peers on one machine")
    _add_train_flags(s)
    s.add_argument("--peers", type=_positive_int, default=4)
    s.add_argument("--rounds", type=_positive_int, default=100)
    s.add_argument("--split", default="iid", help="iid or dirichlet:ALPHA (label skew across peers)")
    s.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the shard split")
    s.add_argument("--eval-every", type=_non_negative_int, default=0,
                   help="rounds between evaluations (0: about 10 per run)")
    s.add_argument("--eval-size", type=_non_negative_int, default=0, help="held-out examples to evaluate (0: all)")
    s.add_argument("--threads", type=_non_negative_int, default=0, help="torch threads (0: torch's default)")
    _add_dp_flags(s)
    s.add_argument("--out", required=True, help="run directory to create")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    pe = sub.add_parser("peer", help="run one networked peer (hivemind)")
    _add_train_flags(pe)
    pe.add_argument("--data", dest="task", help="this peer's own .jsonl/.csv data (same as --task)")
    pe.add_argument("--out", required=True,
                    help="this peer's directory (ledger, snapshot, summary); reuse it to restart")
    pe.add_argument("--join", action="append", default=[], metavar="MULTIADDR", help="address of a live peer")
    pe.add_argument("--secret-file", help="file holding the swarm secret (every peer needs the same one)")
    ends = pe.add_mutually_exclusive_group()
    ends.add_argument("--rounds", type=_positive_int, help="complete rounds 0..R-1, drain, exit")
    ends.add_argument("--until-stopped", action="store_true", help="run until SIGTERM/SIGINT (the default)")
    pe.add_argument("--peer-id", help="64-bit peer id, decimal or 0x-hex (default: from this peer's key)")
    pe.add_argument("--shard", help="I/N: train on shard I of N of --task, split as the simulator does")
    pe.add_argument("--split", default="iid", help="with --shard: iid or dirichlet:ALPHA")
    pe.add_argument("--seed", type=_non_negative_int, default=0, help="with --shard: seed of the split")
    pe.add_argument("--lockstep", type=_non_negative_int, default=0,
                    help="N: every round waits for the records of peers 0..N-1 (equivalence checks)")
    pe.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    pe.add_argument("--port", type=_non_negative_int, default=0, help="TCP port to listen on (0: any free port)")
    pe.add_argument("--announce-host", help="public IP to advertise (behind NAT / port forwarding)")
    pe.add_argument("--snapshot-every", type=_non_negative_int, default=10, help="rounds between snapshots")
    pe.add_argument("--max-deadline", type=_positive_float, default=60.0, help="upper bound of the round deadline (s)")
    pe.add_argument("--threads", type=_non_negative_int, default=0, help="torch threads (0: torch's default)")
    pe.add_argument("--eval-size", type=_non_negative_int, default=256,
                    help="held-out examples evaluated at start and end (0: skip)")
    _add_dp_flags(pe)

    sw = sub.add_parser("swarm", help="start N real peer processes on loopback and collect their results")
    _add_train_flags(sw)
    sw.add_argument("--peers", type=_positive_int, default=3)
    sw.add_argument("--rounds", type=_positive_int, default=20)
    sw.add_argument("--split", default="iid")
    sw.add_argument("--seed", type=_non_negative_int, default=0)
    sw.add_argument("--lockstep", action="store_true", help="rounds wait for every peer (bit-equal to simulate)")
    sw.add_argument("--threads", type=_positive_int, default=1, help="torch threads per peer")
    sw.add_argument("--timeout", type=_positive_float, default=3600.0, help="give up after this many seconds")
    sw.add_argument("--out", required=True)
    sw.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("replay", help="rebuild a run's weights from the base model and its ledger")
    r.add_argument("--base", required=True, help="the run's base model (minilm, tiny-gpt2 or a directory)")
    r.add_argument("--run", required=True, help="run directory (holds run.json and ledger.obl)")
    r.add_argument("--shuffle", type=_non_negative_int, help="apply records in an order shuffled by this seed")
    r.add_argument("--out", help="write the fine-tuned model here as a Hugging Face directory")

    e = sub.add_parser("eval", help="held-out loss and accuracy of a model, as JSON")
    e.add_argument("--model", default="minilm")
    e.add_argument("--task", default="vader")
    e.add_argument("--eval-file")
    e.add_argument("--labels")
    e.add_argument("--objective", choices=["auto", "classify", "lm"], default="auto")
    e.add_argument("--max-length", type=_positive_int, default=32)

    led = sub.add_parser("ledger", help="ledger tools")
    lsub = led.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)
    v = lsub.add_parser("verify", help="exit 0 if the ledger is valid; exit 2 with the reason if not")
    v.add_argument("path")
    return p


def _labels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if len(names) < 2:
        raise ConfigError("--labels needs at least two comma-separated names")
    return names


def _cmd_simulate(a: argparse.Namespace) -> int:
    from .simulate import SimConfig, simulate

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    cfg = SimConfig(model=a.model, task=a.task, peers=a.peers, rounds=a.rounds, split=a.split, seed=a.seed,
                    run_id=a.run_id, objective=a.objective, eval_every=a.eval_every, eval_size=a.eval_size,
                    label_names=tuple(_labels(a.labels) or ()), eval_file=a.eval_file,
                    train=_train_config(a), dp=_dp_config(a)).validate()
    bar = None

    def on_round(line: dict) -> None:
        nonlocal bar
        if bar is None and not a.no_progress:  # created after set-up, so load errors stay one line
            from tqdm import tqdm

            bar = tqdm(total=cfg.rounds, unit="round", file=sys.stderr, dynamic_ncols=True)
        if bar is not None:
            post = {"loss": f"{line['train_loss']:.4f}", "bytes": line["payload_bytes"]}
            if "eval" in line:
                post["acc"] = f"{line['eval']['accuracy']:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)

    try:
        summary = simulate(cfg, a.out, on_round)
    finally:
        if bar is not None:
            bar.close()
    keys = ["peers", "rounds", "records", "gradients", "payload_bytes", "codec", "eval_before", "eval_after",
            "state_hash", "set_digest", "forward_passes", "seconds", "dp"]
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"wrote {Path(a.out) / 'summary.json'}, metrics.jsonl, curve.png, ledger.obl")
    return 0


def _peer_id(text: str | None, fallback: bytes) -> int:
    if text is None:
        import hashlib

        return int.from_bytes(hashlib.sha256(fallback).digest()[:8], "little")
    try:
        v = int(text, 0)
    except ValueError:
        v = -1
    if not 0 <= v < 1 << 64:
        raise ConfigError(f"--peer-id must be an integer in 0..2^64-1, not {text!r}")
    return v


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(f"--shard must be I/N with 0 <= I < N, not {text!r}")
    return i, n


def _cmd_peer(a: argparse.Namespace) -> int:
    import signal
    import threading

    from .config import parse_split
    from .peer import Peer, PeerOptions
    from .tasks.data import split_shards
    from .training import Setup
    from .transport.dht import DhtTransport

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    secret = b""
    if a.secret_file:
        try:
            secret = Path(a.secret_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"--secret-file {a.secret_file}: {exc.strerror}") from None
        if len(secret) < 16:
            raise ConfigError("--secret-file must hold at least 16 bytes")
    shard = _shard(a.shard)
    alpha = parse_split(a.split)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = Setup.build(a.run_id, a.model, a.task, _train_config(a), objective=a.objective,
                        label_names=_labels(a.labels), eval_file=a.eval_file)
    data = setup.dataset.train
    if shard is not None:
        data = split_shards(data, shard[1], alpha, a.seed)[shard[0]]
    privacy = None
    dp = _dp_config(a)
    if dp is not None:
        from .privacy import Accountant
        from .training import Privacy

        if a.rounds is None:
            raise ConfigError("--dp-epsilon needs --rounds: the noise is set for the planned number of rounds")
        privacy = Privacy.create(Accountant(dp, len(data), setup.train.batch_size, a.rounds * setup.train.samples))
    identity = out / "identity.key"
    net = DhtTransport(setup.spec.run_tag, run_id=a.run_id, initial_peers=a.join, host=a.host, port=a.port,
                       announce_host=a.announce_host, identity=identity)
    peer = None
    try:
        pid = _peer_id(a.peer_id, identity.read_bytes())
        setup.spec.save(out / "run.json")
        opts = PeerOptions(peer_id=pid, rounds=a.rounds, lockstep=a.lockstep, secret=secret,
                           snapshot_every=a.snapshot_every, max_deadline=a.max_deadline, eval_size=a.eval_size)
        peer = Peer(setup, data, net, out, opts, privacy)
        (out / "addresses.txt").write_text("\n".join(net.addresses) + "\n")
        print(f"peer {pid:x} listening; others can join with:", flush=True)
        for addr in net.addresses:
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
    finally:
        if peer is not None:
            peer.close()
        net.close()
    return 0


def _cmd_swarm(a: argparse.Namespace) -> int:
    from .swarm import run_swarm

    train = _train_config(a)
    common = ["--model", a.model, "--task", a.task, "--run-id", a.run_id, "--objective", a.objective,
              "--samples", str(train.samples), "--batch-size", str(train.batch_size), "--lr", repr(train.lr),
              "--eps", repr(train.eps), "--codec", train.codec.label, "--tune", train.tune,
              "--directions", train.directions.value, "--max-length", str(train.max_length),
              "--rounds", str(a.rounds), "--split", a.split, "--seed", str(a.seed),
              "--host", "127.0.0.1", "--threads", str(a.threads)]
    if a.labels:
        common += ["--labels", a.labels]
    if a.eval_file:
        common += ["--eval-file", a.eval_file]
    if a.lockstep:
        common += ["--lockstep", str(a.peers)]

    def peer_args(i: int) -> list[str]:
        return [*common, "--peer-id", str(i), "--shard", f"{i}/{a.peers}"]

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
        result = run_swarm(a.peers, peer_args, Path(a.out), a.rounds, a.timeout, progress)
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps({k: result[k] for k in ("peers", "rounds", "agree", "state_hash", "set_digest")}, indent=2))
    print(f"wrote {Path(a.out) / 'swarm.json'}")
    return 0 if result["agree"] else EXIT_ERROR


def _cmd_replay(a: argparse.Namespace) -> int:
    from .config import RunSpec
    from .ledger import LEDGER_NAME, read_ledger
    from .models import export_model
    from .record import decode_record
    from .replay import apply_records, effective
    from .simulate import RUN_NAME
    from .training import Setup

    run_dir = Path(a.run)
    spec = RunSpec.load(run_dir / RUN_NAME)
    raw = read_ledger(run_dir / LEDGER_NAME)
    try:
        records = [decode_record(b, run_tag=spec.run_tag) for b in raw]
    except OnebyteError as exc:
        raise LedgerError(f"{run_dir / LEDGER_NAME}: {exc}") from None
    setup = Setup.build(spec.run_id, a.base, spec.task, spec.train, objective=spec.objective,
                        expect_base_hash=spec.base_hash)
    if setup.spec.run_tag != spec.run_tag:
        raise ConfigError("this base and configuration do not reproduce the run tag of run.json")
    if a.shuffle is not None:
        random.Random(a.shuffle).shuffle(records)
    apply_records(setup.state, effective(records), spec.train)
    print(f"records {len(records)}")
    print(f"state_hash {setup.state.state_hash()}")
    if a.out:
        print(f"wrote {export_model(setup.loaded, a.out)}")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from .models import load_model
    from .tasks.data import load_dataset
    from .tasks.objectives import ObjectiveKind, build_objective

    kind = ObjectiveKind(a.objective)
    loaded = load_model(a.model)
    ds = load_dataset(a.task, label_names=_labels(a.labels), need_labels=kind is not ObjectiveKind.LM,
                      eval_file=a.eval_file)
    result = build_objective(loaded, ds, kind, a.max_length).evaluate(ds.test)
    print(json.dumps({"model": a.model, "task": a.task, "examples": len(ds.test), **result}))
    return 0


def _cmd_ledger(a: argparse.Namespace) -> int:
    from .ledger import verify_ledger

    n = verify_ledger(a.path)
    print(f"ok: {n} records")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handlers = {"simulate": _cmd_simulate, "peer": _cmd_peer, "swarm": _cmd_swarm, "replay": _cmd_replay,
                "eval": _cmd_eval, "ledger": _cmd_ledger}
    try:
        return handlers[args.command](args)
    except OnebyteError as exc:
        print(f"onebyte: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("onebyte: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
