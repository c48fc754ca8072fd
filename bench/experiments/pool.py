"""The seed pool (issue #31): a newcomer's download after 1,000 and 100,000 rounds, and the pool's accuracy price.

    python -m bench.experiments.pool catchup [--cases P:K:ROUNDS,...] [--out bench/results/pool_catchup.json]
    python -m bench.experiments.pool accuracy [--pools 1024,4096,16384,0] [--seeds 3] [--rounds 300]
        [--workers 2] [--resume] [--dry-run] [--out bench/results/pool_accuracy.json]
    python -m bench.experiments.pool llm [--pools 4096,0] [--out bench/results/llm_pool_{P}.json]

**catchup.** Each case is a pool of P seeds, K scalars per record and a history of ROUNDS rounds of
4 peers, in the newcomer bench's configuration (``minilm`` on ``vader``; K = 1,024 is the library's
defaults, K = 4 the forward-only settings, ``TrainConfig.for_estimator("fzoo")``, whose records are
what make 100,000 rounds affordable to build here). Peer 0's ledger is written as the newcomer bench
writes it: real records of the run (its codec, run tag and swarm secret) with synthetic scalars, since
what catch-up costs in bytes does not depend on their values. Peer 0 then opens that directory
(``Peer``: the ledger replayed into its state and pool totals) on the in-memory transport, and a
newcomer with an empty directory joins from it by the library's own path (``CatchUp.catch_up``,
``catchup = auto``: a pool run asks for the coefficient snapshot first). Measured: the bytes the
newcomer's transport received and sent while joining, the seconds its join took on this machine
(rebuilding the state from the P directions and checking the hash), and whether it ends on peer 0's
(set digest, state hash). The time over a 64 kbit/s line is **computed** from the bytes received
(bytes x 8 / 64,000: the line's rate alone, no latency or loss), not measured in the thin-link lab;
the ledger and snapshot that the same peer announces (SIZE) are given the same way for comparison.

**accuracy.** The demo (``onebyte.simulate`` with ``RunSpec`` defaults: MiniLM on VADER, the library's
``TrainConfig()`` and ``api.Defaults``' peers, rounds and split) at each seed pool P (0: unrestricted
directions), ``--seeds`` seeds each (run id ``pool-seed{s}``, shard seed s, the same for every P, so
the comparison is paired), evaluated on the whole held-out split. Results are written after every run;
``--resume`` keeps the runs already in ``--out`` and runs only the missing ones; ``--dry-run`` lists them.

**llm.** SmolLM2-135M on the labelled tweets, in the exact-gradient configuration of the LLM section
(``bench.experiments.llm``: grad, K = 1,024 shared directions, norms tuned, 60 rounds, 4 peers), once per
pool size, evaluated before and after on 300 held-out tweets: ``bench/results/llm_pool_<P>.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from bench.experiments.newcomer import PEERS, SCALE, write_ledger
from bench.output import RESULTS, WORK, save_result
from bench.sections import Claim, Results, Section, Step
from bench.sweep import machine, simulate, sweep

LINK_BPS = 64_000
SYNC_TARGET_S = 60.0
DEFAULT_CASES = ("4096:4:1000,4096:4:100000,16384:4:1000,16384:4:100000,4096:1024:1000,4096:1024:10000,"
                 "16384:1024:1000")
#: The accuracy price the issue allows the default pool on the demo, in points.
MAX_LOSS_POINTS = 0.5
#: The pool sizes SmolLM2 is measured at (0: unrestricted).
LLM_POOLS = (4096, 0)
FAST = dict(eval_size=0, min_deadline=0.5, max_deadline=3.0, heartbeat_interval=0.2, heartbeat_ttl=30.0,
            dht_poll=0.1, join_timeout=3.0, drain_timeout=5.0, sync_interval=0.2, poll=0.01)


# ---------------------------------------------------------------------------------------- catch-up
def _train(pool: int, samples: int):
    from onebyte.config import TrainConfig

    if samples == TrainConfig().samples:
        return TrainConfig(seed_pool=pool)
    forward = TrainConfig.for_estimator("fzoo", seed_pool=pool)
    if forward.samples != samples:
        raise SystemExit(f"K = {samples}: the cases take K = {TrainConfig().samples} (defaults) or "
                         f"K = {forward.samples} (forward-only settings)")
    return forward


def catchup_case(pool: int, samples: int, rounds: int, work: Path) -> dict:
    import shutil

    from onebyte.config import RunSpec
    from onebyte.peer import Peer, PeerOptions
    from onebyte.tasks.data import split_shards
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    shutil.rmtree(work, ignore_errors=True)
    spec = RunSpec(run_id="pool-bench", model="minilm", task="vader", train=_train(pool, samples))
    secret = b"pool-bench-secret"
    t = time.perf_counter()
    source_setup = Setup.build(spec)
    ledger_file = write_ledger(work / "peer-0" / "ledger.obl", source_setup.train, source_setup.spec.run_tag,
                               rounds, secret)
    built = time.perf_counter() - t
    hub = MemoryHub()
    t = time.perf_counter()
    shards = split_shards(source_setup.dataset.train, PEERS + 1, None, 0)
    source = Peer(source_setup, shards[0], MemoryTransport(hub, "p0"), work / "peer-0",
                  PeerOptions(peer_id=0, rounds=None, secret=secret, **FAST))
    restored = time.perf_counter() - t
    newcomer_setup = Setup.build(spec)
    newcomer = Peer(newcomer_setup, shards[PEERS], MemoryTransport(hub, "p9"), work / "newcomer",
                    PeerOptions(peer_id=9, rounds=None, secret=secret, **FAST))
    try:
        source.beat(force=True)
        newcomer.beat(force=True, sync=False)
        hb = newcomer.members.live()[0]
        received, sent = newcomer.net.bytes_received, newcomer.net.bytes_sent
        t, cpu = time.perf_counter(), time.process_time()
        newcomer.catchup.catch_up(hb)
        join_seconds, join_cpu = time.perf_counter() - t, time.process_time() - cpu
        received, sent = newcomer.net.bytes_received - received, newcomer.net.bytes_sent - sent
        joined = dict(newcomer.catchup.joined_by or {})
        snapshot_bytes, ledger_bytes = newcomer.client.size(hb.contact)  # what today's paths would download
        groups = len(newcomer_setup.state.groups)
        agree = (newcomer.replica.digest.hex(), newcomer.state_hash()) == (source.replica.digest.hex(),
                                                                          source.state_hash())
        return {"pool": pool, "samples": samples, "rounds_before": rounds, "records_before": rounds * PEERS,
                "tuned": newcomer_setup.state.numel, "step_groups": groups, "ledger_file_bytes": ledger_file,
                "path": joined.get("path"), "coefficient_bytes": joined.get("coefficient_bytes"),
                "tail_records": joined.get("tail_records"), "received_bytes": received, "sent_bytes": sent,
                "seconds_at_64kbit": round(received * 8 / LINK_BPS, 2),
                "join_seconds_here": round(join_seconds, 2), "join_cpu_seconds_here": round(join_cpu, 2),
                "agree": agree, "round": newcomer.round,
                "announced": {"ledger_bytes": ledger_bytes, "snapshot_bytes": snapshot_bytes,
                              "ledger_seconds_at_64kbit": round(ledger_bytes * 8 / LINK_BPS, 1),
                              "snapshot_seconds_at_64kbit": round(snapshot_bytes * 8 / LINK_BPS, 1)},
                "build_seconds": round(built, 1), "restore_seconds": round(restored, 1)}
    finally:
        newcomer.close()
        source.close()
        shutil.rmtree(work, ignore_errors=True)


def catchup_main(a: argparse.Namespace) -> None:
    out = a.out or RESULTS / "pool_catchup.json"
    cases = [tuple(int(x) for x in c.split(":")) for c in a.cases.split(",")]
    old = json.loads(out.read_text()) if a.resume and out.exists() else {}
    runs = [r for r in old.get("cases", []) if (r["pool"], r["samples"], r["rounds_before"]) in cases]
    done = {(r["pool"], r["samples"], r["rounds_before"]) for r in runs}
    todo = [c for c in cases if c not in done]
    if a.dry_run:
        print("\n".join(f"P = {p}, K = {k}, {n:,} rounds" for p, k, n in todo))
        return
    command = ("python -m bench.experiments.pool catchup " + shlex.join(sys.argv[2:])).strip()
    for p, k, n in todo:
        r = catchup_case(p, k, n, WORK / "pool")
        print(f"P {p} K {k} {n:,} rounds: {r['path']}, {r['received_bytes']:,} B received "
              f"({r['seconds_at_64kbit']} s at 64 kbit/s), agree {r['agree']}", file=sys.stderr, flush=True)
        runs.append(r)
        runs.sort(key=lambda r: (r["samples"], r["pool"], r["rounds_before"]))
        save_result({"peers": PEERS, "model": "minilm", "task": "vader", "link_bps": LINK_BPS,
                     "scalars": f"synthetic: {SCALE} x standard normal, encoded by the run's codec",
                     "in_sync_target_s": SYNC_TARGET_S, "cases": runs}, out, command,
                    machine() + "; in-memory transport", quiet=True)


# ---------------------------------------------------------------------------------------- accuracy
def accuracy_run(c: dict) -> dict:
    import onebyte
    from onebyte.config import TrainConfig

    train = TrainConfig.from_dict({**TrainConfig().to_dict(), "seed_pool": c["pool"]})
    spec = onebyte.RunSpec(run_id=f"pool-seed{c['seed']}", model="minilm", task="vader", train=train)
    start = time.time()
    s = simulate(spec, peers=c["peers"], rounds=c["rounds"], seed=c["seed"], eval_size=c["eval_size"])["summary"]
    return {**c, "before": s["eval_before"]["accuracy"], "accuracy": s["eval_after"]["accuracy"],
            "macro_f1": s["eval_after"]["macro_f1"], "seconds": round(time.time() - start, 1)}


def _key(c: dict) -> str:
    return f"P{c['pool']}/s{c['seed']}"


def summarize(runs: list[dict]) -> dict:
    """Per pool: mean accuracy, and the points lost against unrestricted directions on the same seeds."""
    by: dict[int, dict[int, float]] = {}
    for r in runs:
        by.setdefault(r["pool"], {})[r["seed"]] = r["accuracy"]
    free = by.get(0, {})
    table = {}
    for pool, accs in sorted(by.items()):
        row = {"pool": pool, "accuracy": statistics.fmean(accs.values()), "seeds": len(accs),
               "std": statistics.stdev(accs.values()) if len(accs) > 1 else 0.0}
        paired = [free[s] - a for s, a in accs.items() if s in free]
        if pool and paired:
            row["loss_points"] = 100 * statistics.fmean(paired)
        table[str(pool)] = row
    return table


def accuracy_main(a: argparse.Namespace) -> None:
    from onebyte.api import Defaults

    out = a.out or RESULTS / "pool_accuracy.json"
    rounds = a.rounds or Defaults.rounds
    eval_size = None if a.eval_size < 0 else a.eval_size
    todo = [{"pool": p, "seed": s, "rounds": rounds, "peers": Defaults.peers, "eval_size": eval_size}
            for s in range(a.first_seed, a.first_seed + a.seeds) for p in a.pools]
    runs: list[dict] = []
    old = json.loads(out.read_text()) if a.resume and out.exists() else {}
    if old and old.get("rounds") == rounds and old.get("eval_size") == eval_size:
        runs = old["runs"]
        have = {_key(r) for r in runs}
        todo = [c for c in todo if _key(c) not in have]
    if a.dry_run:
        print(f"{len(todo)} runs of {rounds} rounds ({len(runs)} kept from {out}):")
        print("\n".join(f"  P = {c['pool'] or 'unrestricted'}, seed {c['seed']}" for c in todo))
        return
    command = ("python -m bench.experiments.pool accuracy " + shlex.join(sys.argv[2:])).strip()
    print(f"{len(todo)} runs on {a.workers} workers ({len(runs)} kept)", file=sys.stderr, flush=True)

    def write(complete: bool) -> None:  # after every run: a stopped bench keeps what it finished
        runs.sort(key=_key)
        save_result({"model": "minilm", "task": "vader", "peers": Defaults.peers, "rounds": rounds,
                     "eval_size": eval_size, "pools": sorted({r["pool"] for r in runs}), "complete": complete,
                     "table": summarize(runs), "runs": runs}, out, command, machine(), quiet=True)

    for res in sweep(accuracy_run, todo, a.workers):
        runs.append(res)
        print(f"{_key(res)}: {res['accuracy']:.3f} ({res['seconds']} s)", file=sys.stderr, flush=True)
        write(complete=False)
    write(complete=True)


# ---------------------------------------------------------------------------------------- SmolLM2
#: The LLM section's exact-gradient run (bench/results/llm_grad.json's command), evaluated at the end only.
LLM_ARGS = ("--rounds 60 --adam-steps 60 --eval-size 300 --eval-every 60 --model smollm2 --task tweets --peers 4 "
            "--tune norm --lr 0.03 --eps 0.001 --samples 1024 --batch-size 8 --max-length 64 --estimator grad "
            "--scalar normalised --step mean --directions shared --codec byte --lr-schedule cosine --warmup 0 "
            "--horizon 60 --final-ratio 0.1 --labels negative,neutral,positive --skip-adam --threads 1").split()


def llm_main(a: argparse.Namespace) -> None:
    import subprocess

    for pool in a.pools:
        out = Path(a.out.format(P=pool))
        subprocess.run([sys.executable, "-m", "bench.experiments.llm", *LLM_ARGS, "--seed-pool", str(pool),
                        "--out", str(out)], check=True)


def _render_llm(results: Results) -> list[str]:
    runs = {p: r for p in LLM_POOLS if (r := results.get(f"llm_pool_{p}"))}
    if 0 not in runs or len(runs) < 2:
        return []
    free = runs[0]["onebyte"]["after"]
    out = ["### What a seed pool costs in accuracy (SmolLM2-135M)", "",
           f"`python -m bench.experiments.pool llm --pools {','.join(map(str, runs))}`: each pool size runs "
           f"`{runs[0]['command']}` with `--seed-pool P` ({runs[0]['date']}, {runs[0]['machine']}); "
           f"{runs[0]['onebyte']['tuned_parameters']:,} tuned parameters, one seed, "
           f"{runs[0]['eval_size']} held-out tweets.", "",
           "| seed pool | accuracy before → after | macro-F1 after | points lost against unrestricted |",
           "|---|---|---|---|"]
    for pool, r in sorted(runs.items(), key=lambda kv: kv[0] or 1 << 30):
        ob = r["onebyte"]
        loss = "—" if not pool else f"{100 * (free['accuracy'] - ob['after']['accuracy']):+.1f}"
        out.append(f"| {f'{pool:,}' if pool else 'unrestricted'} | {100 * ob['before']['accuracy']:.1f} % → "
                   f"{100 * ob['after']['accuracy']:.1f} % | {ob['after']['macro_f1']:.3f} | {loss} |")
    se = 100 * (free["accuracy"] * (1 - free["accuracy"]) / runs[0]["eval_size"]) ** 0.5
    return out + ["", f"One seed each: on {runs[0]['eval_size']} held-out tweets an accuracy near "
                  f"{100 * free['accuracy']:.0f} % has a standard error of {se:.1f} points, so a difference "
                  "within a few points is the draw, not the pool.", ""]


# ---------------------------------------------------------------------------------------- report
def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def render(results: Results) -> list[str]:
    out: list[str] = []
    r = results.get("pool_catchup")
    if r and r["cases"]:
        out += ["### A newcomer's catch-up with a seed pool (issue #31)", "",
                f"`{r['command']}` ({r['date']}, {r['machine']}). {r['peers']} peers' history of synthetic records "
                f"(`{r['model']}` on `{r['task']}`; the scalars are {r['scalars']}: catch-up's bytes do not depend "
                "on them); peer 0 restores it from its ledger, and a newcomer joins from it over the in-memory "
                "transport by the library's path. Received: the payload bytes its transport took in (requests' "
                "and replies' bodies; hivemind's framing comes on top). The seconds at 64 kbit/s are computed from "
                "them (the line's rate alone), not measured in the thin-link lab. The join's CPU: rebuilding the "
                "state from the P directions, checking its hash, installing (this process's CPU seconds).", "",
                "| P | K | rounds before | path | coefficients | records sent along | received | at 64 kbit/s "
                "| join's CPU here | same (digest, hash) | the ledger instead | the snapshot instead |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in r["cases"]:
            an = c["announced"]
            out.append(f"| {c['pool']:,} | {c['samples']:,} | {c['rounds_before']:,} | {c['path']} | "
                       f"{_kib(c['coefficient_bytes'] or 0)} ({c['step_groups']} step group{'s' * (c['step_groups'] > 1)}) | "
                       f"{c['tail_records']} | "
                       f"**{c['received_bytes']:,} B** | **{c['seconds_at_64kbit']:.1f} s** | "
                       f"{c['join_cpu_seconds_here']:.1f} s | {'yes' if c['agree'] else '**no**'} | "
                       f"{_kib(an['ledger_bytes'])} ({an['ledger_seconds_at_64kbit']:,.0f} s) | "
                       f"{_kib(an['snapshot_bytes'])} ({an['snapshot_seconds_at_64kbit']:,.0f} s) |")
        out.append("")
    out += _render_lab(results.get("newcomer_pool"))
    acc = results.get("pool_accuracy")
    if acc:
        out += ["### What a seed pool costs in accuracy (the demo)", "",
                f"`{acc['command']}` ({acc['date']}, {acc['machine']}): the demo's defaults, {acc['peers']} peers, "
                f"{acc['rounds']} rounds, at each pool size, paired seeds."
                + ("" if acc.get("complete") else " **Incomplete**: the runs finished so far."), "",
                "| seed pool | held-out accuracy (mean ± std) | seeds | points lost against unrestricted |",
                "|---|---|---|---|"]
        for row in acc["table"].values():
            loss = f"{row['loss_points']:+.1f}" if "loss_points" in row else "—"
            pool = f"{row['pool']:,}" if row["pool"] else "unrestricted"
            out.append(f"| {pool} | "
                       f"{100 * row['accuracy']:.1f} % ± {100 * row['std']:.1f} "
                       f"| {row['seeds']} | {loss} |")
        out.append("")
    return out + _render_llm(results)


def _lab_ok(r: dict) -> bool:
    sync = r.get("seconds_to_in_sync")
    return (sync is not None and sync <= r["in_sync_target_s"] and r["complete_before_first_round"] and r["agree"]
            and r["joined_by"].get("path") == "coefficients")


def _render_lab(r: dict | None) -> list[str]:
    """The newcomer bench with a seed pool (``bench.experiments.newcomer --seed-pool P``): measured in the
    thin-link lab, real peer processes."""
    if not r:
        return []
    j, link, sync = r["joined_by"], r["link"], r["seconds_to_in_sync"]
    return ["### A newcomer over a thin link, with a seed pool (thin-link lab)", "",
            f"`{r['command']}` ({r['date']}, {r['machine']}): the newcomer bench with `seed_pool = "
            f"{r['seed_pool']:,}`. {r['peers']} peer processes restart from ledgers of {r['rounds_before']:,} rounds "
            f"and train on; a fifth with an empty directory joins through peer 0. Every access link: "
            f"{link['rate_kbit_s']:.0f} kbit/s each way, {link['one_way_delay_ms']:.0f} ms, "
            f"{100 * link['loss']:.0f} % loss (measured, not computed).", "",
            f"Path: **{j.get('path', '—')}**"
            + (f" ({j['coefficient_bytes']:,} B of totals)" if j.get("coefficient_bytes") else "")
            + f"; joined after {_num(r['seconds_to_joined'])} s, **in sync after {_num(sync)} s** (its first round "
            f"done, with every record before it); all five end on one (digest, hash): "
            f"{'yes' if r['agree'] else '**no**'}. Target: in sync within {r['in_sync_target_s']:.0f} s — "
            f"{'met' if _lab_ok(r) else '**missed**'}.", ""]


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def claims(results: Results) -> list[Claim]:
    out: list[Claim] = []
    r = results.get("pool_catchup")
    if r and r["cases"]:
        for pool in sorted({c["pool"] for c in r["cases"]}):
            for k in sorted({c["samples"] for c in r["cases"] if c["pool"] == pool}):
                cs = sorted((c for c in r["cases"] if (c["pool"], c["samples"]) == (pool, k)),
                            key=lambda c: c["rounds_before"])
                if len(cs) < 2:
                    continue
                first, last = cs[0], cs[-1]
                out.append((f"seed pool {pool:,}, K = {k:,}: newcomer's download after {first['rounds_before']:,} "
                            f"and {last['rounds_before']:,} rounds",
                            f"{first['received_bytes']:,} B and {last['received_bytes']:,} B", "the same",
                            first["received_bytes"] == last["received_bytes"] and first["agree"] and last["agree"]))
        worst = max(r["cases"], key=lambda c: c["seconds_at_64kbit"])
        out.append((f"seed pool: newcomer's download at 64 kbit/s, worst case (P {worst['pool']:,}, K "
                    f"{worst['samples']:,}; computed from bytes)", f"{worst['seconds_at_64kbit']:.1f} s",
                    f"≤ {r['in_sync_target_s']:.0f} s", worst["seconds_at_64kbit"] <= r["in_sync_target_s"]))
    lab = results.get("newcomer_pool")
    if lab:
        out.append((f"seed pool {lab['seed_pool']:,}: a newcomer over a thin link after {lab['rounds_before']:,} rounds "
                    "(lab): seconds to in sync", f"{_num(lab['seconds_to_in_sync'])} s "
                    f"({lab['joined_by'].get('path', '—')})", f"≤ {lab['in_sync_target_s']:.0f} s", _lab_ok(lab)))
    acc = results.get("pool_accuracy")
    if acc and acc.get("complete"):
        for row in acc["table"].values():
            if "loss_points" in row:
                out.append((f"seed pool {row['pool']:,} on the demo ({acc['rounds']} rounds, {row['seeds']} seed{'s' * (row['seeds'] > 1)}): "
                            "points lost against unrestricted directions", f"{row['loss_points']:+.1f}",
                            f"≤ {MAX_LOSS_POINTS}", row["loss_points"] <= MAX_LOSS_POINTS))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("catchup", help="a newcomer's download after a long synthetic history")
    c.add_argument("--cases", default=DEFAULT_CASES, help="P:K:ROUNDS,... (pool, scalars per record, rounds)")
    c.add_argument("--resume", action="store_true", help="keep the cases already in --out")
    c.add_argument("--dry-run", action="store_true", help="list the cases to run")
    c.add_argument("--out", type=Path)
    s = sub.add_parser("accuracy", help="the demo at each pool size")
    s.add_argument("--pools", type=lambda v: [int(x) for x in v.split(",")], default=[1024, 4096, 16384, 0])
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--first-seed", type=int, default=0)
    s.add_argument("--rounds", type=int, default=0, help="0: the demo's (api.Defaults.rounds)")
    s.add_argument("--eval-size", type=int, default=-1, help="held-out examples (-1: all of them)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--resume", action="store_true", help="keep the runs already in --out; run the missing ones")
    s.add_argument("--dry-run", action="store_true", help="list the runs to do, run nothing")
    s.add_argument("--out", type=Path)
    m = sub.add_parser("llm", help="SmolLM2 (the LLM section's grad run) at each pool size")
    m.add_argument("--pools", type=lambda v: [int(x) for x in v.split(",")], default=list(LLM_POOLS))
    m.add_argument("--out", default=str(RESULTS / "llm_pool_{P}.json"), help="{P}: the pool size")
    a = ap.parse_args()
    {"catchup": catchup_main, "accuracy": accuracy_main, "llm": llm_main}[a.what](a)


SECTION = Section("pool", "bench.experiments.pool", render, claims=claims,
                  steps=(Step("pool_catchup", ("catchup", "--out", "{out}/pool_catchup.json"),
                              ("catchup", "--cases", "4096:4:100,4096:4:1000", "--out", "{out}/pool_catchup.json")),
                         Step("pool_accuracy", ("accuracy", "--resume", "--out", "{out}/pool_accuracy.json"), None,
                              timeout_min=600),
                         Step("pool_llm", ("llm", "--out", "{out}/llm_pool_{{P}}.json"), None, timeout_min=120)))

if __name__ == "__main__":
    main()
