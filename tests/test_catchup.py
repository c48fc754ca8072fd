"""CatchUp's ledger download on its own, with stand-ins for the parts it is given: the pieces'
schedule over several sources (concurrent.futures), a failed source handing its piece back, and
a piece that fails everywhere ending the download. The whole join over the in-memory swarm is in
test_peer.py."""

import threading
from types import SimpleNamespace

import pytest

import onebyte.catchup as catchup_mod
from onebyte.catchup import CatchUp
from onebyte.errors import PeerUnreachable
from onebyte.options import PeerOptions


def _catchup(ledg, monkeypatch):
    """A CatchUp whose chosen source p1 and second source p2 (both at round 10, 30 records) answer
    LEDG through ``ledg``; pieces of one round each. Returns it, the records offered, the rounds moved to."""
    monkeypatch.setattr(catchup_mod, "LEDGER_PIECE", 300)  # 3 records a round of ~100 bytes: a piece a round
    chosen = SimpleNamespace(peer_id=1, records=30, round=10, contact="p1", closed=-1, closed_digest=b"")
    second = SimpleNamespace(peer_id=2, records=30, round=10, contact="p2", closed=9, closed_digest=b"")
    offered, moved = [], []
    client = SimpleNamespace(net=SimpleNamespace(bytes_received=0), bulk_timeout=lambda size: 5.0, ledg=ledg)
    gossip = SimpleNamespace(others=lambda: {1: chosen, 2: second})
    replica = SimpleNamespace(records={}, closed_digest=lambda r: b"")
    intake = SimpleNamespace(offer=lambda data: offered.append(data) or True)
    opts = PeerOptions(peer_id=0)
    c = CatchUp(client, lambda: opts, replica, intake, gossip, None, b"tag", lambda: 0, lambda: 0, moved.append)
    return c, chosen, offered, moved


def test_a_source_that_fails_hands_its_piece_back_and_serves_no_more(monkeypatch):
    asked, lock = [], threading.Lock()

    def ledg(contact, rounds, timeout, limit):
        with lock:
            asked.append(contact)
        if contact == "p2":
            raise PeerUnreachable("p2 has left")
        return 10, [b"record of round %d" % rounds.start], 100

    c, chosen, offered, moved = _catchup(ledg, monkeypatch)
    c.install_ledger(chosen)
    assert asked.count("p2") == 1  # tried once, then dropped
    assert sorted(offered) == sorted(b"record of round %d" % r for r in range(10))  # every piece, from p1
    assert moved == [10]  # the last piece's round


def test_a_piece_that_fails_its_tries_ends_the_download(monkeypatch):
    tries = []

    def ledg(contact, rounds, timeout, limit):
        tries.append((contact, rounds.start))
        raise PeerUnreachable(f"{contact} has left")

    c, chosen, offered, moved = _catchup(ledg, monkeypatch)
    with pytest.raises(PeerUnreachable):
        c.install_ledger(chosen)
    tried = {}
    for _, start in tries:
        tried[start] = tried.get(start, 0) + 1
    assert max(tried.values()) == PeerOptions(peer_id=0).piece_tries and not offered and not moved
