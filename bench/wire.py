"""Bytes on the wire per round per peer, measured at each peer's network interface.

    sudo python bench/wire.py [--peers 4] [--samples 16] [--rounds 30] [--out bench/results/wire.json]

Each peer runs in its own network namespace (bench/netlab.py) so the interface counter holds
everything its processes send: the record, heartbeats, DHT traffic (signatures, routing),
p2pd's TLS/yamux framing and TCP/IP headers. The steady-state rate is the slope of tx bytes
against rounds completed, after every peer has joined and before the first one finishes.
"""

from __future__ import annotations

import argparse
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Lab, save_result  # noqa: E402

from onebyte.record import HEADER_SIZE, TAG_SIZE  # noqa: E402
from onebyte.swarm import read_summary  # noqa: E402


def start(lab: Lab, i: int, out: Path, args: list[str], join: list[str]) -> subprocess.Popen:
    d = out / f"peer-{i}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "addresses.txt").unlink(missing_ok=True)
    cmd = lab.wrap(i, [sys.executable, "-m", "onebyte", "peer", "--out", str(d), "--host", lab.ips[i], *args])
    for a in join:
        cmd += ["--join", a]
    log = open(d / "peer.log", "ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def measure(peers: int, samples: int, rounds: int, out: Path, limit: str | None = None) -> dict:
    import os
    import signal

    lab = Lab(peers)
    procs: list[subprocess.Popen] = []
    try:
        if limit:
            for i in range(peers):
                lab.limit(i, rate=limit)
        secret = out / "secret"
        out.mkdir(parents=True, exist_ok=True)
        secret.write_bytes(secrets.token_bytes(32))
        args = ["--model", "tiny-gpt2", "--task", "vader", "--samples", str(samples), "--batch-size", "8",
                "--rounds", str(rounds), "--secret-file", str(secret), "--threads", "1",
                "--max-deadline", "30"]
        procs.append(start(lab, 0, out, [*args, "--peer-id", "0", "--shard", f"0/{peers}"], []))
        addr_file = out / "peer-0" / "addresses.txt"
        end = time.monotonic() + 120
        while not addr_file.exists() and time.monotonic() < end:
            time.sleep(0.2)
        join = addr_file.read_text().split()[:1]
        for i in range(1, peers):
            procs.append(start(lab, i, out, [*args, "--peer-id", str(i), "--shard", f"{i}/{peers}"], join))
        samples_log: list[tuple[float, list[int], list[int]]] = []
        end = time.monotonic() + 1800
        while any(p.poll() is None for p in procs) and time.monotonic() < end:
            done = [((read_summary(out / f"peer-{i}") or {}).get("rounds_completed", 0)) for i in range(peers)]
            samples_log.append((time.monotonic(), done, [lab.tx_bytes(i) for i in range(peers)]))
            time.sleep(0.25)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
        lab.close()
    # steady window: all peers have >= 3 rounds, nobody has reached rounds - 2 yet
    window = [s for s in samples_log if min(s[1]) >= 3 and max(s[1]) <= rounds - 2]
    if len(window) < 2:
        raise RuntimeError("no steady-state window observed; use more rounds")
    first, last = window[0], window[-1]
    per_peer = []
    for i in range(peers):
        dr = last[1][i] - first[1][i]
        per_peer.append((last[2][i] - first[2][i]) / max(dr, 1))
    secs = last[0] - first[0]
    drounds = sum(last[1][i] - first[1][i] for i in range(peers)) / peers
    summaries = [read_summary(out / f"peer-{i}") or {} for i in range(peers)]
    return {
        "peers": peers,
        "samples_per_round": samples,
        "link_limit": limit,
        "payload_bytes_per_round_per_peer": samples + 1,
        "record_bytes_per_round_per_peer": HEADER_SIZE + samples + 1 - 1 + TAG_SIZE,
        "wire_bytes_per_round_per_peer": per_peer,
        "wire_bytes_per_round_mean": sum(per_peer) / peers,
        "rounds_per_second": drounds / secs if secs > 0 else None,
        "gradients_per_second_swarm": peers * samples * drounds / secs if secs > 0 else None,
        "agree": len({(s.get("set_digest"), s.get("state_hash")) for s in summaries}) == 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("bench/results/wire.json"))
    ap.add_argument("--work", type=Path, default=Path("bench/out/wire"))
    a = ap.parse_args()
    import shutil

    shutil.rmtree(a.work, ignore_errors=True)
    r = measure(a.peers, a.samples, a.rounds, a.work)
    r["ratio_wire_to_payload"] = r["wire_bytes_per_round_mean"] / r["payload_bytes_per_round_per_peer"]
    save_result(r, a.out, f"python bench/wire.py --peers {a.peers} --samples {a.samples} --rounds {a.rounds}",
                f"{platform.machine()}, loopback veth pairs in network namespaces")


if __name__ == "__main__":
    main()
