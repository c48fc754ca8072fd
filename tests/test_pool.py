"""The seed pool: totals beside the state, the coefficient snapshot, and a newcomer that joins from it.

The whole join over the in-memory swarm (a Peer taking a live peer's coefficients) is at the end."""

import logging
import random
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest

from conftest import Toy
from harness import FAST_PEER
from onebyte.config import Aggregate, Directions, Run, RunSpec, Step, TrainConfig
from onebyte.errors import ConfigError, LedgerError, ProtocolError
from onebyte.pool import Coefficients, PoolTotals, group_fracs, rebuild
from onebyte.protocol import Verb, parse_coefficients
from onebyte.record import build_record
from onebyte.replica import Replica
from onebyte.seeds import direction_seeds, pool_indices, pool_seeds
from onebyte.server import Server
from onebyte.state import FixedPointState

RUN = b"p" * 16
SECRET = b"s"
POOL = 16
TRAIN = TrainConfig(lr=1e-3, step=Step.SCALAR, directions=Directions.DISTINCT, samples=3, seed_pool=POOL)


def _state():
    return FixedPointState(sorted(Toy().named_parameters()))


def _records(rounds, peers=4, count=3, seed=0):
    rng = np.random.default_rng(seed)
    return [build_record(TRAIN.codec, RUN, r, p, 0, rng.normal(size=count) * 50.0, r * peers + p, SECRET)
            for r in range(rounds) for p in range(peers)]


def _replica(records=(), train=TRAIN, out=None):
    rep = Replica.open(out, _state(), train, RUN) if out is not None else Replica(_state(), train, RUN)
    rep.add(list(records))
    return rep


def _server(rep, position):
    return Server(rep, offer=lambda _d: False, receive=lambda _r, _h: None, position=lambda: position,
                  config=lambda: b"{}", flush=rep.flush)


def test_pool_directions_are_a_permutation_of_the_pool_and_every_replica_draws_the_same():
    idx = pool_indices(RUN, 64, round_=5, peer=3, first_sample=0, count=64)
    assert sorted(idx) == list(range(64))  # 64 directions of one (round, peer): all distinct
    assert idx != pool_indices(RUN, 64, round_=6, peer=3, first_sample=0, count=64)  # another round, another draw
    seeds = direction_seeds(RUN, False, 5, 3, 0, 64, pool=64)
    assert set(seeds) == set(pool_seeds(RUN, 64)) and seeds == direction_seeds(RUN, False, 5, 3, 0, 64, pool=64)
    assert direction_seeds(RUN, False, 5, 3, 0, 4) != seeds[:4]  # no pool: today's seeds, unchanged


def test_seed_pool_setting_validates_and_enters_the_run_tag_only_when_set():
    assert TrainConfig().seed_pool == 0 and "seed_pool" not in TrainConfig().canonical()  # old run tags kept
    assert TrainConfig(seed_pool=4096).canonical()["seed_pool"] == 4096
    for bad in (1000, -2, 1 << 21, True):
        with pytest.raises(ConfigError, match="train.seed_pool"):
            TrainConfig(seed_pool=bad).validate()
    spec = RunSpec(run_id="x", model="tiny-gpt2", task="vader")
    pooled = replace(spec, train=replace(spec.train, seed_pool=1024))
    assert Run(spec, "ab" * 32).run_tag != Run(pooled, "ab" * 32).run_tag


@pytest.mark.parametrize("train", [TRAIN, replace(TRAIN, aggregate=Aggregate.MEDIAN)], ids=["sum", "median"])
def test_totals_are_the_same_after_any_record_order_and_rebuild_the_state(train):
    """Records applied in random orders and batches (an equivocation among them): one state hash and
    one set of totals, and base + sum_p C_p z_p rebuilt on a fresh state has that hash."""
    recs = _records(6)
    recs.append(build_record(train.codec, RUN, 2, 1, 0, np.ones(3), 99, SECRET))  # peer 1 equivocates in round 2
    seen = set()
    for seed in range(6):
        order = recs[:]
        random.Random(seed).shuffle(order)
        rep = Replica(_state(), train, RUN)
        i = 0
        while i < len(order):
            n = random.Random(seed + 100 + i).randint(1, 5)
            rep.add(order[i:i + n])
            i += n
        seen.add((rep.state_hash(), rep.pool.c.tobytes()))
    assert len(seen) == 1
    shash, totals = seen.pop()
    assert np.frombuffer(totals, dtype=np.int64).any()
    coefs = rep.coefficients(6)
    fresh = _state()
    rebuild(fresh, Coefficients.from_bytes(coefs.to_bytes()))
    assert fresh.state_hash() == shash == coefs.state_hash.hex()


def test_totals_follow_an_undo():
    rep = _replica(_records(3))
    before = rep.pool.c.copy()
    rep.add([build_record(TRAIN.codec, RUN, 3, 0, 0, np.ones(3), 7, SECRET)])
    rep.withdraw(0, 3)  # undone exactly: the totals are back where they were
    assert np.array_equal(rep.pool.c, before)


def test_a_damaged_truncated_or_lying_snapshot_is_refused_in_one_line():
    rep = _replica(_records(4))
    data = rep.coefficients(4).to_bytes()
    assert len(data) == 4 * POOL * len(group_fracs(rep.state)) + 108 + len(group_fracs(rep.state))
    flipped = bytearray(data)
    flipped[-10] ^= 1
    for bad, why in ((data[:-1], "truncated"), (data[:20], "truncated"), (bytes(flipped), "checksum"),
                     (b"X" + data[1:], "magic"), (data[:6] + b"\x09" + data[7:], "version 9")):
        with pytest.raises(LedgerError, match=why) as exc:
            Coefficients.from_bytes(bad)
        assert "\n" not in str(exc.value)
    # a well-formed snapshot whose totals do not give its state hash: refused, the state left at the base
    coefs = Coefficients.from_bytes(data)
    totals = coefs.totals.copy()
    totals[3, 0] += 1
    lying = replace(coefs, totals=totals)
    fresh = _state()
    base = fresh.state_hash()
    with pytest.raises(LedgerError, match="does not match its state hash"):
        rebuild(fresh, Coefficients.from_bytes(lying.to_bytes()))
    assert fresh.state_hash() == base
    # and the newcomer's install refuses it too, holding nothing
    newcomer = Replica(_state(), TRAIN, RUN)
    with pytest.raises(LedgerError):
        newcomer.install_coefficients(lying.to_bytes(), 0, [], SECRET)
    assert not newcomer.records and newcomer.state_hash() == base


def test_a_newcomer_refuses_coefficients_a_live_peer_contradicts():
    rep = _replica(_records(4))
    coefs = rep.coefficients(4)
    newcomer = Replica(_state(), TRAIN, RUN)
    claims = [(9, coefs.set_digest.hex(), "00" * 32)]  # peer 9 holds the same set with another state
    with pytest.raises(ProtocolError, match="another state"):
        newcomer.install_coefficients(coefs.to_bytes(), 0, [], SECRET, claims)
    assert not newcomer.records


def test_a_newcomer_joins_from_coefficients_refuses_covered_rounds_and_restarts_from_its_directory(tmp_path):
    recs = _records(20)
    recs.append(build_record(TRAIN.codec, RUN, 15, 2, 0, np.ones(3), 77, SECRET))  # peer 2 equivocates in round 15
    server = _replica(recs)
    coefs, tail_from, raws = parse_coefficients(_server(server, 20).handle(Verb.COEF.value))
    assert tail_from == 12 and len(raws) == 8 * 4 + 1  # the last TAIL_ROUNDS rounds come as records
    newcomer = _replica(out=tmp_path / "n")
    newcomer.install_coefficients(coefs, tail_from, raws, SECRET,
                                  [(0, server.digest.hex(), server.state_hash())])
    assert (newcomer.digest.hex(), newcomer.state_hash()) == (server.digest.hex(), server.state_hash())
    assert newcomer.closed_digest(15) == server.closed_digest(15)
    assert newcomer.base_round == 11  # rounds 0..11 are in its totals only: their records are refused
    assert newcomer.flagged == server.flagged == {2}
    # the swarm goes on: both apply round 20; the newcomer's totals stay the server's
    more = [build_record(TRAIN.codec, RUN, 20, p, 0, np.full(3, 3.0), 500 + p, SECRET) for p in range(4)]
    server.add(more)
    newcomer.add(more)
    assert newcomer.state_hash() == server.state_hash() and np.array_equal(newcomer.pool.c, server.pool.c)
    # it serves coefficients on in turn, from what it holds
    again = Replica(_state(), TRAIN, RUN)
    c2, t2, r2 = parse_coefficients(_server(newcomer, 21).handle(Verb.COEF.value))
    again.install_coefficients(c2, t2, r2, SECRET)
    assert again.state_hash() == server.state_hash()
    # restarted from its directory (coefficients.obc + ledger + snapshot): the same set and state
    newcomer.save_snapshot(21)
    want = (newcomer.digest.hex(), newcomer.state_hash(), newcomer.pool.c.tobytes())
    newcomer.ledger.close()
    back = Replica.open(tmp_path / "n", _state(), TRAIN, RUN)
    assert (back.digest.hex(), back.state_hash(), back.pool.c.tobytes()) == want
    (tmp_path / "n" / "snapshot.safetensors").unlink()  # without its snapshot: join file + ledger alone
    back.ledger.close()
    back = Replica.open(tmp_path / "n", _state(), TRAIN, RUN)
    assert (back.digest.hex(), back.state_hash(), back.pool.c.tobytes()) == want


def test_a_pool_replica_restarts_with_its_totals(tmp_path):
    """Reopened from snapshot + ledger, or from the ledger alone: the same state and the same totals."""
    rep = _replica(_records(5), out=tmp_path / "r")
    rep.save_snapshot(5)
    rep.add(_records(9)[5 * 4:])
    want = (rep.state_hash(), rep.pool.c.tobytes())
    rep.ledger.close()
    for drop in (False, True):
        if drop:
            (tmp_path / "r" / "snapshot.safetensors").unlink()
        back = Replica.open(tmp_path / "r", _state(), TRAIN, RUN)
        assert (back.state_hash(), back.pool.c.tobytes()) == want
        back.ledger.close()


def test_the_coefficient_download_does_not_grow_with_history():
    """The COEF reply after 10 rounds and after 400 is the same number of bytes (P x groups totals,
    plus the last TAIL_ROUNDS rounds as records); the ledger grows forty-fold."""
    sizes, ledgers = [], []
    for rounds in (10, 400):
        rep = _replica(_records(rounds))
        sizes.append(len(_server(rep, rounds).handle(Verb.COEF.value)))
        ledgers.append(sum(len(r.to_bytes()) for r in rep.applied_records()))
    assert sizes[0] == sizes[1] and ledgers[1] == 40 * ledgers[0]


def test_a_run_without_a_pool_serves_no_coefficients():
    rep = _replica(train=replace(TRAIN, seed_pool=0))
    assert rep.pool is None and _server(rep, 0).handle(Verb.COEF.value) == b""


def test_totals_refuse_a_direction_outside_the_pool():
    totals = PoolTotals(RUN, POOL, (20,))
    with pytest.raises(ValueError, match="not in the run's seed pool"):
        totals.add([(12345, {20: 1})])


def test_checksum_covers_the_header():
    data = bytearray(_replica(_records(2)).coefficients(2).to_bytes())
    data[30] ^= 0xFF  # inside the round / records fields
    with pytest.raises(LedgerError):
        Coefficients.from_bytes(bytes(data))
    body = bytes(data[:-4])
    with pytest.raises(LedgerError):  # re-checksummed: parses, but names another round or count
        c = Coefficients.from_bytes(body + struct.pack("<I", zlib.crc32(body)))
        rebuild(_state(), replace(c, state_hash=b"\0" * 32))


def test_a_newcomer_in_an_in_memory_swarm_joins_from_coefficients(tmp_path, caplog):
    """Two peers of a pool run train 12 rounds; a newcomer (catchup = auto) joins from peer 0's
    coefficients over the in-memory transport: it ends on their (digest, hash), at their round, holding
    records only of the last rounds, and refuses a record of a round its totals cover. A newcomer handed
    tampered coefficients refuses them and joins by the ledger instead, on the same state."""
    from conftest import run_peers
    from onebyte.peer import Peer, PeerOptions
    from onebyte.tasks.data import split_shards
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    train = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all", seed_pool=64)
    hub, peers = MemoryHub(), []
    try:
        for pid in range(4):
            setup = Setup.build(RunSpec(run_id="pool-test", model="tiny-gpt2", task="vader", train=train))
            shard = split_shards(setup.dataset.train, 4, None, 0)[pid]
            opts = PeerOptions(peer_id=pid, rounds=12 if pid < 2 else None, secret=b"s", **FAST_PEER)
            peers.append(Peer(setup, shard, MemoryTransport(hub, f"p{pid}"), tmp_path / f"p{pid}", opts))
        a, b, c, d = peers
        run_peers([a, b])
        a.beat(force=True)
        c.beat(force=True, sync=False)
        c.catchup.catch_up(c.members.live()[a.opts.peer_id])
        joined = c.catchup.joined_by
        assert joined["path"] == "coefficients" and joined["tail_records"] == 2 * 8
        assert (c.state_hash(), c.replica.digest.hex()) == (a.state_hash(), a.replica.digest.hex())
        assert c.round == a.round and len(c.replica.records) == 2 * 8 < len(a.replica.records)
        assert c.summary()["records"] == a.summary()["records"] == 2 * 12  # the covered rounds count too
        old = next(r for r in a.replica.records.values() if r.round == 0)
        assert c.intake.offer(old.to_bytes()) is False and c.state_hash() == a.state_hash()
        # a record c lacks (a round after its join): anti-entropy asks for the rounds since the join only
        late = build_record(train.codec, a.tag, a.round, 0, 0, np.full(2, 0.5), 1, b"s")
        assert a.intake.offer(late.to_bytes()) and a.apply_pending() == 1
        a.beat(force=True)
        with caplog.at_level(logging.INFO, logger="onebyte.repair"):
            c.gossip.repair.reconcile(c.members.live()[a.opts.peer_id])
        assert "since our coefficient join" in caplog.text  # not a GET of every id it lacks (the history)
        c.apply_pending()
        assert len(c.replica.records) == 2 * 8 + 1 and c.state_hash() == a.state_hash()

        honest = d.client.coef

        def tampered(contact, size=None):
            data, tail_from, raws = honest(contact, size)
            coefs = Coefficients.from_bytes(data)
            totals = coefs.totals.copy()
            totals[0, 0] += 1
            return replace(coefs, totals=totals).to_bytes(), tail_from, raws

        d.client.coef = tampered
        d.beat(force=True, sync=False)
        d.catchup.catch_up(d.members.live()[a.opts.peer_id])
        assert d.catchup.joined_by["path"] == "ledger" and d.state_hash() == a.state_hash()
    finally:
        for p in peers:
            p.close()


@pytest.mark.parametrize("aggregate", [Aggregate.SUM, Aggregate.CLIPPED], ids=["sum", "clipped"])
def test_lockstep_peers_with_a_pool_equal_the_simulator_and_its_totals(tmp_path, aggregate):
    """swarm = simulate holds with a seed pool: same state hash, digest and totals; the totals rebuild
    the simulator's state from the base; and the pool changes the run (another hash than no pool)."""
    from conftest import run_peers
    from onebyte.peer import Peer, PeerOptions
    from onebyte.simulator import SimConfig, run_simulation
    from onebyte.tasks.data import split_shards
    from onebyte.training import Setup
    from onebyte.transport.memory import MemoryHub, MemoryTransport

    train = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all", seed_pool=8, aggregate=aggregate)
    sims = {p: run_simulation(SimConfig(model="tiny-gpt2", task="vader", peers=3, rounds=3, run_id="pool-test",
                                        eval_size=0, train=replace(train, seed_pool=p)), tmp_path / f"sim{p}")
            for p in (8, 0)}
    assert sims[8].summary["state_hash"] != sims[0].summary["state_hash"]
    hub, peers = MemoryHub(), []
    try:
        for pid in range(3):
            setup = Setup.build(RunSpec(run_id="pool-test", model="tiny-gpt2", task="vader", train=train))
            shard = split_shards(setup.dataset.train, 3, None, 0)[pid]
            peers.append(Peer(setup, shard, MemoryTransport(hub, f"p{pid}"), tmp_path / f"p{pid}",
                              PeerOptions(peer_id=pid, rounds=3, lockstep=3, secret=b"", **FAST_PEER)))
        summaries = run_peers(peers)
        assert {s["state_hash"] for s in summaries} == {sims[8].summary["state_hash"]}
        assert {s["set_digest"] for s in summaries} == {sims[8].summary["set_digest"]}
        coefs = peers[0].replica.coefficients(3)
        assert all(np.array_equal(p.replica.pool.c, peers[0].replica.pool.c) for p in peers)
        fresh = Setup.build(RunSpec(run_id="pool-test", model="tiny-gpt2", task="vader", train=train))
        rebuild(fresh.state, Coefficients.from_bytes(coefs.to_bytes()))
        assert fresh.state.state_hash() == sims[8].summary["state_hash"]
    finally:
        for p in peers:
            p.close()


@pytest.mark.parametrize("base_round, synced", [(-1, True), (5, False)], ids=["no join", "coefficient join"])
def test_anti_entropy_skips_only_what_a_coefficient_join_cannot_compare(base_round, synced):
    """A finished peer whose rounds are all before 2 (closed -1) is still synced with by a replica that
    never joined from coefficients; a replica whose totals hold rounds <= 5 skips it."""
    from types import SimpleNamespace

    from onebyte.options import PeerOptions
    from onebyte.repair import Repair

    other = SimpleNamespace(peer_id=1, digest=bytes(32), closed=-1, closed_digest=bytes(32), done=True, contact="p1")
    replica = SimpleNamespace(digest=SimpleNamespace(hex=lambda: "11" * 32), base_round=base_round,
                              closed_digest=lambda _r: bytes(32))
    members = SimpleNamespace(live=lambda: {1: other})
    opts = PeerOptions(peer_id=0)
    repair = Repair(SimpleNamespace(net=None), lambda: opts, replica, None, members, None, lambda: (1, False))
    asked = []
    repair.reconcile = asked.append
    repair.sync()
    assert asked == ([other] if synced else [])
