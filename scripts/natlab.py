"""A site behind NAT joins through a relay: two public peers and one peer behind a masquerading
router (bench/lab/nat.py) with no port open. The site runs ``onebyte peer --private --join P0``: its
DHT node is a client and the public peers relay for it (libp2p circuit relay). All three train
``--rounds`` rounds and must end with one set digest and state hash. Runs as root; needs nftables.

    sudo python scripts/natlab.py --out runs/nat [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lab.nat import NatLab  # noqa: E402
from bench.lab.peers import start  # noqa: E402
from swarmlab import finish  # noqa: E402

from onebyte.swarm import stop_group, wait_for_address  # noqa: E402

ARGS = ["--model", "tiny-gpt2", "--task", "vader", "--samples", "2", "--batch-size", "8", "--tune", "all",
        "--threads", "1", "--max-deadline", "20", "--eval-size", "0"]


def run_nat(out: Path, rounds: int = 20) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    secret = out / "secret"
    secret.write_bytes(secrets.token_bytes(32))
    lab = NatLab(2)
    site = 2
    procs = []
    try:
        reach = {"site_to_public": lab.reaches(site, lab.ips[0]), "public_to_site": lab.reaches(0, lab.ips[site])}
        if not reach["site_to_public"] or reach["public_to_site"]:
            raise RuntimeError(f"the NAT lab is not a NAT: {reach}")
        args = [*ARGS, "--rounds", str(rounds), "--secret-file", str(secret), "--min-peers", "3"]
        procs.append(start(lab, 0, out, [*args, "--peer-id", "0", "--shard", "0/3"]))
        join = wait_for_address(procs[0], 120)[:1]
        procs.append(start(lab, 1, out, [*args, "--peer-id", "1", "--shard", "1/3"], join))
        procs.append(start(lab, site, out, [*args, "--peer-id", "2", "--shard", "2/3", "--private"], join))
        summaries = finish(procs, 900)
    finally:
        for p in procs:
            stop_group(p)
        lab.close()
    result = {
        "rounds": rounds,
        "reachability": reach,
        "agree": len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1,
        "site_addresses": summaries[site].get("addresses"),
        "site_via_relay": any("p2p-circuit" in a for a in summaries[site].get("addresses") or []),
        "peers": [{k: s.get(k) for k in ("peer_id", "rounds_completed", "records", "records_rejected", "set_digest",
                                         "state_hash", "bytes_sent", "bytes_received")} for s in summaries],
    }
    (out / "nat.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    result = run_nat(a.out, a.rounds)
    print(json.dumps(result, indent=2))
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
