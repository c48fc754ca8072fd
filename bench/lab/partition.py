"""Partition on loopback: two groups of peers train as separate swarms (they cannot reach each
other), then are connected. Measures how long after reconnecting every peer holds the same
records of the partitioned rounds, then stops all peers (SIGTERM: finish the round, drain) and
checks they end with one set digest and one state hash.

    python -m bench.lab.partition --out runs/partition
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from bench.lab.loopback import address, peer, rounds_done, secret_file, wait_until
from onebyte.ledger import read_ledger
from onebyte.record import decode_record
from onebyte.swarm import read_summary, stop_group


def ids_through(p, last_round: int) -> frozenset:
    try:
        raws = read_ledger(p.out / "ledger.obl")
    except Exception:  # being written right now: try again on the next poll
        return frozenset({b"?" + bytes([p.index])})
    return frozenset(r.record_id for r in map(decode_record, raws) if r.round <= last_round)


def run_partition(out: Path, apart_rounds: int = 5, settle: float = 20.0, flags: tuple[str, ...] = ()) -> dict:
    """``flags``: more peer flags, the same for every peer (e.g. ``("--aggregate", "robust")``)."""
    extra = ["--until-stopped", "--secret-file", str(secret_file(out)), "--max-deadline", "8", *flags]
    procs = []
    try:
        a0 = peer(out, 0, 4, extra)
        a1 = peer(out, 1, 4, extra, address(a0))
        b2 = peer(out, 2, 4, extra)  # a second swarm: it knows nothing of the first
        b3 = peer(out, 3, 4, extra, address(b2))
        procs = [a0, a1, b2, b3]
        wait_until(lambda: min(rounds_done(p) for p in procs) >= apart_rounds, 300, "both groups to train")
        split_round = max(rounds_done(p) for p in procs)
        digests = {read_summary(p.out)["set_digest"] for p in procs}
        t0 = time.monotonic()
        (a0.out / "connect.txt").write_text("\n".join(address(b2)) + "\n")  # the link comes back
        converged_after = None
        while time.monotonic() - t0 < 60:
            if len({ids_through(p, split_round) for p in procs}) == 1:
                converged_after = time.monotonic() - t0
                break
            time.sleep(0.5)
        time.sleep(max(0.0, settle - (time.monotonic() - t0)))
        for p in procs:  # finish the round, drain, exit
            p.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not any(p.alive() for p in procs), 180, "the peers to stop")
        codes = [p.proc.returncode for p in procs]
    finally:
        for p in procs:
            stop_group(p)
    summaries = [read_summary(p.out) for p in procs]
    result = {
        "rounds_apart": split_round,
        "distinct_digests_while_apart": len(digests),
        "seconds_to_same_records_after_reconnect": converged_after,
        "exit_codes": codes,
        "agree": len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1,
        "peers": [{k: s[k] for k in ("peer_id", "rounds_completed", "records", "set_digest", "state_hash")}
                  for s in summaries],
    }
    (out / "partition.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    result = run_partition(a.out)
    print(json.dumps(result, indent=2))
    ok = result["agree"] and (result["seconds_to_same_records_after_reconnect"] or 1e9) <= 30
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
