"""Many real peers on loopback, beyond a full mesh (the round's tree), with churn (marked slow: minutes)."""

import pytest
from bench.lab.churn import run_churn

from onebyte.overlay import DEGREE
from onebyte.swarm import read_summary

pytestmark = pytest.mark.slow

#: Peers started: four times the largest full mesh, so records travel two and three hops.
PEERS = 4 * (DEGREE + 1) + 4


def test_many_peers_on_the_round_tree_with_a_crash_a_restart_and_a_newcomer_converge(tmp_path):
    """PEERS - 1 peers train together, one is SIGKILLed, a newcomer joins, the killed one restarts:
    every peer ends on one (set digest, state hash), and records reached them through relays."""
    result = run_churn(tmp_path, rounds=60, peers=PEERS)  # the newcomer joins a running swarm
    assert result["agree"], result["peers"]
    assert len({p["peer_id"] for p in result["peers"]}) == PEERS
    summaries = [read_summary(tmp_path / f"peer-{i}") for i in range(PEERS)]
    assert sum(s.get("relayed", 0) for s in summaries) > 0
