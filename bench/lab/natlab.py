"""Sites behind NAT join through a relay: one public peer (``--relay``) and two sites, each behind
its own masquerading router (bench/lab/nat.py), with no port open anywhere. Each site runs
``onebyte peer --private --join P0``: its DHT node is a client, and it reserves a slot on the public
peer, which relays for it (libp2p circuit relay v2). Neither site can open a connection to the
other, nor the public peer to either. All three train ``--rounds`` rounds and must end with one set
digest and state hash. Runs as root; needs nftables.

    sudo python -m bench.lab.natlab --out runs/nat [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

from bench.lab.loopback import finish
from bench.lab.nat import NatLab
from bench.lab.peers import start
from onebyte.swarm import stop_group, wait_for_address

ARGS = ["--model", "tiny-gpt2", "--task", "vader", "--samples", "2", "--batch-size", "8", "--tune", "all",
        "--threads", "1", "--max-deadline", "20", "--eval-size", "0"]


def run_nat(out: Path, rounds: int = 20) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    secret = out / "secret"
    secret.write_bytes(secrets.token_bytes(32))
    lab = NatLab(1, private=2)
    sites = (1, 2)
    procs = []
    try:
        reach = {"site_to_public": all(lab.reaches(s, lab.ips[0]) for s in sites),
                 "public_to_site": any(lab.reaches(0, lab.ips[s]) for s in sites),
                 "site_to_site": lab.reaches(1, lab.ips[2]) or lab.reaches(2, lab.ips[1])}
        if reach != {"site_to_public": True, "public_to_site": False, "site_to_site": False}:
            raise RuntimeError(f"the NAT lab is not a NAT: {reach}")
        args = [*ARGS, "--rounds", str(rounds), "--secret-file", str(secret), "--min-peers", "3"]
        procs.append(start(lab, 0, out, [*args, "--peer-id", "0", "--shard", "0/3", "--relay"]))
        join = wait_for_address(procs[0], 120)[:1]
        for s in sites:
            procs.append(start(lab, s, out, [*args, "--peer-id", str(s), "--shard", f"{s}/3", "--private"], join))
        summaries = finish(procs, 900)
    finally:
        for p in procs:
            stop_group(p)
        lab.close()
    result = {
        "rounds": rounds,
        "reachability": reach,
        "agree": len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1,
        "site_addresses": [summaries[s].get("addresses") for s in sites],
        "sites_via_relay": [any("p2p-circuit" in a for a in summaries[s].get("addresses") or []) for s in sites],
        # records pushed from one site straight to the other: they can only arrive through the relay
        "site_to_site_pushes": [summaries[a].get("pushes", {}).get(f"{b:x}") for a, b in ((1, 2), (2, 1))],
        "peers": [{k: s.get(k) for k in ("peer_id", "rounds_completed", "records", "records_rejected", "set_digest",
                                         "state_hash", "bytes_sent", "bytes_received", "pushes", "relayed")}
                  for s in summaries],
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
