"""Communication baselines, measured at each peer's network interface like the wire experiment.

    sudo python -m bench.experiments.comm [--quick] [--out bench/results/comm.json]

Two baselines beside onebyte's own wire cost (bench/results/wire.json), each peer in its own
network namespace of the lab (bench/lab/netns.py), bytes read from the peer's eth0 tx counter:

* ``json_http`` (bench/baselines/json_http.py): the traffic pattern of the method's first public
  implementation (github.com/ezelikman/justonebyte, ``app.py``): per round, one new TCP
  connection per request, notifications, three barriers and a ``GET /grads`` to every other peer.
* ``gloo_allreduce`` (bench/baselines/gloo.py): data-parallel first-order training: every step
  each rank all-reduces a float32 gradient of all of all-MiniLM-L6-v2's parameters.

Each namespace's link is set to ``gso_max_segs 1`` so the kernel hands the veth one frame per
TCP segment (MTU 1500) and the counter holds the headers a real Ethernet link would carry
(with GSO a 64 KB super-packet is counted with one set of headers). Framing every segment costs
the kernel far more CPU than the all-reduce itself, so the gloo steps are timed in a second lab
with the default GSO (its byte count is recorded too, ~4% lower).

``--quick`` takes under a minute, the full run about three (on 2 CPUs).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from statistics import median

from bench.baselines import gloo, json_http
from bench.lab.control import WAIT_S, run_window
from bench.lab.netns import Lab
from bench.output import RESULTS, WORK, save_result
from bench.sections import Results, Section, Step


def _lab(n: int, framed: bool = True) -> Lab:
    lab = Lab(n, prefix=f"cm{os.getpid() % 10000}")
    try:
        if framed:
            lab.frame_every_segment()
    except Exception:
        lab.close()
        raise
    return lab


def measure_http(peers: int, k: int, rounds: int, work: Path) -> dict:
    lab = _lab(peers)
    try:
        commands = [json_http.command(i, lab.ips, rounds, k) for i in range(peers)]
        tx, reports = run_window(lab, commands, work / "http", timeout=WAIT_S + 2 * rounds)
    finally:
        lab.close()
    per_peer = [t / rounds for t in tx]
    typical = [median(r["tx_per_round"]) for r in reports]
    body = [b for r in reports for b in r["grads_body_bytes"]]
    others = peers - 1
    return {
        "rounds": rounds,
        "pattern": {"per_round_per_peer": f"{others} x POST /notify, {3 * others} x POST /notify_finish "
                                          f"(3 barriers), {others} x GET /grads, and the {3 * others + others + others} "
                                          "answers to the other peers' requests; one TCP connection per request",
                    "every_16th_round": f"+1 barrier ({others} x POST /notify_finish)",
                    "every_64th_round": "+1 GET /hash to one random peer"},
        "grads_json_body_bytes_mean": sum(body) / len(body),
        "json_bytes_per_gradient": (sum(body) / len(body) - len('{"grads":[]}\n')) / k,
        "http_bytes_per_round_per_peer": [r["http_bytes_sent"] / rounds for r in reports],
        "wire_bytes_per_round_per_peer": per_peer,
        "wire_bytes_per_round_mean": sum(per_peer) / peers,
        "wire_bytes_per_round_median_round": typical,
        "seconds_per_round": sum(r["seconds"] for r in reports) / peers / rounds,
    }


def measure_gloo(peers: int, numel: int, steps: int, work: Path, framed: bool = True) -> dict:
    lab = _lab(peers, framed)
    try:
        commands = [gloo.command(i, peers, lab.ips[0], numel, steps) for i in range(peers)]
        tx, reports = run_window(lab, commands, work / "gloo", timeout=WAIT_S + 30 * steps)
    finally:
        lab.close()
    per_peer = [t / steps for t in tx]
    step_s = [max(r["step_seconds"][s] for r in reports) for s in range(steps)]
    grad_bytes = 4 * numel
    return {
        "steps": steps,
        "gradient_bytes": grad_bytes,
        "ring_allreduce_bytes_per_rank": 2 * (peers - 1) / peers * grad_bytes,
        "wire_bytes_per_step_per_peer": per_peer,
        "wire_bytes_per_step_mean": sum(per_peer) / peers,
        "seconds_per_step": step_s,
        "seconds_per_step_median": median(step_s),
    }


def payload_table(k: int) -> dict:
    """onebyte's exact sizes from its codec and record format, for K gradients per record."""
    from onebyte.codec import Codec, payload_size
    from onebyte.record import HEADER_SIZE, TAG_SIZE

    out = {}
    for codec in Codec:
        payload = payload_size(codec, k)
        out[codec.label] = {
            "payload_bytes_per_gradient": payload_size(codec, 8 * k) / (8 * k),
            "payload_bytes_per_round_per_peer": payload + (1 if codec is Codec.BYTE else 0),
            "record_bytes_per_round_per_peer": HEADER_SIZE + payload + TAG_SIZE,
        }
    out["_notes"] = (f"record = {HEADER_SIZE}-byte header (its last byte is the byte codec's shared exponent) "
                     f"+ payload + {TAG_SIZE}-byte authentication tag")
    return out


def run(quick: bool, peers: int = 4, k: int = 16) -> dict:
    work = WORK / "comm"
    rounds, framed_steps, timed_steps = (64, 1, 1) if quick else (256, 4, 10)
    t0 = time.monotonic()
    numel, tensors = gloo.minilm_parameters()
    http = measure_http(peers, k, rounds, work)
    # The same pattern with 8x the gradients per round: the slope is the cost of one more gradient.
    http_big = None if quick else measure_http(peers, 8 * k, rounds // 2, work)
    allreduce = measure_gloo(peers, numel, framed_steps, work)
    # One frame per segment costs the kernel far more CPU than GSO; time the steps with GSO on.
    timed = measure_gloo(peers, numel, timed_steps, work, framed=False)
    allreduce.update(model="all-MiniLM-L6-v2", parameters=numel, parameter_tensors=tensors,
                     seconds_per_step_framed=allreduce.pop("seconds_per_step"),
                     seconds_per_step=timed["seconds_per_step"],
                     seconds_per_step_median=timed["seconds_per_step_median"],
                     timed_steps=timed_steps,
                     wire_bytes_per_step_mean_gso=timed["wire_bytes_per_step_mean"])
    result = {
        "peers": peers,
        "samples_per_round": k,
        "onebyte_payload": payload_table(k),
        "json_http": http,
        "json_http_large_k": http_big and {"samples_per_round": 8 * k, **http_big},
        "gloo_allreduce": allreduce,
        "link": "veth in network namespaces, MTU 1500, gso_max_segs 1; bytes = eth0 tx_bytes",
        "gloo_timing_link": "same lab with the kernel's default GSO (64 KB super-packets), timings only",
        "seconds_total": time.monotonic() - t0,
    }
    wire = Results(RESULTS).get("wire")  # the full run's, in the quick run too
    if wire:
        ob = wire["wire_bytes_per_round_mean"]
        result["onebyte_wire_bytes_per_round_mean"] = ob
        result["ratio_json_http_to_onebyte"] = http["wire_bytes_per_round_mean"] / ob
        result["ratio_gloo_step_to_onebyte_round"] = allreduce["wire_bytes_per_step_mean"] / ob
    return result


# --------------------------------------------------------------------------------------------
# BENCHMARKS.md
# --------------------------------------------------------------------------------------------

def _kb(b: float) -> str:
    if b >= 1e6:
        return f"{b / 1e6:,.1f} MB"
    return f"{b / 1e3:,.1f} KB" if b >= 1e3 else f"{b:,.0f} B"


def render(results: Results) -> list[str]:
    """The "Communication" section of BENCHMARKS.md from comm.json (and wire.json if present)."""
    result, wire = results.get("comm"), results.get("wire")
    if not result:
        return []
    k, n = result["samples_per_round"], result["peers"]
    http, gloo, pay = result["json_http"], result["gloo_allreduce"], result["onebyte_payload"]
    lines = [
        "## Communication",
        "",
        f"{n} peers, K = {k} projected gradients per peer per round. Measured {result['date']} on "
        f"{result['machine']}; bytes are each peer's interface counter ({result['link']}).",
        "",
        "**What one round's gradients cost before any protocol** (exact sizes from `codec.py` and `record.py`):",
        "",
        "| codec | bytes per gradient | payload per round per peer | record per round per peer |",
        "|---|---|---|---|",
    ]
    for name in ("byte", "sign", "float32"):
        p = pay[name]
        lines.append(f"| `{name}` | {p['payload_bytes_per_gradient']:g} | {p['payload_bytes_per_round_per_peer']} B "
                     f"| {p['record_bytes_per_round_per_peer']} B |")
    lines.append(f"| JSON floats (first public implementation) | {http['json_bytes_per_gradient']:.1f} "
                 f"| {http['grads_json_body_bytes_mean']:.0f} B (`/grads` body) | — |")
    lines += [
        "",
        "**Measured on the wire, bytes sent per peer** (one onebyte round = one baseline round = K gradients "
        "per peer; a gloo step is one full first-order gradient per peer):",
        "",
        "| system | per round / step per peer | vs onebyte | time per round / step |",
        "|---|---|---|---|",
    ]
    ob = wire["wire_bytes_per_round_mean"] if wire else None
    ratio = (lambda b: f"{b / ob:,.{1 if b < 100 * ob else 0}f}×") if ob else (lambda b: "—")
    if wire:
        rps = wire.get("rounds_per_second")
        lines.append(f"| onebyte (hivemind DHT, byte codec; bench/experiments/wire.py) | {_kb(ob)} | 1× "
                     f"| {f'{1 / rps:.2f} s (includes compute)' if rps else '—'} |")
    lines.append(f"| JSON floats over HTTP, per-round barriers to every peer | {_kb(http['wire_bytes_per_round_mean'])} "
                 f"| {ratio(http['wire_bytes_per_round_mean'])} | {http['seconds_per_round'] * 1000:.0f} ms "
                 "(traffic only) |")
    lines.append(f"| gloo all-reduce of all {gloo['parameters'] / 1e6:.1f}M MiniLM gradients (float32) "
                 f"| {_kb(gloo['wire_bytes_per_step_mean'])} | {ratio(gloo['wire_bytes_per_step_mean'])} "
                 f"| {gloo['seconds_per_step_median']:.2f} s (veth, no link limit) |")
    lines += [
        "",
        f"The HTTP baseline replays, with no model, the requests that `app.py` of "
        f"[ezelikman/justonebyte](https://github.com/ezelikman/justonebyte) makes each round: "
        f"{http['pattern']['per_round_per_peer']}; {http['pattern']['every_16th_round']} every 16th round, "
        f"{http['pattern']['every_64th_round']} every 64th. Its K floats are only "
        f"{http['grads_json_body_bytes_mean']:.0f} bytes; the {2 * (n - 1) * 5} short TCP connections a peer takes "
        f"part in per round ({(n - 1) * 5} opened, {(n - 1) * 5} answered: handshake, HTTP headers, teardown) are most "
        "of the cost. onebyte's bytes are likewise mostly the "
        "DHT's framing, signatures and heartbeats rather than its "
        f"{pay['byte']['record_bytes_per_round_per_peer']}-byte record. Data-parallel first-order training "
        f"moves a ring all-reduce of the whole gradient, 2·(N−1)/N × {_kb(gloo['gradient_bytes'])} = "
        f"{_kb(gloo['ring_allreduce_bytes_per_rank'])} per rank per step before headers.",
        "",
        f"Reproduce: `sudo {result['command']}` (baselines) and `sudo python -m bench.experiments.wire` (onebyte), "
        "then `python -m bench.report`.",
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 HTTP rounds, 1 + 1 all-reduce steps (under a minute)")
    ap.add_argument("--out", type=Path, default=RESULTS / "comm.json")
    a = ap.parse_args()
    r = run(a.quick)
    save_result(r, a.out, "python -m bench.experiments.comm" + (" --quick" if a.quick else ""),
                f"{platform.machine()}, {os.cpu_count()} CPUs, loopback veth pairs in network namespaces")


SECTION = Section(
    "comm", "bench.experiments.comm", render,
    steps=(Step("comm", ("--out", "{out}/comm.json"), ("--quick", "--out", "{out}/comm.json"), needs_root=True),),
    after=("wire",),
)

if __name__ == "__main__":
    main()
