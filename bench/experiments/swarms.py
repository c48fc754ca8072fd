"""Real peer processes at scale and behind NAT: scripts/churn.py with 16 peers, scripts/natlab.py.

    python -m bench.experiments.swarms churn [--peers 16] [--rounds 60] [--out bench/results/churn16.json]
    sudo python -m bench.experiments.swarms nat [--rounds 20] [--out bench/results/nat.json]

``churn``: N-1 peers on loopback start together (``--min-peers``), one is SIGKILLed mid-round, an
Nth joins mid-run, the killed one restarts from its directory; every peer must end on one (set
digest, state hash). ``nat``: two public peers and one behind a masquerading router in network
namespaces (bench/lab/nat.py), the latter ``--private``: it joins through the others acting as
relays and must end on the same (digest, hash).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

from bench.output import REPO, RESULTS, save_result
from bench.sections import Claim, Results, Section, Step

sys.path.insert(0, str(REPO / "scripts"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["churn", "nat"])
    ap.add_argument("--peers", type=int, default=16)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"onebyte-{a.what}-") as tmp:
        if a.what == "churn":
            from churn import run_churn

            rounds = a.rounds or 60
            r = run_churn(Path(tmp), rounds, a.peers)
            cmd = f"python -m bench.experiments.swarms churn --peers {a.peers} --rounds {rounds}"
            out = a.out or RESULTS / f"churn{a.peers}.json"
        else:
            from natlab import run_nat

            rounds = a.rounds or 20
            r = run_nat(Path(tmp), rounds)
            cmd = f"sudo python -m bench.experiments.swarms nat --rounds {rounds}"
            out = a.out or RESULTS / "nat.json"
    save_result(r, out, cmd, f"{platform.machine()}, 2 cores, loopback" + (" veth pairs in namespaces" * (a.what == "nat")))


def render(results: Results) -> list[str]:
    churn, nat = results.get("churn16"), results.get("nat")
    if not churn and not nat:
        return []
    out = ["## Real peers: 16 at once, and a site behind NAT", ""]
    if churn:
        peers = churn["peers"]
        pairs = {(p["set_digest"], p["state_hash"]) for p in peers}
        out += [f"`{churn['command']}` ({churn['date']}, {churn['machine']}). {churn['peers_started']} peer processes "
                f"(tiny-gpt2, K = 2, {len({p['peer_id'] for p in peers})} distinct ids): the first "
                f"{churn['peers_started'] - 1} start together, one is SIGKILLed after round {churn['killed_after_round']}, "
                "a newcomer joins mid-run and the killed one restarts from its own directory.", "",
                "| peers at the end | records each | distinct (digest, hash) | longest round (s) | deadline cap (s) |",
                "|---|---|---|---|---|",
                f"| {len(peers)} | {', '.join(sorted({str(p['records']) for p in peers}))} | {len(pairs)} | "
                f"{churn['max_round_seconds']:.1f} | {churn['max_deadline']:.0f} |", "",
                f"The newcomer trained {peers[-2]['rounds_completed']} rounds; the restarted peer shows "
                f"{peers[-1]['rounds_completed']} rounds of its own in all"
                + (", i.e. none after the restart: it came back when the others had finished and only caught up"
                   if peers[-1]["rounds_completed"] <= churn["killed_after_round"] else "")
                + ". Longest round: the newcomer's first (catching up under the load of 16 processes on 2 cores).",
                ""]
    if nat:
        site = nat["peers"][2]
        out += [f"`{nat['command']}` ({nat['date']}, {nat['machine']}). Two public peers and a site behind a "
                "masquerading router (nftables; no port forwarded): the site reaches the public peers "
                f"({nat['reachability']['site_to_public']}), they cannot open a connection to it "
                f"({nat['reachability']['public_to_site']}). The site runs `onebyte peer --private --join P0`.", "",
                "| peer | rounds | records | set digest | state hash | bytes sent | bytes received |",
                "|---|---|---|---|---|---|---|"]
        for name, p in zip(("public 0", "public 1", "behind NAT"), nat["peers"], strict=True):
            out.append(f"| {name} | {p['rounds_completed']} | {p['records']} | `{p['set_digest'][:12]}` | "
                       f"`{p['state_hash'][:12]}` | {p['bytes_sent'] or 0:,} | {p['bytes_received'] or 0:,} |")
        out += ["", f"One (digest, hash): {nat['agree']}. The site's addresses at the end: "
                + ", ".join(f"`{a}`" for a in nat.get("site_addresses") or []) + " ("
                + ("a relayed `/p2p-circuit` address among them" if nat.get("site_via_relay")
                   else "no relayed address was advertised: the site's records went out on its own connections and "
                        "the others' came back on them (pushes it could not receive were fetched by its DHT reads "
                        "and anti-entropy)") + f"); the site sent {site['bytes_sent'] or 0:,} bytes.", ""]
    return out


def claims(results: Results) -> list[Claim]:
    out: list[Claim] = []
    churn, nat = results.get("churn16"), results.get("nat")
    if churn:
        out.append((f"{churn['peers_started']} real peers with a SIGKILL, a newcomer and a restart end on one "
                    "(digest, hash)", str(churn["agree"]), "True", bool(churn["agree"])))
    if nat:
        out.append(("a site behind NAT (no open port) joins via the others and ends on their (digest, hash)",
                    str(nat["agree"]), "True", bool(nat["agree"])))
    return out


SECTION = Section("swarms", "bench.experiments.swarms", render,
                  steps=(Step("churn16", ("churn", "--peers", "16", "--out", "{out}/churn16.json"), None),
                         Step("nat", ("nat", "--out", "{out}/nat.json"), None, needs_root=True)),
                  claims=claims)

if __name__ == "__main__":
    main()
