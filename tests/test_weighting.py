"""Sites weighted by their examples (``Weighting``): each heartbeat advertises its site's count, and
a site weighs its records against the mean it has heard. Peers over the in-memory transport."""

from collections.abc import Iterator
from dataclasses import replace

import pytest

from conftest import run_peers
from harness import FAST_PEER, Owned
from onebyte.config import RunSpec, TrainConfig, Weighting
from onebyte.modes import swarm_reference
from onebyte.peer import Peer, PeerOptions
from onebyte.simulator import SimConfig, run_simulation
from onebyte.tasks.data import split_shards
from onebyte.training import Setup
from onebyte.transport.memory import MemoryHub, MemoryTransport

TRAIN = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")
SPLIT, SEED = 0.3, 1  # Dirichlet(0.3) over 3 peers: shards of unequal size


@pytest.fixture
def owned() -> Iterator[Owned]:
    with Owned() as o:
        yield o


def _peers(owned: Owned, tmp_path, train: TrainConfig, rounds: int) -> list[Peer]:
    spec = RunSpec(run_id="weights", model="tiny-gpt2", task="vader", train=train)
    setups = [Setup.build(spec) for _ in range(3)]
    shards = split_shards(setups[0].dataset.train, 3, SPLIT, SEED)
    hub = MemoryHub()
    return [owned(Peer(setups[i], shards[i], MemoryTransport(hub, f"p{i}"), tmp_path / f"p{i}",
                       PeerOptions(peer_id=i, rounds=rounds, lockstep=3, secret=b"", **FAST_PEER))) for i in range(3)]


def test_unequal_sites_in_lockstep_weigh_as_the_simulator_does(tmp_path, owned):
    """Each heartbeat carries its site's count; peers that have heard each other weigh themselves
    against the same mean as the simulator, which knows every count: one (digest, hash)."""
    peers = _peers(owned, tmp_path, TRAIN, rounds=3)
    sizes = [len(p.shard) for p in peers]
    weights = [TRAIN.site_weight(n, swarm_reference(sizes)) for n in sizes]
    assert len(set(weights)) > 1 and 1.0 not in weights  # the weights matter here
    assert [p.gossip.heartbeat().examples for p in peers] == sizes
    summaries = run_peers(peers)
    sim = run_simulation(SimConfig(model="tiny-gpt2", task="vader", peers=3, rounds=3, run_id="weights",
                                   split=f"dirichlet:{SPLIT}", seed=SEED, eval_size=0, train=TRAIN),
                         tmp_path / "sim").summary
    assert {(s["state_hash"], s["set_digest"]) for s in summaries} == {(sim["state_hash"], sim["set_digest"])}


@pytest.mark.parametrize("train", [replace(TRAIN, weighting=Weighting.EQUAL), replace(TRAIN, reference_examples=40)],
                         ids=["equal", "pinned"])
def test_a_site_that_does_not_learn_the_reference_keeps_its_count(tmp_path, owned, train):
    assert not train.learns_reference
    assert {p.gossip.heartbeat().examples for p in _peers(owned, tmp_path, train, rounds=1)} == {0}
