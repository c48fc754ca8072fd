"""The traffic pattern of the method's first public implementation: JSON floats over HTTP.

github.com/ezelikman/justonebyte, ``app.py`` (Flask server + ``requests`` client). Per round every
peer, one new TCP connection per request and one request after the other: ``POST /notify`` to
every other peer (its address and start timestamp: the timestamp is what its perturbation seeds
are derived from), a barrier ``POST /notify_finish`` to every other peer after the forward
passes, ``GET /grads`` from every other peer (the answer is ``{"grads": [K floats]}`` as JSON),
barriers after applying and at the end of the round; every 16th round one more barrier (the
backup restore) and every 64th a ``GET /hash`` from one random peer. Request and response bytes
copy ``requests`` 2.31 and Flask 2.3 / Werkzeug 2.3 (headers, JSON separators, the trailing
newline, ``Connection: close``). No model is run; the K floats are float32 values as
``tensor.item()`` gives them.

One peer runs per lab namespace: ``python -m bench.baselines.json_http --index I --ips A,B,..
--rounds R --k K --ctl DIR`` (started by ``bench.experiments.comm``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import socket
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from bench.lab.control import WAIT_S, Control, own_tx_bytes

PORT = 7000

# What the first public implementation's libraries put on the wire (mid-2023 versions).
USER_AGENT = "python-requests/2.31.0"
SERVER = "Werkzeug/2.3.7 Python/3.10.12"
BACKUP_INTERVAL = 16  # app.py: a "finish restoring weights" barrier when (round + 1) % 16 == 0
HASH_INTERVAL = 64  # app.py: GET /hash from one random peer when (round + 1) % 64 == 0


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


def peer(index: int, ips: list[str], rounds: int, k: int, ctl: Path) -> None:
    """One peer of the JSON-over-HTTP baseline (run inside its namespace)."""
    urls = [f"http://{ip}:{PORT}" for ip in ips]
    state = _HttpPeerState(urls[index], [u for i, u in enumerate(urls) if i != index], time.time())
    server = ThreadingHTTPServer(("0.0.0.0", PORT), _handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    control = Control(ctl)
    control.ready(index)
    control.wait_go()
    rng = random.Random(index)

    tx = [own_tx_bytes()]
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
        tx.append(own_tx_bytes())
    seconds = time.monotonic() - t0
    result = {"seconds": seconds, "tx_per_round": [b - a for a, b in itertools.pairwise(tx)],
              "http_bytes_sent": state.http_bytes_sent, "grads_body_bytes": body_bytes}
    control.done(index, result)
    control.wait_exit()  # keep serving until everyone has read
    server.shutdown()


def command(index: int, ips: list[str], rounds: int, k: int) -> list[str]:
    """How the orchestrator starts peer ``index`` (``--ctl`` is added by ``run_window``)."""
    return [sys.executable, "-m", "bench.baselines.json_http", "--index", str(index), "--ips", ",".join(ips),
            "--rounds", str(rounds), "--k", str(k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--ips", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--ctl", type=Path, required=True)
    a = ap.parse_args()
    peer(a.index, a.ips.split(","), a.rounds, a.k, a.ctl)


if __name__ == "__main__":
    main()
