"""Churn on loopback: N-1 peers train (N = --peers, 4 by default); one is SIGKILLed mid-round; an
Nth joins mid-run; the killed one restarts from its old --out. Every peer must end with the same set
digest and state hash, and no live peer may spend longer on a round than its deadline allows.

    python -m bench.lab.churn --out runs/churn [--rounds 30] [--peers 16]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from bench.lab.loopback import address, finish, peer, rounds_done, secret_file, wait_until
from onebyte.swarm import stop_group

MAX_DEADLINE = 8.0


def run_churn(out: Path, rounds: int = 60, peers: int = 4, flags: tuple[str, ...] = ()) -> dict:
    """``flags``: more peer flags, the same for every peer (e.g. ``("--aggregate", "robust")``)."""
    if peers < 4:
        raise ValueError("churn needs at least 4 peers (two survivors, one crash, one newcomer)")
    # the first N-1 start together (--min-peers): with many peers, the first would otherwise finish
    # their rounds alone while the rest are still loading
    extra = ["--rounds", str(rounds), "--secret-file", str(secret_file(out)), "--max-deadline", str(MAX_DEADLINE),
             "--snapshot-every", "5", "--min-peers", str(peers - 1), *flags]
    procs = []
    crash, newcomer = peers - 2, peers - 1
    try:
        p0 = peer(out, 0, peers, extra)
        procs.append(p0)
        join = address(p0)
        procs += [peer(out, 1, peers, extra, join)]
        join = join + address(procs[1])
        procs += [peer(out, i, peers, extra, join) for i in range(2, peers - 1)]
        wait_until(lambda: min(rounds_done(p) for p in procs) >= 3, 300 + 20 * peers, "three rounds everywhere")
        victim = procs[crash]
        stop_group(victim, signal.SIGKILL, grace=5)  # a crash: the peer, its DHT process and p2pd, mid-round
        killed_at = rounds_done(victim)
        wait_until(lambda: rounds_done(p0) >= killed_at + 3, 300, "the survivors to move on")
        late = peer(out, newcomer, peers, extra, join)  # a newcomer
        procs.append(late)
        wait_until(lambda: rounds_done(late) >= 1, 300, "the newcomer to train")
        restarted = peer(out, crash, peers, extra, join)  # the crashed peer, restarted from its own --out
        procs = [p for p in procs if p is not victim] + [restarted]
        summaries = finish(procs, 900 + 30 * peers)
    finally:
        for p in procs:
            stop_group(p)
    result = {
        "peers_started": peers,
        "killed_after_round": killed_at,
        "agree": len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1,
        "max_round_seconds": max(s["max_round_seconds"] for s in summaries),
        "max_deadline": MAX_DEADLINE,
        "peers": [{k: s[k] for k in ("peer_id", "rounds_completed", "records", "records_rejected", "set_digest",
                                     "state_hash", "max_round_seconds")} for s in summaries],
    }
    (out / "churn.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--peers", type=int, default=4)
    a = ap.parse_args()
    result = run_churn(a.out, a.rounds, a.peers)
    print(json.dumps(result, indent=2))
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
