"""The round's relay tree (overlay): every peer gets each record once, fan-out bounded, small swarms a mesh."""

from __future__ import annotations

from collections import Counter

import pytest

from harness import FAST_PEER
from onebyte.overlay import DEGREE, mesh, neighbours, onward, order


def spread(r: int, author: int, peers: list[int], degree: int = DEGREE,
           view=None) -> tuple[Counter, Counter, set[int], bool]:
    """Flood ``author``'s record along the tree as relays would (seen set: a peer passes it on once):
    copies received per peer, copies sent per peer, the peers reached, and whether the flood ended.
    ``view(p)``: the peers p knows of (all of ``peers`` by default)."""
    got, sent, seen = Counter(), Counter(), {author}
    frontier = [(author, p) for p in neighbours(r, author, peers, degree)]
    for _ in range(len(peers) + 1):  # bounded: each peer passes it on once, so the flood ends by then
        nxt = []
        for sender, p in frontier:
            sent[sender] += 1
            got[p] += 1
            if p not in seen:
                seen.add(p)
                nxt += [(p, q) for q in onward(r, p, author, view(p) if view else peers, degree)]
        frontier = nxt
        if not frontier:
            break
    return got, sent, seen, not frontier


@pytest.mark.parametrize("n", [2, 5, DEGREE + 1, DEGREE + 2, 16, 33, 200])
def test_every_peer_receives_each_record_exactly_once(n):
    peers = [1000 + 7 * i for i in range(n)]
    for r in range(3):
        for author in peers[:: max(1, n // 5)]:
            got, sent, _, _ = spread(r, author, peers)
            assert set(got) == set(peers) - {author}
            assert set(got.values()) == {1}
            assert max(sent.values()) <= DEGREE
            assert sum(sent.values()) == n - 1


def test_small_swarms_stay_a_full_mesh():
    peers = list(range(DEGREE + 1))
    assert mesh(len(peers)) and not mesh(len(peers) + 1)
    for me in peers:
        assert sorted(neighbours(5, me, peers)) == [p for p in peers if p != me]
        assert onward(5, me, (me + 1) % len(peers), peers) == []


def test_fan_out_is_bounded_and_the_tree_changes_with_the_round():
    peers = list(range(1000))
    degrees = [len(neighbours(3, p, peers)) for p in peers]
    assert max(degrees) <= DEGREE and min(degrees) >= 1
    assert order(3, peers) != order(4, peers)
    assert order(3, reversed(peers)) == order(3, peers)  # the same tree whatever order the view lists


def test_a_view_missing_a_peer_still_reaches_the_rest_or_repair_does():
    """Peers that disagree on who is there: no record is passed on twice by one peer (bounded), and
    the peers the tree misses are what repair is for."""
    peers = list(range(40))
    r, author = 7, 3
    # half the peers never heard of 11
    _, sent, seen, ended = spread(r, author, peers, view=lambda p: [q for q in peers if q != 11] if p % 2 else peers)
    assert ended
    assert max(sent.values()) <= DEGREE
    assert len(seen) >= 30  # most are reached; the rest are fetched by the round-start repair


# ---------------------------------------------------------------------------------------------
# A swarm larger than a mesh, over the in-memory transport
# ---------------------------------------------------------------------------------------------

def _swarm(tmp_path, n, rounds, lockstep=0):
    from onebyte.config import RunSpec, TrainConfig
    from onebyte.peer import Peer, PeerOptions
    from onebyte.tasks.data import split_shards
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    hub, train = MemoryHub(), TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")
    setup = Setup.build(RunSpec(run_id="overlay-test", model="tiny-gpt2", task="vader", train=train))
    shards = split_shards(setup.dataset.train, n, None, 0)
    peers = []
    for i in range(n):
        s = Setup.build(RunSpec(run_id="overlay-test", model="tiny-gpt2", task="vader", train=train))
        opts = PeerOptions(peer_id=i, rounds=rounds, lockstep=lockstep, secret=b"overlay", **FAST_PEER)
        peers.append(Peer(s, shards[i], MemoryTransport(hub, f"p{i}"), tmp_path / f"p{i}", opts))
    return peers


@pytest.fixture
def swarm(tmp_path):
    made = []

    def make(n, rounds, lockstep=0):
        made.extend(_swarm(tmp_path, n, rounds, lockstep))
        return made

    yield make
    for p in made:
        p.close()


def test_a_swarm_beyond_a_mesh_equals_the_simulator_and_authors_push_to_at_most_degree(tmp_path, swarm):
    from conftest import run_peers
    from onebyte.config import TrainConfig
    from onebyte.simulator import SimConfig, run_simulation

    n, rounds = DEGREE + 4, 3
    peers = swarm(n, rounds, lockstep=n)
    own: Counter = Counter()  # (author, round): peers its record was pushed to by its author

    def counting(p):
        send = p.gossip.pushes.send

        def sent(other, message, with_heartbeat=False, record=None, missed=None):
            if record is not None:
                own[(p.opts.peer_id, record[0])] += 1
            send(other, message, with_heartbeat, record, missed)
        return sent

    for p in peers:
        p.gossip.pushes.send = counting(p)
    summaries = run_peers(peers)
    sim = run_simulation(SimConfig(model="tiny-gpt2", task="vader", peers=n, rounds=rounds, run_id="overlay-test",
                                   eval_size=0, train=TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")),
                         tmp_path / "sim").summary
    assert {(s["set_digest"], s["state_hash"]) for s in summaries} == {(sim["set_digest"], sim["state_hash"])}
    assert all(s["records_accepted"] == n * rounds for s in summaries)
    # records travelled the tree: relays passed them on, and no author pushed its record to everyone
    assert sum(p.gossip.pushes.relayed for p in peers) > 0
    assert len(own) == n * rounds and max(own.values()) <= DEGREE


def test_relays_that_alter_records_have_them_refused_and_the_swarm_still_agrees(swarm):
    """Relays may drop records, never alter them: a tampered copy fails the author's tag everywhere,
    and the records it stood for come from their authors (the round-start fetch, anti-entropy)."""
    from conftest import run_peers

    peers = swarm(DEGREE + 3, 3)

    def tampering(pushes):
        honest = pushes.relay

        def relay(other, record, missed):
            altered = bytearray(record)
            altered[-20] ^= 0xFF  # a payload byte, under the author's tag
            honest(other, bytes(altered), missed)
        return relay

    for p in peers:  # every relay alters what it passes on
        p.gossip.pushes.relay = tampering(p.gossip.pushes)
    summaries = run_peers(peers)
    assert len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1
    assert summaries[0]["records"] == len(peers) * 3
    assert sum(p.gossip.pushes.relayed for p in peers) > 0
    assert sum(s["records_rejected"] for s in summaries) >= sum(p.gossip.pushes.relayed for p in peers)
