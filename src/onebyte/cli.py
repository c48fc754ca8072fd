"""The ``onebyte`` command: parse flags (over a run file), build a config, call the library, report.

Every command takes ``--config run.toml`` (``onebyte init`` writes a commented one); flags given
on the command line override the file; anything in neither takes ``RunSpec``'s defaults, the same
as in Python. Every error the library raises on purpose (``OnebyteError``) and every bad flag
becomes one line on stderr and exit code 2, with the library's field names mapped to flags.
Heavy modules (torch, transformers) load only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from fractions import Fraction

from . import __version__
from .commands import EXIT_ERROR, HANDLERS
from .commands import run_spec as _spec  # noqa: F401  (the run a command line describes)
from .errors import ConfigError, OnebyteError

__all__ = ["main", "build_parser", "flag_for", "EXIT_ERROR"]


def flag_for(field: str) -> str:
    """The flag that sets a library field: ``train.lr`` -> ``--lr``, ``run_id`` -> ``--run-id``,
    ``dp.epsilon`` -> ``--dp-epsilon`` (a setting's flag is its name, see ``config.Setting.flag``)."""
    if field.startswith("train."):
        field = field[6:]
    elif field.startswith("dp."):
        return "--dp-" + field[3:].replace("_", "-")
    elif field.startswith("keys"):  # the run file's [[keys]]: no flag sets them
        return field
    return "--" + field.replace("_", "-")


_RATE_UNITS = {"b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "bit/s": 1 / 8, "kbit/s": 1e3 / 8, "mbit/s": 1e6 / 8}


def _rate(text: str) -> float:
    """A link rate as bytes a second: ``8kB/s``, ``64kbit/s``, ``1MB/s``, or a plain number of bytes."""
    t = text.strip().lower().replace(" ", "")
    for unit in sorted(_RATE_UNITS, key=len, reverse=True):
        if t.endswith(unit):
            number, scale = t[: -len(unit)], _RATE_UNITS[unit]
            break
    else:
        number, scale = t, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate (e.g. 8kB/s, 64kbit/s, or bytes a second)")
    return value


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
# a setting's value: checked further, with the run file's values, by RunSpec and TrainConfig
_integer = _number(int, lambda v: True, "an integer")
_real = _number(lambda t: float(Fraction(t)), lambda v: True, "a number such as 0.25 or 1/4")  # 1/4: a density
_examples = _number(int, lambda v: v >= 0, "a number of examples >= 0, or all")


def _eval_size(text: str) -> int | None:
    """``--eval-size``: N examples, 0 none, ``all`` (None) every one (``config.Defaults.eval_size``)."""
    return None if text == "all" else _examples(text)


def _add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="RUN.TOML", help="the run file every site shares (flags override it)")


def _add_setting_flags(p: argparse.ArgumentParser, run: type | None = None, train: type | None = None) -> None:
    """A flag for every setting of the run file, made from the setting's field (``config.settings``):
    its name, help, default and values. Each defaults to None: an unset flag takes the run file's
    value, else the field's default. ``run``, ``train``: ``RunSpec``, ``TrainConfig`` or subclasses."""
    from .config import RunSpec, TrainConfig, settings

    _add_config_flag(p)
    groups = (("the run (every peer must agree on these, except model and task paths)", run or RunSpec),
              ("training (every peer must agree on these, except the estimator)", train or TrainConfig))
    for title, cls in groups:
        g = p.add_argument_group(title)
        for s in settings(cls):
            text = s.help.replace("%", "%%")
            if s.shown_default():
                text += f" [{s.shown_default()}]"
            if s.kind is bool:
                g.add_argument(s.flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            elif s.choices:
                g.add_argument(s.flag, choices=s.choices, default=None, help=text)
            else:
                g.add_argument(s.flag, type={int: _integer, float: _real}.get(s.kind, str), default=None, help=text)


def _add_eval_size(p: argparse.ArgumentParser, when: str) -> None:
    from .config import Defaults

    shown = "all" if Defaults.eval_size is None else Defaults.eval_size
    p.add_argument("--eval-size", type=_eval_size, default=Defaults.eval_size, metavar="N|all",
                   help=f"held-out examples evaluated {when}: the same fixed-seed sample in every run; 0: none, "
                   f"all: every one [{shown}]")


def _add_dp_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("differential privacy of each peer's own data (DP-ZO on the scalar)")
    g.add_argument("--dp-epsilon", type=_positive_float, help="privacy budget ε for the planned rounds")
    g.add_argument("--dp-delta", type=_positive_float, default=1e-5, help="δ (default 1e-5)")
    g.add_argument("--dp-clip", type=_positive_float, default=1.0, help="clip of per-example derivatives")


def _add_log_to(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-to", action="append", default=[], metavar="KIND:PATH",
                   help="also send each metrics line to a tracker: tensorboard:DIR (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    from .api import Defaults

    p = _Parser(prog="onebyte", description="Decentralized fine-tuning, one byte per projected gradient.")
    p.add_argument("--version", action="version", version=f"onebyte {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    i = sub.add_parser("init", help="write a commented run file of every setting that changes the math")
    i.add_argument("path", help="run file to write (e.g. run.toml)")
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    _add_setting_flags(i)

    s = sub.add_parser("simulate", help="N virtual peers on one machine")
    _add_setting_flags(s)
    s.add_argument("--peers", type=_positive_int, default=Defaults.peers)
    s.add_argument("--rounds", type=_positive_int, default=Defaults.rounds)
    s.add_argument("--split", default=Defaults.split, help="iid or dirichlet:ALPHA (label skew across peers)")
    s.add_argument("--seed", type=_non_negative_int, default=Defaults.seed, help="seed of the shard split")
    s.add_argument("--eval-every", type=_non_negative_int, default=0,
                   help="rounds between evaluations (0: about 10 per run)")
    _add_eval_size(s, "about ten times a run (see --eval-every)")
    s.add_argument("--threads", type=_non_negative_int, default=0, help="torch threads (0: torch's default)")
    s.add_argument("--attack", metavar="KIND:FRACTION",
                   help="make that fraction of the peers hostile insiders: signflip, max, random, sybil, lie-late")
    s.add_argument("--no-identities", action="store_true",
                   help="count records from any peer id (the swarm secret alone), to measure what identities stop")
    s.add_argument("--keys", metavar="KEY_FILE,...", type=lambda t: [f for f in t.split(",") if f],
                   help="a run file listing site keys: one private key file per peer, in shard order; the "
                   "peers then publish and sign as those sites (equal to a swarm of them in lockstep)")
    _add_dp_flags(s)
    s.add_argument("--out", required=True, help="run directory to create")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_log_to(s)

    pe = sub.add_parser("peer", help="run one networked peer (hivemind)")
    _add_setting_flags(pe)
    pe.add_argument("--data", dest="task", help="this peer's own data file (same as --task)")
    pe.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                    help="log progress details (as onebyte -v peer)")
    pe.add_argument("--out", required=True,
                    help="this peer's directory (ledger, snapshot, summary); reuse it to restart")
    pe.add_argument("--join", action="append", default=[], metavar="MULTIADDR", help="address of a live peer")
    pe.add_argument("--secret-file", help="file holding the swarm secret (every peer needs the same one)")
    pe.add_argument("--key", metavar="KEY_FILE",
                    help="this site's signing key (onebyte keygen): needed when the run file lists [[keys]]; "
                    "the peer id is then the key's")
    ends = pe.add_mutually_exclusive_group()
    ends.add_argument("--rounds", type=_positive_int, help="complete rounds 0..R-1, drain, exit")
    ends.add_argument("--until-stopped", action="store_true", help="run until SIGTERM/SIGINT (the default)")
    pe.add_argument("--peer-id", help="64-bit peer id, decimal or 0x-hex (default: from this peer's key)")
    pe.add_argument("--shard", help="I/N: train on shard I of N of --task, split as the simulator does")
    pe.add_argument("--split", default=Defaults.split, help="with --shard: iid or dirichlet:ALPHA")
    pe.add_argument("--seed", type=_non_negative_int, default=Defaults.seed, help="with --shard: seed of the split")
    pe.add_argument("--lockstep", type=_non_negative_int, default=0,
                    help="N: every round waits for the records of peers 0..N-1 (equivalence checks)")
    pe.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    pe.add_argument("--port", type=_non_negative_int, default=0, help="TCP port to listen on (0: any free port)")
    pe.add_argument("--announce-host", help="public IP to advertise (behind NAT / port forwarding)")
    pe.add_argument("--private", action="store_true",
                    help="this machine takes no inbound connections (behind NAT, no open port): "
                         "the --join peers relay for it")
    pe.add_argument("--relay", action="store_true",
                    help="this machine is reachable: relay for --private peers (they --join it), passing each "
                         "record pushed to it by its author on to every other live peer")
    pe.add_argument("--link-budget", type=_rate, default=0.0, metavar="RATE",
                    help="what this site may send, e.g. 8kB/s or 64kbit/s: each round it measures the largest K "
                    "(up to the run's) whose record fits, pushed to every other live peer [no limit]")
    pe.add_argument("--snapshot-every", type=_non_negative_int, default=10, help="rounds between snapshots")
    pe.add_argument("--catchup", choices=["auto", "snapshot", "ledger"], default="auto",
                    help="how a newcomer catches up: the smaller download of a peer's snapshot and its ledger [auto]")
    pe.add_argument("--max-deadline", type=_positive_float, default=60.0, help="upper bound of the round deadline (s)")
    pe.add_argument("--min-peers", type=_positive_int, default=1,
                    help="wait before the first round until this many peers (this one included) are live [1]")
    pe.add_argument("--threads", type=_non_negative_int, default=0, help="torch threads (0: torch's default)")
    _add_eval_size(pe, "at start and end")
    _add_log_to(pe)
    _add_dp_flags(pe)

    sw = sub.add_parser("swarm", help="start N real peer processes on loopback and collect their results")
    _add_setting_flags(sw)
    sw.add_argument("--peers", type=_positive_int, default=3)
    sw.add_argument("--rounds", type=_positive_int, default=20)
    sw.add_argument("--split", default=Defaults.split)
    sw.add_argument("--seed", type=_non_negative_int, default=Defaults.seed)
    sw.add_argument("--lockstep", action="store_true", help="rounds wait for every peer (bit-equal to simulate)")
    sw.add_argument("--site-keys", action="store_true",
                    help="identity mode: give each peer its own site key (OUT/keys/site-I.key, kept for a rerun) and "
                    "list them in the run file; onebyte simulate --keys with those files gives the same run")
    sw.add_argument("--threads", type=_positive_int, default=1, help="torch threads per peer")
    sw.add_argument("--timeout", type=_positive_float, default=3600.0, help="give up after this many seconds")
    sw.add_argument("--out", required=True)
    sw.add_argument("--no-progress", action="store_true")

    k = sub.add_parser("keygen", help="write a new site signing key and print its line for the run file")
    k.add_argument("path", help="key file to create (never overwritten; readable by its owner only)")
    k.add_argument("--name", help="the site's name in the run file [the file name without its extension]")

    rv = sub.add_parser("revoke", help="revoke a site's key from a round on, signed with an admin key (or the key "
                        "itself): every peer of the swarm stops counting its records of those rounds")
    rv.add_argument("site", help="the key's name in the run file's [[keys]] (or its 64 hex digits)")
    rv.add_argument("--from", dest="from_round", type=_non_negative_int, required=True,
                    help="the first round whose records of that key stop counting")
    rv.add_argument("--key", required=True, help="the signing key: one listed with admin = true, or the revoked key")
    rv.add_argument("--run", required=True, help="the run directory of a peer of this swarm (running or not): "
                    "it passes the revocation on at its next heartbeat or start")

    r = sub.add_parser("replay", help="rebuild a run's weights from the base model and its ledger")
    r.add_argument("--run", required=True, help="run directory (holds run.json and ledger.obl)")
    r.add_argument("--base", help="the run's base model (default: the model named in run.json)")
    r.add_argument("--shuffle", type=_non_negative_int, help="apply records in an order shuffled by this seed")
    r.add_argument("--out", help="write the fine-tuned model here: a Hugging Face directory, or for a LoRA run "
                   "a PEFT adapter directory")
    r.add_argument("--merge", action="store_true", help="with --out, for a LoRA run: write the merged full model")

    e = sub.add_parser("eval", help="held-out loss and accuracy of a model, as JSON")
    _add_setting_flags(e)

    db = sub.add_parser("dashboard", help="a local web page following run directories as they grow")
    db.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run (simulate/peer --out) or a swarm's --out")
    db.add_argument("--port", type=_non_negative_int, default=8050, help="port to serve on [8050]")
    db.add_argument("--host", default="127.0.0.1", help="interface to serve on [127.0.0.1: this machine only]")

    rp = sub.add_parser("report", help="one self-contained HTML pilot report over run directories")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run (simulate/peer --out) or a swarm's --out")
    rp.add_argument("--alone", action="append", default=[], metavar="RUN_DIR",
                    help="a site's run trained alone on its own data, to compare with joining (repeatable)")
    rp.add_argument("--out", required=True, help="HTML file to write")

    led = sub.add_parser("ledger", help="ledger tools")
    lsub = led.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)
    v = lsub.add_parser("verify", help="exit 0 if the ledger is valid; exit 2 with the reason if not")
    v.add_argument("path")
    return p


def _quiet_libraries() -> None:
    """The command line's choices for the libraries it drives (the library itself sets none)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,  # -v: times, to the ms
                        format=("%(asctime)s " if args.verbose else "") + "%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        return HANDLERS[args.command](args)
    except ConfigError as exc:
        print(f"onebyte: error: {exc.render({f: flag_for(f) for f, _ in exc.problems})}", file=sys.stderr)
        return EXIT_ERROR
    except OnebyteError as exc:
        print(f"onebyte: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("onebyte: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
