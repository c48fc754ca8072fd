"""Communication baselines, measured at each peer's network interface like bench/wire.py.

    sudo python bench/comm.py [--quick] [--out bench/results/comm.json]

Two baselines beside onebyte's own wire cost (bench/results/wire.json), each peer in its own
network namespace of the lab in bench/netlab.py, bytes read from the peer's eth0 tx counter:

* ``json_http``: the traffic pattern of the method's first public implementation
  (github.com/ezelikman/justonebyte, ``app.py``, Flask server + ``requests`` client). Per
  round every peer, one new TCP connection per request and one request after the other:
  ``POST /notify`` to every other peer (its address and start timestamp: the timestamp is what
  its perturbation seeds are derived from), a barrier ``POST /notify_finish`` to every other
  peer after the forward passes, ``GET /grads`` from every other peer (the answer is
  ``{"grads": [K floats]}`` as JSON), barriers after applying and at the end of the round; every
  16th round one more barrier (the backup restore) and every 64th a ``GET /hash`` from one
  random peer. Request and response bytes copy ``requests`` 2.31 and Flask 2.3 / Werkzeug 2.3
  (headers, JSON separators, the trailing newline, ``Connection: close``). No model is run;
  the K floats are float32 values as ``tensor.item()`` gives them.
* ``gloo_allreduce``: data-parallel first-order training: every step each rank all-reduces a
  float32 gradient of all of all-MiniLM-L6-v2's parameters with ``torch.distributed`` (gloo,
  one flat tensor, 4 ranks, one per namespace, MASTER_ADDR = rank 0's address).

Each namespace's link is set to ``gso_max_segs 1`` so the kernel hands the veth one frame per
TCP segment (MTU 1500) and the counter holds the headers a real Ethernet link would carry
(with GSO a 64 KB super-packet is counted with one set of headers). Framing every segment costs
the kernel far more CPU than the all-reduce itself, so the gloo steps are timed in a second lab
with the default GSO (its byte count is recorded too, ~4% lower).

``--quick`` takes under a minute, the full run about three (on 2 CPUs).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Lab, save_result, sh  # noqa: E402

ROOT = Path(__file__).resolve().parent
PORT = 7000
GLOO_PORT = 29517
WAIT_S = 120.0  # every wait on a peer or a file is bounded by this

# What the first public implementation's libraries put on the wire (mid-2023 versions).
USER_AGENT = "python-requests/2.31.0"
SERVER = "Werkzeug/2.3.7 Python/3.10.12"
BACKUP_INTERVAL = 16  # app.py: a "finish restoring weights" barrier when (round + 1) % 16 == 0
HASH_INTERVAL = 64  # app.py: GET /hash from one random peer when (round + 1) % 64 == 0


def _wait_for(pred, what: str, timeout: float = WAIT_S, poll: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def _own_tx_bytes() -> int:
    """This namespace's eth0 counter (``ip netns exec`` mounts the namespace's sysfs)."""
    return int(Path("/sys/class/net/eth0/statistics/tx_bytes").read_text())


# --------------------------------------------------------------------------------------------
# Baseline 1: JSON floats over HTTP, the pattern of ezelikman/justonebyte app.py
# --------------------------------------------------------------------------------------------

def _flask_json(obj: object) -> bytes:
    """Flask 2.3 ``jsonify``: sorted keys, compact separators, a trailing newline."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _requests_json(obj: object) -> bytes:
    """``requests.post(url, json=obj)``: default separators, insertion order."""
    return json.dumps(obj, allow_nan=False).encode()


class _HttpPeerState:
    """What one peer's Flask routes read and write (app.py's ``Machine`` attributes)."""

    def __init__(self, me: str, others: list[str], timestamp: float):
        self.me = me
        self.others = others
        self.timestamps = {me: timestamp}
        self.projected_grads: list[float] = []
        self.total_iterations = 0
        self.num_finish: dict[str, set[str]] = {}
        self.cond = threading.Condition()
        self.http_bytes_sent = 0  # requests + responses, HTTP level
        self.http_lock = threading.Lock()

    def count(self, n: int) -> None:
        with self.http_lock:
            self.http_bytes_sent += n


def _handler(state: _HttpPeerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _reply(self, obj: object) -> None:
            body = _flask_json(obj)
            head = (f"HTTP/1.1 200 OK\r\nServer: {SERVER}\r\nDate: {formatdate(usegmt=True)}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            # Werkzeug flushes the headers, then writes the body: two sends.
            self.wfile.write(head)
            self.wfile.write(body)
            self.close_connection = True
            state.count(len(head) + len(body))

        def _json_body(self) -> dict:
            n = int(self.headers.get("Content-Length", "0"))
            if not 0 <= n <= 65536:
                raise ValueError("request body too large")
            return json.loads(self.rfile.read(n) or b"{}")

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/grads":
                with state.cond:
                    grads = list(state.projected_grads)
                self._reply({"grads": grads})
            elif self.path == "/hash":
                self._reply({"hash": hashlib.md5(repr(state.total_iterations).encode()).hexdigest()})
            else:
                self.send_error(404)

        def do_POST(self) -> None:  # noqa: N802
            msg = self._json_body()
            if self.path == "/notify":
                with state.cond:
                    state.timestamps.setdefault(msg["address"], msg["timestamp"])
                    reply = {"all_addresses": state.others, "timestamps": dict(state.timestamps),
                             "end_time": None, "learning_rate": 0.1,
                             "total_iterations": state.total_iterations}
                self._reply(reply)
            elif self.path == "/notify_finish":
                with state.cond:
                    done = state.num_finish.setdefault(msg["description"], set())
                    done.add(msg["address"])
                    n = len(done)
                    state.cond.notify_all()
                self._reply({"num_finish": n})
            else:
                self.send_error(404)

    return Handler


def _http_call(state: _HttpPeerState, url: str, method: str, path: str, obj: object | None = None) -> dict:
    """One ``requests.get``/``requests.post`` without a session: a fresh TCP connection."""
    host = url.removeprefix("http://")
    ip, port = host.split(":")
    body = b"" if obj is None else _requests_json(obj)
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n")
    if obj is not None:
        head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    data = (head + "\r\n").encode() + body  # http.client sends headers and a bytes body at once
    with socket.create_connection((ip, int(port)), timeout=30) as s:
        s.sendall(data)
        chunks = []
        for _ in range(10_000):  # the server closes after one response
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    state.count(len(data))
    raw = b"".join(chunks)
    _, _, payload = raw.partition(b"\r\n\r\n")
    if not raw.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{method} {url}{path} failed: {raw[:80]!r}")
    return json.loads(payload)


def _sync(state: _HttpPeerState, description: str) -> None:
    """app.py ``sync``: POST /notify_finish to every other peer, then wait for all of theirs."""
    for url in state.others:
        _http_call(state, url, "POST", "/notify_finish", {"address": state.me, "description": description})
    with state.cond:
        ok = state.cond.wait_for(lambda: len(state.num_finish.get(description, ())) >= len(state.others),
                                 timeout=WAIT_S)
        if not ok:
            raise TimeoutError(f"barrier {description!r} timed out")
        state.num_finish[description] = set()


def http_peer(index: int, ips: list[str], rounds: int, k: int, ctl: Path) -> None:
    """One peer of the JSON-over-HTTP baseline (run inside its namespace)."""
    urls = [f"http://{ip}:{PORT}" for ip in ips]
    state = _HttpPeerState(urls[index], [u for i, u in enumerate(urls) if i != index], time.time())
    server = ThreadingHTTPServer(("0.0.0.0", PORT), _handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (ctl / f"ready-{index}").touch()
    _wait_for((ctl / "go").exists, "go")
    rng = random.Random(index)
    import numpy as np

    tx = [_own_tx_bytes()]
    t0 = time.monotonic()
    body_bytes = []
    for r in range(rounds):
        # announce_existence(): POST /notify to every known peer, every round
        for url in state.others:
            reply = _http_call(state, url, "POST", "/notify", {"address": state.me,
                                                               "timestamp": state.timestamps[state.me]})
            state.timestamps.update(reply["timestamps"])
        # update_weights(): K projected gradients, float32 tensors turned into Python floats
        with state.cond:
            state.projected_grads = [float(np.float32(rng.gauss(0.0, 1.0))) for _ in range(k)]
        body_bytes.append(len(_flask_json({"grads": state.projected_grads})))
        _sync(state, "finish forward pass")
        if (r + 1) % BACKUP_INTERVAL == 0:
            _sync(state, "finish restoring weights")
        for url in state.others:  # request_grads_from_all_machines()
            _http_call(state, url, "GET", "/grads")
        _sync(state, "finish applying gradients")
        if (r + 1) % HASH_INTERVAL == 0:
            _http_call(state, rng.choice(state.others), "GET", "/hash")
        with state.cond:
            state.total_iterations += 1
        _sync(state, "finish round")
        tx.append(_own_tx_bytes())
    seconds = time.monotonic() - t0
    result = {"seconds": seconds, "tx_per_round": [b - a for a, b in itertools.pairwise(tx)],
              "http_bytes_sent": state.http_bytes_sent, "grads_body_bytes": body_bytes}
    (ctl / f"done-{index}.json").write_text(json.dumps(result))
    _wait_for((ctl / "exit").exists, "exit", poll=0.1)  # keep serving until everyone has read
    server.shutdown()


# --------------------------------------------------------------------------------------------
# Baseline 2: gloo all-reduce of a full MiniLM gradient
# --------------------------------------------------------------------------------------------

def gloo_rank(rank: int, world: int, master: str, numel: int, steps: int, ctl: Path) -> None:
    """One data-parallel rank: all-reduce a float32 gradient of ``numel`` elements per step."""
    os.environ.update(MASTER_ADDR=master, MASTER_PORT=str(GLOO_PORT), GLOO_SOCKET_IFNAME="eth0")
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=WAIT_S))
    grad = torch.randn(numel, dtype=torch.float32)
    dist.all_reduce(grad)  # warm-up: connections and buffers are set up outside the window
    dist.barrier()
    (ctl / f"ready-{rank}").touch()
    _wait_for((ctl / "go").exists, "go")
    dist.barrier()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        dist.all_reduce(grad)
        times.append(time.perf_counter() - t)
    (ctl / f"done-{rank}.json").write_text(json.dumps({"step_seconds": times}))
    _wait_for((ctl / "exit").exists, "exit", poll=0.1)
    dist.destroy_process_group()


def minilm_parameters() -> tuple[int, int]:
    """(parameter count, tensor count) of all-MiniLM-L6-v2 as onebyte loads it."""
    from onebyte.models import load_model

    model = load_model("minilm").model
    params = list(model.parameters())
    return sum(p.numel() for p in params), len(params)


# --------------------------------------------------------------------------------------------
# The orchestrator
# --------------------------------------------------------------------------------------------

def _run_peers(lab: Lab, role_args: list[list[str]], ctl: Path, timeout: float) -> tuple[list[int], list[dict]]:
    """Start one process per namespace, open the window, return (tx bytes per peer, reports)."""
    ctl.mkdir(parents=True, exist_ok=True)
    for f in ctl.iterdir():
        f.unlink()
    n = len(role_args)
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for i, args in enumerate(role_args):
            log = open(ctl / f"log-{i}.txt", "wb")
            logs.append(log)
            cmd = lab.wrap(i, [sys.executable, str(Path(__file__).resolve()), *args, "--ctl", str(ctl)])
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

        def check_alive() -> None:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    raise RuntimeError(f"peer {i} exited early: {(ctl / f'log-{i}.txt').read_text()[-2000:]}")

        def all_there(prefix: str) -> bool:
            check_alive()
            return all((ctl / f"{prefix}{i}{'.json' if prefix == 'done-' else ''}").exists() for i in range(n))

        _wait_for(lambda: all_there("ready-"), "peers ready", timeout=timeout)
        before = [lab.tx_bytes(i) for i in range(n)]
        (ctl / "go").touch()
        _wait_for(lambda: all_there("done-"), "peers done", timeout=timeout)
        time.sleep(0.5)  # trailing ACKs and FINs
        after = [lab.tx_bytes(i) for i in range(n)]
        reports = [json.loads((ctl / f"done-{i}.json").read_text()) for i in range(n)]
        (ctl / "exit").touch()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        return [b - a for a, b in zip(before, after, strict=True)], reports
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)
        for log in logs:
            log.close()


def _lab(n: int, framed: bool = True) -> Lab:
    lab = Lab(n, prefix=f"cm{os.getpid() % 10000}")
    try:
        for ns in lab.names if framed else ():  # one frame per TCP segment, as on a real 1500-byte MTU link
            sh("ip", "-n", ns, "link", "set", "eth0", "gso_max_segs", "1")
    except Exception:
        lab.close()
        raise
    return lab


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def measure_http(peers: int, k: int, rounds: int, work: Path) -> dict:
    lab = _lab(peers)
    try:
        args = [["--role", "http-peer", "--index", str(i), "--ips", ",".join(lab.ips),
                 "--rounds", str(rounds), "--k", str(k)] for i in range(peers)]
        tx, reports = _run_peers(lab, args, work / "http", timeout=WAIT_S + 2 * rounds)
    finally:
        lab.close()
    per_peer = [t / rounds for t in tx]
    typical = [_median(r["tx_per_round"]) for r in reports]
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
        args = [["--role", "gloo-rank", "--index", str(i), "--world", str(peers), "--master", lab.ips[0],
                 "--numel", str(numel), "--steps", str(steps)] for i in range(peers)]
        tx, reports = _run_peers(lab, args, work / "gloo", timeout=WAIT_S + 30 * steps)
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
        "seconds_per_step_median": _median(step_s),
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
    work = ROOT / "out" / "comm"
    rounds, framed_steps, timed_steps = (64, 1, 3) if quick else (256, 4, 10)
    t0 = time.monotonic()
    numel, tensors = minilm_parameters()
    http = measure_http(peers, k, rounds, work)
    # The same pattern with 8x the gradients per round: the slope is the cost of one more gradient.
    http_big = None if quick else measure_http(peers, 8 * k, rounds // 2, work)
    gloo = measure_gloo(peers, numel, framed_steps, work)
    # One frame per segment costs the kernel far more CPU than GSO; time the steps with GSO on.
    timed = measure_gloo(peers, numel, timed_steps, work, framed=False)
    gloo.update(model="all-MiniLM-L6-v2", parameters=numel, parameter_tensors=tensors,
                seconds_per_step_framed=gloo.pop("seconds_per_step"),
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
        "gloo_allreduce": gloo,
        "link": "veth in network namespaces, MTU 1500, gso_max_segs 1; bytes = eth0 tx_bytes",
    "gloo_timing_link": "same lab with the kernel's default GSO (64 KB super-packets), timings only",
        "seconds_total": time.monotonic() - t0,
    }
    wire_path = ROOT / "results" / "wire.json"
    if wire_path.exists():
        wire = json.loads(wire_path.read_text())
        ob = wire["wire_bytes_per_round_mean"]
        result["onebyte_wire_bytes_per_round_mean"] = ob
        result["ratio_json_http_to_onebyte"] = http["wire_bytes_per_round_mean"] / ob
        result["ratio_gloo_step_to_onebyte_round"] = gloo["wire_bytes_per_step_mean"] / ob
    return result


# --------------------------------------------------------------------------------------------
# BENCHMARKS.md section (imported by bench/report.py)
# --------------------------------------------------------------------------------------------

def _kb(b: float) -> str:
    if b >= 1e6:
        return f"{b / 1e6:,.1f} MB"
    return f"{b / 1e3:,.1f} KB" if b >= 1e3 else f"{b:,.0f} B"


def report_section(result: dict, wire: dict | None) -> str:
    """The "Communication" section of BENCHMARKS.md from comm.json (and wire.json if present)."""
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
        lines.append(f"| onebyte (hivemind DHT, byte codec; bench/wire.py) | {_kb(ob)} | 1× "
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
        f"Reproduce: `sudo {result['command']}` (baselines) and `sudo python bench/wire.py` (onebyte), then "
        "`python bench/report.py`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 HTTP rounds, 1 + 3 all-reduce steps (under a minute)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "comm.json")
    ap.add_argument("--role", choices=["http-peer", "gloo-rank"], help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ips", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--master", default="", help=argparse.SUPPRESS)
    ap.add_argument("--numel", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ctl", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "http-peer":
        return http_peer(a.index, a.ips.split(","), a.rounds, a.k, a.ctl)
    if a.role == "gloo-rank":
        return gloo_rank(a.index, a.world, a.master, a.numel, a.steps, a.ctl)
    r = run(a.quick)
    save_result(r, a.out, "python bench/comm.py" + (" --quick" if a.quick else ""),
                f"{platform.machine()}, {os.cpu_count()} CPUs, loopback veth pairs in network namespaces")


if __name__ == "__main__":
    main()
