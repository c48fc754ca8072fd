"""Real peer processes at scale and behind NAT: bench.lab.churn with 16 peers, bench.lab.natlab.

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
import tempfile
from pathlib import Path

from bench.output import RESULTS, save_result
from bench.sections import Claim, Results, Section, Step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["churn", "nat"])
    ap.add_argument("--peers", type=int, default=16)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"onebyte-{a.what}-") as tmp:
        if a.what == "churn":
            from bench.lab.churn import run_churn

            rounds = a.rounds or 60
            r = run_churn(Path(tmp), rounds, a.peers)
            cmd = f"python -m bench.experiments.swarms churn --peers {a.peers} --rounds {rounds}"
            out = a.out or RESULTS / f"churn{a.peers}.json"
        else:
            from bench.lab.natlab import run_nat

            rounds = a.rounds or 20
            r = run_nat(Path(tmp), rounds)
            cmd = f"sudo python -m bench.experiments.swarms nat --rounds {rounds}"
            out = a.out or RESULTS / "nat.json"
    save_result(r, out, cmd, f"{platform.machine()}, 2 cores, loopback" + (" veth pairs in namespaces" * (a.what == "nat")))


def render(results: Results) -> list[str]:
    churn, nat = results.get("churn16"), results.get("nat")
    if not churn and not nat:
        return []
    out = ["## Real peers: 16 at once, and sites behind NAT", ""]
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
        out += [f"`{nat['command']}` ({nat['date']}, {nat['machine']}). One public peer (`--relay`) and two sites, "
                "each behind its own masquerading router (nftables; no port forwarded anywhere): the sites reach the "
                f"public peer ({nat['reachability']['site_to_public']}); the public peer cannot open a connection to "
                f"either ({nat['reachability']['public_to_site']}), nor one site to the other "
                f"({nat['reachability']['site_to_site']}). Each site runs `onebyte peer --private --join P0`.", "",
                "| peer | rounds | records | set digest | state hash | bytes sent | bytes received |",
                "|---|---|---|---|---|---|---|"]
        for name, p in zip(("public relay", "site behind NAT 0", "site behind NAT 1"), nat["peers"], strict=True):
            out.append(f"| {name} | {p['rounds_completed']} | {p['records']} | `{p['set_digest'][:12]}` | "
                       f"`{p['state_hash'][:12]}` | {p['bytes_sent'] or 0:,} | {p['bytes_received'] or 0:,} |")
        relayed = nat.get("sites_via_relay") or []
        s2s = nat.get("site_to_site_pushes") or []
        out += ["", f"One (digest, hash): {nat['agree']}. Relayed (`/p2p-circuit`) addresses advertised by the sites "
                f"at the end: {', '.join(str(x) for x in relayed)}. The sites' addresses: "
                + "; ".join(", ".join(f"`{a}`" for a in addrs or []) for addrs in nat.get("site_addresses") or [])
                + "."]
        if s2s:
            out += ["", "Records pushed from one site straight to the other (delivered / failed): "
                    + ", ".join(f"{(c or {}).get('delivered', 0)} / {(c or {}).get('failed', 0)}" for c in s2s)
                    + ". A site's records reached the other site through the public peer, which relays them: the site "
                    "pushes to it over its own outbound connection, and the public peer (`--relay`) passes every "
                    "record pushed to it by its author on to every other live peer, over the connections the sites "
                    "opened (records relayed by the public peer: "
                    + str((nat["peers"][0] or {}).get("relayed", "not counted in this run"))
                    + "). Records carry their author's HMAC, so a relay can drop them but not alter them. libp2p's "
                    "circuit relay (`--private` asks for a reservation on the join peers, `--relay` makes a peer "
                    "serve them) did not come up in this lab: no relayed address, and direct site-to-site pushes "
                    "fail; a direct path between two NATed sites would save the hop through the public peer."]
        out.append("")
    return out


def claims(results: Results) -> list[Claim]:
    out: list[Claim] = []
    churn, nat = results.get("churn16"), results.get("nat")
    if churn:
        out.append((f"{churn['peers_started']} real peers with a SIGKILL, a newcomer and a restart end on one "
                    "(digest, hash)", str(churn["agree"]), "True", bool(churn["agree"])))
    if nat:
        relayed = (nat["peers"][0] or {}).get("relayed") or 0
        out.append(("two sites behind NAT (no open port) train with a public peer and end on one (digest, hash)",
                    str(nat["agree"]), "True", bool(nat["agree"])))
        out.append(("... each site's records relayed to the other by the public peer (records)", str(relayed),
                    "> 0", relayed > 0))
    return out


SECTION = Section("swarms", "bench.experiments.swarms", render,
                  steps=(Step("churn16", ("churn", "--peers", "16", "--out", "{out}/churn16.json"), None),
                         Step("nat", ("nat", "--out", "{out}/nat.json"), None, needs_root=True)),
                  claims=claims)

if __name__ == "__main__":
    main()
