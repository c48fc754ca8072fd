"""Churn on loopback: 3 peers train; one is SIGKILLed mid-round; a 4th joins mid-run; the killed
one restarts from its old --out. Every peer must end with the same set digest and state hash,
and no live peer may spend longer on a round than its deadline allows.

    python scripts/churn.py --out runs/churn [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarmlab import address, finish, peer, rounds_done, secret_file, wait_until  # noqa: E402

from onebyte.swarm import stop_group  # noqa: E402

MAX_DEADLINE = 8.0


def run_churn(out: Path, rounds: int = 60) -> dict:
    extra = ["--rounds", str(rounds), "--secret-file", str(secret_file(out)), "--max-deadline", str(MAX_DEADLINE),
             "--snapshot-every", "5"]
    procs = []
    try:
        p0 = peer(out, 0, 4, extra)
        procs.append(p0)
        join = address(p0)
        p1, p2 = peer(out, 1, 4, extra, join), peer(out, 2, 4, extra, join)
        procs += [p1, p2]
        join = join + address(p1)
        wait_until(lambda: min(rounds_done(p) for p in procs) >= 3, 300, "three rounds everywhere")
        stop_group(p2, signal.SIGKILL, grace=5)  # a crash: the peer, its DHT process and p2pd, mid-round
        killed_at = rounds_done(p2)
        wait_until(lambda: rounds_done(p0) >= killed_at + 3, 300, "the survivors to move on")
        p3 = peer(out, 3, 4, extra, join)  # a newcomer
        procs.append(p3)
        wait_until(lambda: rounds_done(p3) >= 1, 300, "the newcomer to train")
        p2b = peer(out, 2, 4, extra, join)  # the crashed peer, restarted from its own --out
        procs = [p0, p1, p3, p2b]
        summaries = finish(procs, 900)
    finally:
        for p in procs:
            stop_group(p)
    result = {
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
    a = ap.parse_args()
    result = run_churn(a.out, a.rounds)
    print(json.dumps(result, indent=2))
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
