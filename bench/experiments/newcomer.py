"""A newcomer joining over a thin link after 1,000 rounds of 4 peers: the catch-up path it takes, and when it is in sync.

    sudo python -m bench.experiments.newcomer [--rounds 1000] [--more 80] [--seed-pool P] [--out bench/results/newcomer.json]

Four peers in the demo's configuration (``minilm`` on ``vader``, the library defaults) hold a
ledger of ``--rounds`` rounds, one record per peer per round. The ledgers are written here: real
records of the run (its codec, run tag and swarm secret) whose scalars are small random values
instead of measurements, because what catch-up costs in bytes and replay does not depend on the
values, and measuring 1,000 real rounds would take an hour of this machine. The four restart from
those ledgers in the thin-link lab (every access link 64 kbit/s each way, 100 ms, 1 % loss, as in
``bench.experiments.thinlink``), each in its own namespace, and train ``--more`` rounds. Once they
are training, a fifth peer with an empty directory joins through peer 0 over its own thin link.

Measured, from the newcomer's launch: when its DHT node is up (its address file), when it has joined
(its log names the path, ledger or snapshot, and the sizes it chose by), and when it is in sync (its
first round done, holding every record of the rounds before it). All five run to the end, and the
run checks that they hold one (set digest, state hash).

``--seed-pool P`` runs the same with a seed pool of P directions (``seed_pool`` in the run file): the
newcomer then joins from peer 0's coefficient snapshot (``bench.experiments.pool`` renders it, from
``bench/results/newcomer_pool.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shutil
import signal
import time
from pathlib import Path

import numpy as np

from bench.experiments.thinlink import LINK
from bench.lab import ThinLab, unwind_on_sigterm
from bench.lab import peers as lab_peers
from bench.output import RESULTS, WORK, save_result
from bench.sections import Claim, Results, Section, Step
from onebyte.config import RunSpec
from onebyte.ledger import LedgerWriter
from onebyte.record import build_record
from onebyte.seeds import stream_seed
from onebyte.swarm import read_summary, stop_group, wait_for_address
from onebyte.training import Setup

PEERS = 4
#: Scale of the synthetic scalars: the state moves like a quiet run's, not like noise at full scale.
SCALE = 0.1
#: Rounds of records built and appended to a ledger at a time.
CHUNK_ROUNDS = 5_000
JOINED = re.compile(r"joined from peer (\w+) by its (ledger|snapshot) \(ledger ([\d,]+) B, snapshot ([\d,]+) B\)")
JOINED_POOL = re.compile(r"joined from peer (\w+) by its coefficients \(([\d,]+) B of totals")
#: The newcomer's ``-v`` log lines that mark its steps, with their times (``onebyte peer -v``).
EVENT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO onebyte\.(?:peer|catchup): "
                   r"(model and data ready|DHT node up|found \d+ live peer|ledger piece \d+ of \d+|joined from peer)",
                   re.M)
PIECE = re.compile(r"ledger piece \d+ of \d+ from peer \w+: \d+ records, (\d+) B")
#: What each step of the timeline means, in the table.
STEPS = {"model": "its model and data are loaded", "DHT": "its DHT node is up (joined through peer 0)",
         "found": "it has found a live peer to join from", "ledger": "{} received"}
SYNC_TARGET_S = 60.0
RUN_TIMEOUT = 900.0


def write_ledger(path: Path, train, tag: bytes, rounds: int, secret: bytes) -> int:
    """``rounds`` rounds of PEERS peers' records in a ledger at ``path``: the run's codec, tag and
    secret, synthetic scalars (SCALE x standard normal); its bytes."""
    rng = np.random.default_rng(0)
    with LedgerWriter(path) as writer:
        for start in range(0, rounds, CHUNK_ROUNDS):  # a chunk of rounds at a time: 100,000 rounds fit
            writer.append([build_record(train.codec, tag, r, p, 0, SCALE * rng.normal(size=train.samples),
                                        stream_seed(tag, "rounding", r, p, 0), secret)
                           for r in range(start, min(rounds, start + CHUNK_ROUNDS)) for p in range(PEERS)])
    return path.stat().st_size


def write_ledgers(work: Path, rounds: int, seed_pool: int = 0) -> tuple[Path, Path, int]:
    """The shared run file and secret, and each established peer's ledger of ``rounds`` rounds.
    Returns (run file, secret file, ledger bytes)."""
    from onebyte.config import TrainConfig

    work.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(run_id="newcomer-bench", model="minilm", task="vader", train=TrainConfig(seed_pool=seed_pool))
    run_file = work / "run.toml"
    run_file.write_text(spec.to_toml())
    secret = secrets.token_bytes(32)
    secret_file = work / "secret"
    secret_file.write_bytes(secret)
    secret_file.chmod(0o600)
    run = Setup.build(RunSpec.load(run_file)).spec  # exactly what the peers will read, with the base's hash
    size = write_ledger(work / "peer-0" / "ledger.obl", run.spec.train, run.run_tag, rounds, secret)
    for p in range(1, PEERS):  # every established peer holds the same records
        (work / f"peer-{p}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "peer-0" / "ledger.obl", work / f"peer-{p}" / "ledger.obl")
    return run_file, secret_file, size


def measure(work: Path, rounds: int, more: int, seed_pool: int = 0) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    run_file, secret_file, ledger_bytes = write_ledgers(work, rounds, seed_pool)
    final = rounds + more
    common = ["--config", str(run_file), "--secret-file", str(secret_file), "--threads", "1", "--eval-size", "0",
              "--max-deadline", "30", "--rounds", str(final), "-v"]
    lab = ThinLab(PEERS + 1, rate_bps=LINK["rate_bps"], delay=LINK["delay"], loss=LINK["loss"], queue=LINK["queue"])
    procs = []
    t_start = time.monotonic()
    try:
        def launch(i: int, join: list[str], extra: list[str]):
            return lab_peers.start(lab, i, work, [*common, *extra, "--peer-id", str(i)], join)

        procs.append(launch(0, [], ["--shard", f"0/{PEERS}", "--min-peers", str(PEERS)]))
        join = wait_for_address(procs[0], 180)[:1]
        for i in range(1, PEERS):
            procs.append(launch(i, join, ["--shard", f"{i}/{PEERS}", "--min-peers", str(PEERS)]))
        # the newcomer comes once every established peer has trained a round past the ledger
        end = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < end and not all((read_summary(p.out) or {}).get("rounds_completed", 0) >= 2
                                                 for p in procs):
            if not all(p.alive() for p in procs):
                raise RuntimeError("an established peer exited before the newcomer came: see its peer.log")
            time.sleep(0.5)
        swarm_round = max((read_summary(p.out) or {}).get("round", 0) for p in procs)
        t0, launched = time.monotonic(), time.time()
        newcomer = launch(PEERS, join, [])
        procs.append(newcomer)
        log_path = newcomer.out / "peer.log"
        up = joined_at = synced_at = None
        joined: dict = {}
        first: dict = {}
        while time.monotonic() < end and newcomer.alive() and synced_at is None:
            now = time.monotonic() - t0
            if up is None and (newcomer.out / "addresses.txt").exists():
                up = now
            if joined_at is None and log_path.exists() and (m := JOINED.search(log_path.read_text())):
                joined_at = now
                joined = {"path": m.group(2), "from_peer": m.group(1), "ledger_bytes": int(m.group(3).replace(",", "")),
                          "snapshot_bytes": int(m.group(4).replace(",", ""))}
            elif joined_at is None and log_path.exists() and (m := JOINED_POOL.search(log_path.read_text())):
                joined_at = now
                joined = {"path": "coefficients", "from_peer": m.group(1),
                          "coefficient_bytes": int(m.group(2).replace(",", ""))}
            s = read_summary(newcomer.out) or {}
            if s.get("rounds_completed", 0) >= 1:
                synced_at, first = now, s
            time.sleep(0.25)
        while time.monotonic() < end and any(p.alive() for p in procs):
            time.sleep(1.0)
        finished = not any(p.alive() for p in procs)
    finally:
        for p in procs:
            stop_group(p, signal.SIGKILL)
        emulator = lab.stats()
        lab.close()
    summaries = [read_summary(p.out) or {} for p in procs]
    first_round = first["round"] - first["rounds_completed"] if first else None
    return {
        "peers": PEERS,
        "seed_pool": seed_pool,
        "model": "minilm",
        "task": "vader",
        "rounds_before": rounds,
        "records_before": rounds * PEERS,
        "ledger_file_bytes": ledger_bytes,
        "scalars": f"synthetic: {SCALE} x standard normal, encoded by the run's codec",
        "link": {"rate_kbit_s": LINK["rate_bps"] / 1000, "one_way_delay_ms": 1000 * LINK["delay"],
                 "loss": LINK["loss"], "queue_ms": 1000 * LINK["queue"]},
        "swarm_round_at_launch": swarm_round,
        "seconds_to_dht_up": up,
        "seconds_to_joined": joined_at,
        "seconds_to_in_sync": synced_at,
        "joined_by": joined or (summaries[-1].get("joined_by") or {}),
        "timeline": timeline(log_path, launched),
        "ledger_wire_bytes": sum(int(b) for b in PIECE.findall(log_path.read_text() if log_path.exists() else "")),
        "first_round": first_round,
        "records_at_first_round": first.get("records"),
        # every record of the rounds before its first: the established peers' (the newcomer has none there)
        "complete_before_first_round": bool(first) and first["records"] >= PEERS * first_round,
        "in_sync_target_s": SYNC_TARGET_S,
        "finished": finished,
        "agree": finished and len({(s.get("set_digest"), s.get("state_hash")) for s in summaries}) == 1,
        "records_at_end": [s.get("records") for s in summaries],
        "emulator": {k: emulator.get(k) for k in ("frames", "bytes", "lost", "queue_drops")},
        "wall_seconds": round(time.monotonic() - t_start, 1),
    }


def timeline(log_path: Path, launched: float) -> list[tuple[float, str]]:
    """(seconds from launch, step) for the newcomer's first live peer found, each ledger piece and
    the join, from the times its ``-v`` log gives them (this machine's clock, to the millisecond)."""
    from datetime import datetime

    text = log_path.read_text() if log_path.exists() else ""
    out, seen = [], set()
    for stamp, step in EVENT.findall(text):
        if step.startswith("found") and "found" in seen:
            continue  # the first time only
        seen.add(step.split()[0])
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append((round(at - launched, 1), step))
    return out


def render(results: Results) -> list[str]:
    r = results.get("newcomer")
    if not r:
        return []
    j = r["joined_by"]
    why = (f"its ledger ({j['ledger_bytes']:,} B) against a snapshot ({j['snapshot_bytes']:,} B): the smaller "
           f"download wins" if j.get("ledger_bytes") is not None else "the peer reported no sizes")
    sync = r["seconds_to_in_sync"]
    verdict = "met" if _ok(r) else "**missed**"
    link = r["link"]
    return [
        "### A newcomer over a thin link after 1,000 rounds",
        "",
        f"`{r['command']}` ({r['date']}, {r['machine']}). {r['peers']} peers (`{r['model']}` on `{r['task']}`, "
        f"the library defaults) restart from ledgers of {r['rounds_before']:,} rounds ({r['records_before']:,} "
        f"records, {r['ledger_file_bytes']:,} bytes on disk; the scalars are {r['scalars']}: catch-up's bytes "
        f"and replay do not depend on them) and train on; at round {r['swarm_round_at_launch']} a fifth peer "
        f"with an empty directory joins through peer 0. Every access link: {link['rate_kbit_s']:.0f} kbit/s "
        f"each way, {link['one_way_delay_ms']:.0f} ms, {100 * link['loss']:.0f} % loss.",
        "",
        "| from the newcomer's launch | seconds |",
        "|---|---|",
        *[f"| {what} | {_s(at)} |" for at, what in sorted(
            [(r["seconds_to_dht_up"] or 0.0, "it is listening (its address file is written)"),
             *[(at, "... " + STEPS[step.split()[0]].format(step)) for at, step in r.get("timeline", [])
               if not step.startswith("joined")]])],
        f"| it has joined (path chosen, records fetched and replayed) | {_s(r['seconds_to_joined'])} |",
        f"| **in sync**: its first round done, with every record before it "
        f"({r['records_at_first_round'] if r['records_at_first_round'] is not None else '—'} records at round "
        f"{r['first_round'] if r['first_round'] is not None else '—'}) | **{_s(sync)}** |",
        "",
        f"Path: **{j.get('path', '—')}**, by {why}"
        + (f"; its pieces came deflated, {r['ledger_wire_bytes']:,} B in all." if r.get("ledger_wire_bytes") else ".")
        + " All five peers end on one (digest, hash): "
        f"{'yes' if r['agree'] else '**no**'} (records at the end: {', '.join(map(str, r['records_at_end']))}). "
        f"Target: in sync within {r['in_sync_target_s']:.0f} s — {verdict}. At the line's rate alone the "
        f"ledger takes {j.get('ledger_bytes', 0) / (link['rate_kbit_s'] * 125):.0f} s and the snapshot "
        f"{j.get('snapshot_bytes', 0) / (link['rate_kbit_s'] * 125):.0f} s, uncompressed. The times of the steps "
        "come from the newcomer's `-v` log (`bench/out/newcomer/peer-4/peer.log`).",
        "",
    ]


def _ok(r: dict) -> bool:
    sync = r["seconds_to_in_sync"]
    return sync is not None and sync <= r["in_sync_target_s"] and r["complete_before_first_round"] and r["agree"]


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def claims(results: Results) -> list[Claim]:
    r = results.get("newcomer")
    if not r:
        return []
    sync = r["seconds_to_in_sync"]
    ok = _ok(r)
    return [("a newcomer over a thin link after 1,000 rounds of 4 peers: seconds to in sync (path)",
             f"{_s(sync)} s ({r['joined_by'].get('path', '—')})" + ("" if r["agree"] else ", **did not agree**"),
             f"≤ {r['in_sync_target_s']:.0f} s", ok)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--more", type=int, default=80, help="rounds the swarm trains after the ledger")
    ap.add_argument("--seed-pool", type=int, default=0, help="a seed pool of P directions (0: none)")
    ap.add_argument("--work", type=Path, default=WORK / "newcomer")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    a.out = a.out or RESULTS / ("newcomer_pool.json" if a.seed_pool else "newcomer.json")

    unwind_on_sigterm()
    r = measure(a.work, a.rounds, a.more, a.seed_pool)
    save_result(r, a.out, "sudo python -m bench.experiments.newcomer"
                + (f" --rounds {a.rounds}" if a.rounds != 1000 else "") + (f" --more {a.more}" if a.more != 80 else "")
                + (f" --seed-pool {a.seed_pool}" if a.seed_pool else ""),
                f"{platform.machine()}, {os.cpu_count()} cores, one network namespace per peer")


SECTION = Section("newcomer", "bench.experiments.newcomer", render, claims=claims,
                  steps=(Step("newcomer", ("--out", "{out}/newcomer.json"), None, needs_root=True),))

if __name__ == "__main__":
    main()
