"""Scale (issue #31): what a site pays as the swarm grows, and a projection to 10,000 sites.

    python -m bench.experiments.scale sim [--peers 4 1000] [--rounds 10] [--out bench/results/scale_sim.json]
    python -m bench.experiments.scale apply [--peers 4 1000] [--rounds 9] [--out bench/results/scale_apply.json]
    sudo python -m bench.experiments.scale wire --peers N [--rounds 30] [--tag tree]
    python -m bench.experiments.scale churn --peers 32 [--rounds 60] [--out bench/results/scale_churn_32.json]

``sim``: the simulator (shared directions, tiny-gpt2, the run's defaults otherwise) with P virtual
peers for R rounds, each P in its own process: peak memory, wall-clock, and the apply path timed
apart (each round's records from the run's ledger applied to a fresh state, as a replica applies a
round) so the peers' gradient work does not hide it. ``apply``: the apply path alone, a round of
each size side by side in one process. ``wire``: real peers in network namespaces
(``bench.experiments.wire``: interface counters; join, steady state, leave), saved as
``scale_wire_{tag}_{N}.json``; ``tag mesh`` names runs of the code before the round's tree (a full
mesh at every size). ``churn``: real peers on loopback, a SIGKILL, a restart and a newcomer
(``bench.lab.churn``); every peer must end on one (set digest, state hash).

The report projects to 10,000 sites from the measured unit costs: bytes a site sends per round
(a line through the tree runs against the number of other peers), apply time per round (a line
through the simulator's), and what a newcomer downloads at 64 kbit/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.output import RESULTS, WORK, save_result
from bench.sections import Claim, Results, Section, Step, verdict

#: The sizes of the wire runs (K = 16, 30 rounds); 4 is a full mesh either way.
WIRE_PEERS = (4, 8, 16, 32)
#: Issue #31's budgets: bytes per peer per round at the largest swarm against 4 peers; apply time per
#: round at 1,000 virtual peers against 4; join + leave per peer at 4 peers.
BYTES_GROWTH_TARGET = 2.0
APPLY_GROWTH_TARGET = 1.5
JOIN_LEAVE_TARGET = 50_000
#: A thin link: 64 kbit/s is 8,000 bytes a second.
THIN_LINK_BPS = 8_000
PROJECT_TO = (100, 1_000, 10_000)


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------

def sim_one(peers: int, rounds: int) -> dict:
    """One simulation in this process: its wall-clock, peak memory, and each round's apply timed apart."""
    import resource

    import torch

    import onebyte
    from onebyte.config import TrainConfig
    from onebyte.ledger import read_ledger
    from onebyte.record import decode_record
    from onebyte.training import Setup
    from onebyte.update import apply_records

    torch.set_num_threads(1)
    spec = onebyte.RunSpec(run_id="scale", model="tiny-gpt2", task="vader", train=TrainConfig())
    with tempfile.TemporaryDirectory(prefix="onebyte-scale-") as tmp:
        t = time.perf_counter()
        s = onebyte.simulate(spec, out=Path(tmp) / "run", peers=peers, rounds=rounds, eval_size=0).summary
        wall = time.perf_counter() - t
        raw = read_ledger(Path(tmp) / "run" / "ledger.obl")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    recs = [decode_record(b) for b in raw]
    by_round: dict[int, list] = {}
    for rec in recs:
        by_round.setdefault(rec.round, []).append(rec)
    setup = Setup.build(spec)
    applies, fours = [], []
    for r in sorted(by_round):  # a round's records, then 4 of them: side by side, under the same load
        t = time.perf_counter()
        apply_records(setup.state, by_round[r], setup.train)
        applies.append(time.perf_counter() - t)
        t = time.perf_counter()
        apply_records(setup.state, by_round[r][:4], setup.train)
        fours.append(time.perf_counter() - t)
    return {"peers": peers, "rounds": rounds, "samples_per_round": s["samples_per_round"],
            "tuned_parameters": s["tuned_parameters"], "records": s["records"], "wall_seconds": wall,
            "swarm_seconds": s["swarm_seconds"], "peak_rss_bytes": rss,
            "ledger_bytes": sum(len(b) for b in raw), "record_bytes": statistics.fmean(len(b) for b in raw),
            "apply_seconds_per_round": applies, "apply_seconds_median": statistics.median(applies),
            "apply_four_seconds_median": statistics.median(fours),
            "state_hash": s["state_hash"], "set_digest": s["set_digest"]}


def apply_side_by_side(peers: list[int], repeats: int) -> dict:
    """A round of each size's records (the run's K, shared directions; synthetic scalars: the cost does
    not depend on their values) applied to tiny-gpt2's state, the sizes interleaved ``repeats`` times
    in this one process so they share the machine's load; the median per size. ``apply``:
    ``update.apply_records`` of the round; ``replica``: a fresh ``Replica.add`` of it, as the
    simulator hands a round over (no ledger), with copies of the records not yet hashed."""
    import dataclasses

    import numpy as np
    import torch

    import onebyte
    from onebyte.codec import Codec
    from onebyte.config import TrainConfig
    from onebyte.record import build_record
    from onebyte.replica import Replica
    from onebyte.training import Setup
    from onebyte.update import apply_records

    torch.set_num_threads(1)
    spec = onebyte.RunSpec(run_id="scale", model="tiny-gpt2", task="vader", train=TrainConfig())
    setup = Setup.build(spec)
    k, tag = setup.train.samples, setup.spec.run_tag
    rng = np.random.default_rng(0)
    rounds = {n: [build_record(Codec.BYTE, tag, 1, p, 0, rng.normal(size=k), p) for p in range(n)] for n in peers}
    # by the results' key prefix: wall-clock, and this process's CPU time (what a busy machine's load leaves out)
    times: dict[str, dict[int, list[float]]] = {w: {n: [] for n in peers} for w in ("", "cpu_", "replica_", "replica_cpu_")}

    def timed(prefix: str, n: int, fn) -> None:
        t, c = time.perf_counter(), time.process_time()
        fn()
        times[prefix][n].append(time.perf_counter() - t)
        times[prefix + "cpu_"][n].append(time.process_time() - c)

    for _ in range(repeats):
        for n in peers:
            timed("", n, lambda n=n: apply_records(setup.state, rounds[n], setup.train))
            fresh, rep = [dataclasses.replace(r) for r in rounds[n]], Replica(setup.state, setup.train, tag)
            timed("replica_", n, lambda fresh=fresh, rep=rep: rep.add(fresh))
    return {"samples_per_round": k, "tuned_parameters": setup.state.numel, "repeats": repeats,
            "rows": [{"peers": n, **{f"{w}seconds": times[w][n] for w in times},
                      **{f"{w}median_s": statistics.median(times[w][n]) for w in times}} for n in peers]}


def sim(peers: list[int], rounds: int) -> dict:
    """``sim_one`` for each size, each in a fresh process (its own peak memory)."""
    rows = []
    for p in peers:
        out = subprocess.run([sys.executable, "-m", "bench.experiments.scale", "sim-one", str(p), str(rounds)],
                             check=True, capture_output=True, text=True, timeout=7200)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mem = _memory_bytes()
    return {"rows": rows, "machine_memory_bytes": mem}


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def _wire(results: Results, tag: str) -> list[dict]:
    return [r for n in WIRE_PEERS if (r := results.get(f"scale_wire_{tag}_{n}"))]


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def _median(xs: list) -> float:
    return statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else float("nan")


def _wire_lines(mesh: list[dict], tree: list[dict]) -> list[str]:
    by_n = {r["peers"]: r for r in mesh}
    out = ["### Bytes per peer per round, joining and leaving, as the swarm grows", "",
           "Real peers (tiny-gpt2, K = 16, `byte`, 30 rounds), each in its own network namespace, every peer "
           "starting together; bytes are each interface's tx counter: the steady state as the slope against rounds "
           "completed, *join* from launch to the peer's first completed round (start-up, the DHT, meeting the "
           "others, waiting for the quorum, round 0), *leave* from its last round to its exit (the drain). "
           "`sudo python -m bench.experiments.scale wire --peers N` (the round's tree, this code); *before* rows: the "
           "same measurement (`bench.experiments.wire`) run on the library as of commit 4f287c2, before the tree "
           "(every record pushed to every live peer; a draining peer walked the DHT every heartbeat interval).", "",
           "| peers | dissemination | bytes / peer / round | min – max | floor: records received | join (median) | "
           "leave (median) | rounds / s | one (digest, hash) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(mesh + tree, key=lambda r: (r["peers"], r in tree)):
        kind = "full mesh" if r in mesh or r["peers"] <= 7 else "tree (D = 6)"
        per = r["wire_bytes_per_round_per_peer"]
        floor = r["record_bytes_per_round_per_peer"] * (r["peers"] - 1)
        out.append(f"| {r['peers']} | {kind}{' (before)' if r in mesh else ''} | **{r['wire_bytes_per_round_mean']:,.0f}** | "
                   f"{min(per):,.0f} – {max(per):,.0f} | {floor:,} | {_median(r['join_bytes_per_peer']):,.0f} | "
                   f"{_median(r['leave_bytes_per_peer']):,.0f} | {r['rounds_per_second']:.2f} | {r['agree']} |")
    if tree:
        base = next((r for r in tree if r["peers"] == 4), None) or by_n.get(4) or tree[0]
        top = tree[-1]
        out += ["", f"From {base['peers']} to {top['peers']} peers the bytes a peer sends per round grow "
                f"{top['wire_bytes_per_round_mean'] / base['wire_bytes_per_round_mean']:.1f}× (target ≤ "
                f"{BYTES_GROWTH_TARGET:g}×); joining and leaving together cost a 4-peer peer "
                f"{(_median(base['join_bytes_per_peer']) + _median(base['leave_bytes_per_peer'])) / 1e3:,.0f} KB "
                f"(target ≤ {JOIN_LEAVE_TARGET / 1e3:,.0f} KB)" + "".join(
                    f"; at {n} peers the tree sends {t['wire_bytes_per_round_mean'] / by_n[n]['wire_bytes_per_round_mean']:.2f}× "
                    "what the full mesh sent" for t in tree if (n := t["peers"]) in by_n and n > 7) + ". "
                "What the tree bounds is the fan-out: an author sends its record to at most 6 neighbours and a relay "
                "coalesces what it passes on to one neighbour, so the framings per round no longer grow with n. What "
                "no dissemination of signed records can bound is what a peer must receive: the n − 1 records of the "
                "others (the floor column); on average a peer also sends that much. At K = 16 a record is "
                f"{top['record_bytes_per_round_per_peer']} bytes, so at {top['peers']} peers the floor alone is "
                f"{top['record_bytes_per_round_per_peer'] * (top['peers'] - 1) / base['wire_bytes_per_round_mean']:.1f}× "
                f"the whole of what a 4-peer peer sends: the {BYTES_GROWTH_TARGET:g}× budget cannot be met by any "
                "fan-out; only records merged on the way (aggregation, which per-record authenticity forbids "
                "today) or fewer scalars per site could meet it.", "",
                "Where joining and leaving spend (each peer's interface counter sampled beside its log, hivemind's "
                "RPCs counted by verb and size): most of a join is start-up below onebyte, paid while the model "
                "loads: the p2p daemon's connections to the others (noise or TLS, yamux, identify), the libp2p "
                "Kademlia table it keeps in server mode (its bootstrap walks and refreshes) and hivemind's DHT "
                "bootstrap; a bare hivemind DHT of 4 nodes, without onebyte, sends about as much per node. The rest "
                "was onebyte's own DHT walks of its heartbeat key, each fetching every peer's RSA-signed heartbeat "
                "from every node it asks, and a drain that synced record ids (8 bytes per record of the run) with "
                "peers whose heartbeats only looked behind. Now a newcomer that its join peer met (MEET) leaves the "
                "DHT alone until its first heartbeat exchange (its greeting and its start would fetch the view "
                "MEET gave it; the exchange stores its heartbeat there, for swarms that merge later), a peer alone "
                "reads the DHT at a doubling interval while it looks for "
                "others, and the quorum's heartbeat goes to the waiting peers directly. The drain still syncs and "
                "walks the DHT from its start: a drain that waited for them let a restarted peer's swarm end on "
                "two sets (the sixteen-peer churn test).", ""]
    return out


def _apply_ratio(rows: list[dict]) -> tuple[float, str]:
    """Apply per round at the largest size against 4 peers: against 4 of its own records per round
    timed beside it in the same process when measured (the same load), else the 4-peer run's."""
    hi = rows[-1]
    if hi.get("apply_four_seconds_median"):
        return hi["apply_seconds_median"] / hi["apply_four_seconds_median"], "4 of its records, timed beside each round"
    return hi["apply_seconds_median"] / rows[0]["apply_seconds_median"], f"the {rows[0]['peers']}-peer run"


def _apply_measure(r: dict, prefix: str = "") -> str:
    """The key the apply claim reads: CPU time where measured (a busy machine's load stretches the
    wall-clock of the two sizes unequally; one thread's work is what the claim is about), else wall-clock."""
    return f"{prefix}cpu_median_s" if all(f"{prefix}cpu_median_s" in x for x in r["rows"]) else f"{prefix}median_s"


def _apply_lines(r: dict) -> list[str]:
    rows = r["rows"]
    lo, hi = rows[0], rows[-1]
    key, rkey = _apply_measure(r), _apply_measure(r, "replica_")
    ratio = hi[key] / lo[key]
    per = (hi[key] - lo[key]) / (hi["peers"] - lo["peers"])
    cols = [c for c in ("median_s", "cpu_median_s", "replica_median_s", "replica_cpu_median_s") if c in hi]
    names = {"median_s": "apply, wall (ms)", "cpu_median_s": "apply, CPU (ms)", "replica_median_s": "replica, wall (ms)",
             "replica_cpu_median_s": "replica, CPU (ms)"}
    out = [f"The apply path alone, the sizes side by side in one process (`{r['command']}`, {r['date']}): a round "
           f"of n records at K = {r['samples_per_round']:,} (shared directions, synthetic scalars) applied to "
           f"tiny-gpt2's {r['tuned_parameters']:,} tuned biases, median of {r['repeats']}. *apply* is "
           "`update.apply_records` of the round (replay's path, and the claim's)"
           + ("; *replica* is a fresh `Replica.add` of it, as the simulator hands a round over (admission, the set "
              "digest and the slots' bookkeeping too; no ledger), with records not yet hashed" if rkey in hi else "")
           + (". CPU is this process's CPU time, which the claim reads (on a shared machine the load stretches "
              "the wall-clock of the sizes unequally)." if key.startswith("cpu") else "."), "",
           "| records in the round | " + " | ".join(names[c] for c in cols) + " |", "|---|" + "---|" * len(cols),
           *[f"| {x['peers']:,} | " + " | ".join(f"{x[c] * 1e3:.1f}" for c in cols) + " |" for x in rows], "",
           f"{hi['peers']:,} records cost {ratio:.2f}× what {lo['peers']} do (target ≤ {APPLY_GROWTH_TARGET:g}×): "
           f"{verdict(ratio <= APPLY_GROWTH_TARGET)}"]
    if rkey in hi:
        rr = hi[rkey] / lo[rkey]
        rper = (hi[rkey] - lo[rkey]) / (hi["peers"] - lo["peers"])
        out[-1] += (f"; through the replica {rr:.2f}× ({rper * 1e6:.0f} µs a record, of which the apply's "
                    f"{per * 1e6:.0f}: the rest is the replica's admission and bookkeeping per record)")
    out[-1] += (". Summed per scalar in Python, 1,000 records took 5.4 s a round (the simulator run above); with "
                "the round's steps stacked as float64 (a decode per record, five float passes over n × K), 2.0× "
                "(63.9 against 32.1 ms, commit 3bfee46). Now a round of `byte` records decodes into one int8 array "
                "and its coefficients come from a table per (exponent, code), made with the definition's float64 "
                f"operations: what grows with n is a gather and a sum over n × K bytes, {per * 1e6:.1f} µs a record "
                "here; what does not is seeding and expanding the round's K directions.")
    return out + [""]


def _sim_lines(r: dict) -> list[str]:
    rows = r["rows"]
    mem = r.get("machine_memory_bytes")
    out = ["### The simulator at 1,000 virtual peers", "",
           f"`{r['command']}` ({r['date']}, {r['machine']}): tiny-gpt2, K = {rows[0]['samples_per_round']:,} shared "
           f"directions (the run's defaults: `grad`, step mean, {rows[0]['tuned_parameters']:,} tuned biases), "
           f"{rows[0]['rounds']} rounds, each size in its own process. *Apply* is each round's records from the "
           "run's ledger applied to a fresh state, timed apart from the peers' gradient work (the simulator measures "
           "every virtual peer's gradient in turn, which is what makes a 1,000-peer run long).", "",
           "| virtual peers | records | peak memory (MiB) | wall-clock (s) | apply per round, median (ms) | "
           "record bytes | ledger per round |", "|---|---|---|---|---|---|---|"]
    for x in rows:
        out.append(f"| {x['peers']:,} | {x['records']:,} | {x['peak_rss_bytes'] / 2**20:,.0f} | {x['wall_seconds']:,.0f} | "
                   f"{x['apply_seconds_median'] * 1e3:.1f} | {x['record_bytes']:,.0f} | "
                   f"{x['ledger_bytes'] / x['rounds'] / 1024:,.0f} KiB |")
    hi = rows[-1]
    ratio, against = _apply_ratio(rows)
    four = f" (4 of its records a round, timed beside: {hi['apply_four_seconds_median'] * 1e3:.1f} ms)" \
        if hi.get("apply_four_seconds_median") else ""
    when = "" if four else ("; measured on the code before `update.plan` was vectorised: the apply path of this "
                            "code is timed below")
    out += ["", f"Apply per round in this run at {hi['peers']:,} peers{four} is {ratio:.2f}× that of 4 peers ({against}"
            f"{when}). Peak memory "
            f"{hi['peak_rss_bytes'] / 2**20:,.0f} MiB" + (f" of this machine's {mem / 2**30:.0f} GiB" if mem else "")
            + ". With shared directions a round costs K expansions whatever the number of peers; what grows with "
            "the peers is decoding and summing their records' scalars per direction.", ""]
    return out


def projection(results: Results) -> dict | None:
    """Unit costs from the measured runs, extended to larger swarms (lines through the measurements)."""
    tree = [r for r in _wire(results, "tree") if r["peers"] > 7] or _wire(results, "tree")
    simr = results.get("scale_sim")
    if len(tree) < 2 or not simr:
        return None
    a, b = _fit([r["peers"] - 1 for r in tree], [r["wire_bytes_per_round_mean"] for r in tree])
    rows = simr["rows"]
    applied = results.get("scale_apply")
    if applied:  # this code's apply path
        aa, ab = _fit([x["peers"] for x in applied["rows"]], [x[_apply_measure(applied)] for x in applied["rows"]])
    else:
        aa, ab = _fit([x["peers"] for x in rows], [x["apply_seconds_median"] for x in rows])
    big = rows[-1]
    rec16, rec_k = tree[-1]["record_bytes_per_round_per_peer"], big["record_bytes"]
    snapshot = 4 * big["tuned_parameters"]  # the accumulators a newcomer downloads: 4 bytes per tuned weight
    out = []
    for n in PROJECT_TO:
        sent = a + b * (n - 1)
        out.append({"sites": n, "bytes_per_round_k16": sent, "receive_floor_k16": rec16 * (n - 1),
                    "receive_floor_k": rec_k * (n - 1), "apply_seconds": aa + ab * n,
                    "round_seconds_64k_k16": sent / THIN_LINK_BPS,
                    "catch_up_seconds_64k": (snapshot + rec_k * n) / THIN_LINK_BPS})
    return {"bytes_fit": (a, b), "apply_fit": (aa, ab), "k": big["samples_per_round"], "record_k": rec_k,
            "record_16": rec16, "snapshot_bytes": snapshot, "rows": out}


def _projection_lines(p: dict) -> list[str]:
    a, b = p["bytes_fit"]
    aa, ab = p["apply_fit"]
    out = ["### Projection to 10,000 sites", "",
           f"From the measured unit costs: bytes a site sends per round = {a:,.0f} + {b:,.0f} × (n − 1) (a line "
           f"through the tree runs above, K = 16); apply per round = {aa * 1e3:.1f} ms + {ab * 1e6:.2f} µs × n "
           f"(through the apply timings above, K = {p['k']:,}); a newcomer downloads the state ({p['snapshot_bytes']:,} bytes: "
           f"4 per tuned weight) and the round in flight (n records of {p['record_k']:,.0f} bytes at K = {p['k']:,}); "
           f"a 64 kbit/s line moves {THIN_LINK_BPS:,} bytes a second. Lines through 8–32 peers extended a "
           "hundredfold are an estimate, not a measurement; and the 32-peer run shared 2 cores among 32 peers "
           "(0.2 rounds/s), so what is paid per second (heartbeats, DHT) landed on few rounds: the slope is "
           "pessimistic for machines of their own.", "",
           "| sites | sent / site / round, K = 16 | received floor, K = 16 | received floor, K = "
           f"{p['k']:,} | one round's sending at 64 kbit/s, K = 16 | apply / round | catch-up at 64 kbit/s |",
           "|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        out.append(f"| {r['sites']:,} | {r['bytes_per_round_k16'] / 1e3:,.0f} KB | {r['receive_floor_k16'] / 1e3:,.0f} KB | "
                   f"{r['receive_floor_k'] / 1e6:,.1f} MB | {r['round_seconds_64k_k16']:,.0f} s | "
                   f"{r['apply_seconds'] * 1e3:,.0f} ms | {r['catch_up_seconds_64k']:,.0f} s |")
    last = p["rows"][-1]
    out += ["", f"At {last['sites']:,} sites a thin-link site cannot keep up with a round of individually signed "
            f"records: it must receive {last['receive_floor_k16'] / 1e3:,.0f} KB a round at K = 16 "
            f"({last['receive_floor_k16'] / THIN_LINK_BPS:,.0f} s of a 64 kbit/s line) whatever the fan-out. Apply stays "
            "cheap (shared directions). What would bound a site's bytes is merging records on the way (a relay "
            "summing the codes of one direction; that needs an aggregate a relay cannot forge) or a swarm in "
            "which each site contributes fewer scalars per round.", ""]
    return out


def render(results: Results) -> list[str]:
    mesh, tree, simr, churn = (_wire(results, "mesh"), _wire(results, "tree"), results.get("scale_sim"),
                               results.get("scale_churn_32") or results.get("scale_churn_16"))
    if not (mesh or tree or simr):
        return []
    out = ["## Scale: the round's tree, 1,000 virtual peers, and a projection to 10,000 sites", ""]
    if mesh or tree:
        out += _wire_lines(mesh, tree)
    if churn:
        pairs = {(p["set_digest"], p["state_hash"]) for p in churn["peers"]}
        out += [f"`{churn['command']}` ({churn['date']}): {churn['peers_started']} peer processes on loopback, the "
                f"first {churn['peers_started'] - 1} together, one SIGKILLed after round {churn['killed_after_round']}, "
                "a newcomer mid-run, the killed one restarted from its directory: "
                f"{len(churn['peers'])} peers at the end, {len(pairs)} distinct (digest, hash).", ""]
    if simr:
        out += _sim_lines(simr)
    if applied := results.get("scale_apply"):
        out += _apply_lines(applied)
    if p := projection(results):
        out += _projection_lines(p)
    return out


def claims(results: Results) -> list[Claim]:
    out: list[Claim] = []
    tree, mesh = _wire(results, "tree"), _wire(results, "mesh")
    base = next((r for r in tree + mesh if r["peers"] == 4), None)  # this code's, where measured
    if tree and base and tree[-1]["peers"] > 4:
        top = tree[-1]
        g = top["wire_bytes_per_round_mean"] / base["wire_bytes_per_round_mean"]
        out.append((f"bytes per peer per round, {top['peers']} peers against 4 (K = 16, interface counters)",
                    f"{g:.1f}×", f"≤ {BYTES_GROWTH_TARGET:g}×", g <= BYTES_GROWTH_TARGET))
    if base:
        jl = _median(base["join_bytes_per_peer"]) + _median(base["leave_bytes_per_peer"])
        out.append(("join + leave bytes per peer, 4 peers (median)", f"{jl / 1e3:,.0f} KB",
                    f"≤ {JOIN_LEAVE_TARGET / 1e3:,.0f} KB", jl <= JOIN_LEAVE_TARGET))
    churn = results.get("scale_churn_32") or results.get("scale_churn_16")
    if churn:
        out.append((f"{churn['peers_started']} real peers with a SIGKILL, a restart and a newcomer end on one "
                    "(digest, hash)", str(churn["agree"]), "True", bool(churn["agree"])))
    if applied := results.get("scale_apply"):
        lo, hi = applied["rows"][0], applied["rows"][-1]
        ratio = hi[_apply_measure(applied)] / lo[_apply_measure(applied)]
        out.append((f"apply per round, {hi['peers']:,} peers' records against {lo['peers']} (K = "
                    f"{applied['samples_per_round']:,}, shared directions, side by side"
                    f"{', CPU time' if _apply_measure(applied).startswith('cpu') else ''})", f"{ratio:.2f}×",
                    f"≤ {APPLY_GROWTH_TARGET:g}×", ratio <= APPLY_GROWTH_TARGET))
    if simr := results.get("scale_sim"):
        hi = simr["rows"][-1]
        mem = simr.get("machine_memory_bytes")
        if mem:
            out.append((f"{hi['peers']:,}-virtual-peer simulation fits in memory (peak)",
                        f"{hi['peak_rss_bytes'] / 2**20:,.0f} MiB", f"< {mem / 2**30:.0f} GiB", hi["peak_rss_bytes"] < mem))
    return out


# --------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["sim", "sim-one", "apply", "wire", "churn"])
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)  # sim-one: PEERS ROUNDS
    ap.add_argument("--peers", type=int, nargs="+")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--tag", default="tree", help="wire: the results' name, scale_wire_TAG_N.json")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    machine = f"{platform.machine()}, 2 cores"
    if a.what == "sim-one":
        print(json.dumps(sim_one(int(a.args[0]), int(a.args[1]))))
        return
    if a.what == "apply":
        peers = a.peers or [4, 1000]
        r = apply_side_by_side(peers, a.rounds or 9)
        save_result(r, a.out or RESULTS / "scale_apply.json", "python -m bench.experiments.scale apply --peers "
                    f"{' '.join(map(str, peers))} --rounds {a.rounds or 9}", machine)
        return
    if a.what == "sim":
        peers, rounds = a.peers or [4, 1000], a.rounds or 10
        r = sim(peers, rounds)
        save_result(r, a.out or RESULTS / "scale_sim.json", f"python -m bench.experiments.scale sim --peers "
                    f"{' '.join(map(str, peers))} --rounds {rounds}", machine)
        return
    if a.what == "wire":
        from bench.experiments.wire import measure

        n, rounds = (a.peers or [16])[0], a.rounds or 30
        shutil.rmtree(WORK / f"scale_wire_{n}", ignore_errors=True)  # peers would resume from an earlier run's ledgers
        r = measure(n, 16, rounds, WORK / f"scale_wire_{n}")
        save_result(r, a.out or RESULTS / f"scale_wire_{a.tag}_{n}.json",
                    f"python -m bench.experiments.scale wire --peers {n} --rounds {rounds}",
                    machine + ", veth pairs in network namespaces")
        return
    from bench.lab.churn import run_churn

    n, rounds = (a.peers or [32])[0], a.rounds or 60
    work = WORK / f"scale_churn_{n}"  # kept: each peer's log and summary
    shutil.rmtree(work, ignore_errors=True)
    r = run_churn(work, rounds, n)
    save_result(r, a.out or RESULTS / f"scale_churn_{n}.json",
                f"python -m bench.experiments.scale churn --peers {n} --rounds {rounds}", machine + ", loopback")


SECTION = Section(
    "scale", "bench.experiments.scale", render, claims=claims,
    steps=(Step("scale-sim", ("sim", "--out", "{out}/scale_sim.json"),
                ("sim", "--peers", "4", "100", "--rounds", "2", "--out", "{out}/scale_sim.json"), timeout_min=120),
           Step("scale-churn", ("churn", "--peers", "32", "--out", "{out}/scale_churn_32.json"), None, timeout_min=90),
           *(Step(f"scale-wire-{n}", ("wire", "--peers", str(n), "--out", f"{{out}}/scale_wire_tree_{n}.json"), None,
                  needs_root=True) for n in WIRE_PEERS)),
)

if __name__ == "__main__":
    main()
