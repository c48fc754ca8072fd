"""Peers over the in-memory transport: equivalence with the simulator, joining, restarting,
partitions, authentication. Real processes over hivemind are in test_swarm.py (slow)."""

import json
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import pytest

from conftest import run_peers
from harness import FAST_PEER, Owned, wait_until
from onebyte.config import Aggregate, RunSpec, TrainConfig
from onebyte.errors import ConfigError, PeerUnreachable
from onebyte.lifecycle import wait_for_quorum
from onebyte.peer import Peer, PeerOptions
from onebyte.simulator import SimConfig, run_simulation
from onebyte.tasks.data import split_shards
from onebyte.training import Setup
from onebyte.transport.memory import MemoryHub, MemoryTransport

TRAIN = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")


_OWNED = Owned()  # the running test's (the fixture below replaces it for each test)


@pytest.fixture(autouse=True)
def owned() -> Iterator[Owned]:
    """Every peer a test opens (``_peers``, ``_OWNED(peer)``) is closed and every thread it starts
    (``owned.thread``) stopped and joined, pass or fail."""
    global _OWNED
    with Owned() as _OWNED:
        yield _OWNED


def _setup(train=TRAIN):
    return Setup.build(RunSpec(run_id="peer-test", model="tiny-gpt2", task="vader", train=train))


def _peers(hub, tmp_path, n, rounds, lockstep=0, secret=b"s", ids=None, train=TRAIN):
    peers = []
    for i, pid in enumerate(ids if ids is not None else range(n)):
        setup = _setup(train)
        shards = split_shards(setup.dataset.train, n, None, 0)
        opts = PeerOptions(peer_id=pid, rounds=rounds, lockstep=lockstep, secret=secret, **FAST_PEER)
        peers.append(_OWNED(Peer(setup, shards[i], MemoryTransport(hub, f"p{pid}"), tmp_path / f"p{pid}", opts)))
    return peers


def _run_all(peers, stop=None):
    return run_peers(peers, stop)


def _wait_for_quorum(p, stop=None):
    """What ``Peer.run`` does before its first round (``lifecycle.wait_for_quorum``)."""
    wait_for_quorum(p.gossip, p.replica, p.opts, p.round, stop)


def _quorum_checks(p: Peer) -> list[str]:
    """Each check a peer's quorum wait makes (``Gossip.waiting``), by the name of the thread that made it."""
    checks: list[str] = []
    waiting = p.gossip.waiting

    def counted():
        checks.append(threading.current_thread().name)
        return waiting()

    p.gossip.waiting = counted
    return checks


@contextmanager
def _quorum_waits(peers: list[Peer]) -> Iterator[dict[str, list[str]]]:
    """What each peer's quorum wait did, in order, by the name of its thread: "greet" for each DHT
    greeting, then how the wait ended (its log line: "... : starting", or "... starting anyway" when
    its quorum_timeout ran out)."""
    events: dict[str, list[str]] = defaultdict(list)
    for p in peers:
        def greet(real=p.gossip.greet):
            events[threading.current_thread().name].append("greet")
            return real()

        p.gossip.greet = greet

    class Ends(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events[record.threadName].append(record.getMessage())

    logger, handler = logging.getLogger("onebyte.lifecycle"), Ends(logging.INFO)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _until_started(events: list[str]) -> list[str]:
    """A quorum wait's events up to the line that ended it."""
    ends = [i for i, e in enumerate(events) if e != "greet"]
    assert ends, events
    return events[:ends[0] + 1]


@pytest.mark.parametrize("train", [TRAIN, replace(TRAIN, aggregate=Aggregate.MEDIAN),
                                   replace(TRAIN, aggregate=Aggregate.CLIPPED)], ids=["sum", "robust", "clipped"])
def test_lockstep_peers_equal_the_simulator(tmp_path, train):
    sim = run_simulation(SimConfig(model="tiny-gpt2", task="vader", peers=3, rounds=3, run_id="peer-test",
                             eval_size=8, train=train), tmp_path / "sim").summary
    summaries = _run_all(_peers(MemoryHub(), tmp_path, 3, rounds=3, lockstep=3, secret=b"", train=train))
    assert {s["state_hash"] for s in summaries} == {sim["state_hash"]}
    assert {s["set_digest"] for s in summaries} == {sim["set_digest"]}
    assert all(s["records_accepted"] == 9 and s["records_rejected"] == 0 for s in summaries), summaries[0]["rejections"]
    # each peer's metrics.jsonl: one line per round
    lines = [json.loads(x) for x in (tmp_path / "p0" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["round"] for ln in lines] == [0, 1, 2] and all(ln["train_loss"] > 0 for ln in lines)
    # records applied when round 2's line is written: a partner's last record may still be in flight
    assert 6 <= lines[-1]["records"] <= 9 and lines[-1]["forward_passes"] == summaries[0]["forward_passes"]


@pytest.mark.parametrize("train", [TRAIN, replace(TRAIN, aggregate=Aggregate.MEDIAN)], ids=["sum", "robust"])
def test_free_running_peers_agree_at_the_end(tmp_path, train):
    summaries = _run_all(_peers(MemoryHub(), tmp_path, 3, rounds=4, train=train))
    assert len({s["state_hash"] for s in summaries}) == 1
    assert len({s["set_digest"] for s in summaries}) == 1
    # a peer that starts a little late joins at the swarm's newest round, so some may have fewer rounds
    assert 9 <= summaries[0]["records"] <= 12


def test_a_peer_that_finishes_first_waits_while_slower_peers_progress(tmp_path):
    """A fast peer closes its rounds at the deadline and finishes long before a slow one. Its drain
    (1.5 s here) ends only after 1.5 s *without progress*, so it leaves with the slow peer's last records,
    not with the part that had reached it (the thin-link 8-peer run's disagreement). The slow peer
    measures round r only once the fast one has closed round r + 1, and its last round once the fast
    one is done: behind it, whatever the machine's speed."""
    fast, slow = _peers(MemoryHub(), tmp_path, 2, rounds=6)
    fast.opts = replace(fast.opts, drain_timeout=1.5, min_deadline=0.1, max_deadline=0.2)
    measure = slow._measure

    def slowly(r):
        wait_until(lambda: fast.done or fast.rounds_completed > r + 1, 120, f"the fast peer to pass round {r + 1}")
        return measure(r)

    slow._measure = slowly
    summaries = _run_all([fast, slow])
    last = json.loads((tmp_path / "p0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["round"] == 5 and last["records"] < summaries[0]["records"]  # finished without the slow one's last
    assert len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1
    assert max(r.round for r in fast.records.values() if r.peer_id == 1) == 5  # the slow peer's last record
    # (it may have started a round late, joining at the newest round: then 10 records, not 12)


def test_outsider_without_the_secret_gets_nothing_applied(tmp_path):
    import numpy as np

    from onebyte.codec import Codec
    from onebyte.record import build_record

    hub = MemoryHub()
    honest = _peers(hub, tmp_path, 2, rounds=3, secret=b"swarm-secret")
    tag = honest[0].tag
    evil = MemoryTransport(hub, "evil")
    import struct

    for r in range(3):  # well-formed records for this very run, tagged with a guessed secret
        raw = build_record(Codec.BYTE, tag, r, 7, 0, np.array([100.0, -100.0]), r, b"guess").to_bytes()
        evil.publish(r, raw)  # into the DHT slot of its own
        for target in ("p0", "p1"):  # and pushed straight at the honest peers
            evil.request(target, b"REC" + struct.pack("<H", len(raw)) + raw, 1.0)
    summaries = _run_all(honest)
    assert len({s["state_hash"] for s in summaries}) == 1
    assert all(s["records"] == 6 for s in summaries)  # only the two honest peers' records
    assert all(s["rejections"]["record authentication failed (wrong or missing swarm secret)"] >= 3
               for s in summaries)


def test_partition_heals(tmp_path, owned):
    hub = MemoryHub()
    peers = _peers(hub, tmp_path, 4, rounds=None)
    hub.partition([["p0", "p1"], ["p2", "p3"]])
    for p in peers:
        owned.thread(p.run, owned.stop)
    wait_until(lambda: all(p.rounds_completed >= 3 for p in peers), 120, "three rounds apart")
    assert peers[0].digest.hex() != peers[2].digest.hex()  # the two sides trained apart
    hub.heal()
    wait_until(lambda: all(p.rounds_completed >= 6 for p in peers), 120, "three rounds healed")
    owned.stop.set()
    owned.join()
    s = [p.summary() for p in peers]
    assert len({x["set_digest"] for x in s}) == 1, [x["records"] for x in s]
    assert len({x["state_hash"] for x in s}) == 1


def test_restart_and_join(tmp_path, owned):
    hub = MemoryHub()
    a, b = _peers(hub, tmp_path, 2, rounds=None)
    for p in (a, b):
        owned.thread(p.run, owned.stop)
    wait_until(lambda: a.rounds_completed >= 2 and b.rounds_completed >= 2, 120, "two rounds of a and b")
    # a newcomer joins from a snapshot
    c = _peers(hub, tmp_path, 3, rounds=None, ids=[2])[0]
    owned.thread(c.run, owned.stop)
    wait_until(lambda: c.rounds_completed >= 2, 120, "two rounds of the newcomer")
    assert c.round > 2  # started at the swarm's newest round, not from 0
    owned.stop.set()
    owned.join()
    # restart b from its own --out: nothing lost, nothing applied twice
    before = b.summary()
    b.close()
    b2 = _peers(hub, tmp_path, 2, rounds=None, ids=[1])[0]
    assert b2.summary()["set_digest"] == before["set_digest"]
    assert b2.summary()["state_hash"] == before["state_hash"]


def test_newcomer_with_another_base_or_config_is_refused_naming_the_setting(tmp_path, caplog):
    from onebyte.errors import ModelError, RunMismatch

    hub = MemoryHub()
    a = _peers(hub, tmp_path, 1, rounds=None)[0]
    other_cfg = Setup.build(RunSpec(run_id="peer-test", model="tiny-gpt2", task="vader",
                                    train=TrainConfig(samples=3, batch_size=8, tune="all")))
    other_base = Setup.build(RunSpec(run_id="peer-test", model="tiny-gpt2", task="vader", train=TRAIN))
    other_base.spec = type(other_base.spec)(other_base.spec.spec, "ab" * 32)
    with a, Peer(other_cfg, other_cfg.dataset.train, MemoryTransport(hub, "b"), tmp_path / "b",
                 PeerOptions(peer_id=5, secret=b"s", **FAST_PEER)) as b, \
            Peer(other_base, other_base.dataset.train, MemoryTransport(hub, "c"), tmp_path / "c",
                 PeerOptions(peer_id=6, secret=b"s", **FAST_PEER)) as c:
        a.beat(force=True)
        with pytest.raises(RunMismatch, match=r"train\.samples: 2 here, 3 there|train\.samples: 3 here, 2 there"):
            b.join()
        assert "train.batch_size" not in str(b.foreign_diff)  # only the setting that differs is named
        with pytest.raises(ModelError, match="another base model"):
            c.join()
        b.beat(force=True)
        a.beat(force=True)  # a sees b's heartbeat, asks for its configuration, logs what differs
        wait_until(lambda: 5 in a.foreign_diff, 10, "a to learn what differs in b's configuration")
    assert any("train.samples" in r.getMessage() for r in caplog.records if r.name == "onebyte.gossip")


def test_newcomer_catches_up_by_the_smaller_download_and_both_paths_agree(tmp_path):
    """After a few rounds the ledger (every record) is far smaller than a snapshot of all tuned
    weights: a newcomer takes it and replays it from the base; a newcomer told to take the snapshot
    ends at the same state."""
    hub = MemoryHub()
    a, b = _peers(hub, tmp_path, 2, rounds=3)
    _run_all([a, b])
    a.beat(force=True)
    for pid, mode in ((2, "auto"), (3, "snapshot")):
        setup = _setup()
        opts = PeerOptions(peer_id=pid, rounds=None, secret=b"s", catchup=mode, **FAST_PEER)
        c = Peer(setup, split_shards(setup.dataset.train, 4, None, 0)[pid], MemoryTransport(hub, f"p{pid}"),
                 tmp_path / f"p{pid}", opts)
        _OWNED(c)
        c.beat(force=True, sync=False)
        hb = c.members.live()[a.opts.peer_id]
        c.catchup.catch_up(hb)
        s = c.summary()
        assert (s["state_hash"], s["set_digest"]) == (a.state_hash(), a.summary()["set_digest"])
        assert c.round == a.round and s["records"] == 6
        joined = s["joined_by"]
        assert joined["ledger_bytes"] < joined["snapshot_bytes"]  # tiny-gpt2, every weight tuned
        assert joined["path"] == ("ledger" if mode == "auto" else "snapshot")
    with pytest.raises(ConfigError, match="catchup"):
        Peer(_setup(), [], MemoryTransport(hub, "p9"), tmp_path / "p9", PeerOptions(peer_id=9, catchup="torrent"))


def test_a_newcomer_takes_ledger_pieces_from_every_live_peer(tmp_path, monkeypatch, caplog):
    """With pieces of a round or two, the settled rounds' pieces come from all three live peers,
    not only the one whose round the newcomer takes, and the state is theirs exactly."""
    import onebyte.catchup as catchup_mod

    monkeypatch.setattr(catchup_mod, "LEDGER_PIECE", 200)  # about one round of three records per piece
    hub = MemoryHub()
    established = _peers(hub, tmp_path, 3, rounds=8)
    _run_all(established)
    for x in established:
        x.beat(force=True)
    setup = _setup()
    net = MemoryTransport(hub, "p7")
    net.request = _all_sources_asked_before_any_answers(net.request, {"p0", "p1", "p2"})
    c = _OWNED(Peer(setup, [], net, tmp_path / "p7",
                    PeerOptions(peer_id=7, rounds=None, secret=b"s", catchup="ledger", **FAST_PEER)))
    c.beat(force=True, sync=False)
    with caplog.at_level(logging.INFO, logger="onebyte.catchup"):
        c.catchup.catch_up(c.members.live()[0])
    served = {int(m.group(1), 16) for r in caplog.records
              if (m := re.search(r"ledger piece \d+ of \d+ from peer (\w+)", r.getMessage()))}
    assert served == {0, 1, 2}
    a = established[0]
    assert (c.state_hash(), c.summary()["set_digest"], c.round) == (a.state_hash(), a.summary()["set_digest"], a.round)


def _all_sources_asked_before_any_answers(request, sources: set[str]):
    """``request``, where each source's first ledger piece is answered only once every one of
    ``sources`` has been asked for one: each serves at least one piece, whatever the timing."""
    asked: set[str] = set()

    def piece_by_piece(contact, payload, timeout):
        if payload.startswith(b"LEDG") and contact not in asked:
            asked.add(contact)
            wait_until(lambda: asked >= sources, 30, f"a piece asked of each of {sorted(sources)}")
        return request(contact, payload, timeout)

    return piece_by_piece


def test_a_newcomer_whose_ledger_pieces_lack_records_syncs_them_before_its_first_round(tmp_path, monkeypatch):
    """One source serves pieces with a record missing from each: the newcomer sees that its settled
    rounds' digest is not the chosen peer's and fetches exactly what it lacks, before it trains.
    Another is older than deflated pieces (it answers the flag with nothing) and is asked plainly."""
    import onebyte.catchup as catchup_mod
    from onebyte.protocol import DEFLATE, ledger_reply, parse_ledger

    monkeypatch.setattr(catchup_mod, "LEDGER_PIECE", 200)
    hub = MemoryHub()
    established = _peers(hub, tmp_path, 3, rounds=8)
    _run_all(established)
    for x in established:
        x.beat(force=True)
    net = MemoryTransport(hub, "p7")
    request, dropped, plain = _all_sources_asked_before_any_answers(net.request, {"p0", "p1", "p2"}), [], []

    def lossy(contact, payload, timeout):
        if contact == "p2" and payload.startswith(b"LEDG"):
            if len(payload) == 4 + 9:  # a range and the DEFLATE flag: unknown to an older peer
                return b""
            plain.append(payload)
        reply = request(contact, payload, timeout)
        if contact == "p1" and payload.startswith(b"LEDG"):  # a source whose pieces each lack one record
            round_, raws = parse_ledger(reply, deflated=True)
            dropped.extend(raws[:1])
            reply = ledger_reply(round_, raws[1:], DEFLATE)
        return reply

    net.request = lossy
    c = _OWNED(Peer(_setup(), [], net, tmp_path / "p7", PeerOptions(peer_id=7, rounds=None, secret=b"s",
                                                                     catchup="ledger", **FAST_PEER)))
    c.beat(force=True, sync=False)
    c.catchup.catch_up(c.members.live()[0])
    c.apply_pending()
    assert dropped and plain  # p1 and p2 did serve some pieces
    a = established[0]
    assert (c.state_hash(), c.summary()["set_digest"]) == (a.state_hash(), a.summary()["set_digest"])


def test_a_newcomer_meets_the_swarm_through_its_join_peer_without_the_dht(tmp_path):
    """MEET: the join peer answers with its heartbeat and every live peer's, as their authors
    signed them; a newcomer whose DHT reads find nothing still learns all three and catches up."""
    hub = MemoryHub()
    established = _peers(hub, tmp_path, 3, rounds=4)
    _run_all(established)
    for x in established:
        x.beat(force=True)
    net = MemoryTransport(hub, "p7", join=("p0",))
    net.heartbeats = lambda: []  # the DHT finds no one
    c = Peer(_setup(), [], net, tmp_path / "p7", PeerOptions(peer_id=7, rounds=None, secret=b"s", **FAST_PEER))
    _OWNED(c)
    c.join()
    assert set(c.gossip.others()) == {0, 1, 2}
    assert 7 in established[0].gossip.others()  # the join peer met it too
    a = established[0]
    assert c.catchup.joined_by is not None and (c.state_hash(), c.round) == (a.state_hash(), a.round)
    forged = Peer(_setup(), [], MemoryTransport(hub, "p8", join=("p0",)), tmp_path / "p8",
                  PeerOptions(peer_id=8, rounds=None, secret=b"wrong", **FAST_PEER))
    _OWNED(forged)
    assert not forged.gossip.meet()  # its heartbeat fails p0's check, and p0's fails its own
    assert 8 not in a.gossip.others()
    from onebyte.protocol import meet_request, parse_meet

    assert a.handle(meet_request(forged.gossip.heartbeat().encode(b"wrong"))) == b""  # an outsider learns no one
    for x in [*established, a]:  # all live again for a (heartbeats expire after 3 s here)
        x.beat(force=True)
    assert len(parse_meet(a.handle(meet_request(c.gossip.heartbeat().encode(b"s"))))) == 3  # a, 1, 2 (not c itself)


def test_a_newcomer_tops_up_the_rounds_run_while_it_downloaded(tmp_path):
    """The swarm runs on while a newcomer downloads; before its first round it fetches those
    rounds' records (one small LEDG piece) instead of starting without them."""
    hub = MemoryHub()
    established = _peers(hub, tmp_path, 2, rounds=3)
    _run_all(established)
    a = established[0]
    c = Peer(_setup(), [], MemoryTransport(hub, "p7"), tmp_path / "p7",
             PeerOptions(peer_id=7, rounds=None, secret=b"s", catchup="ledger", **FAST_PEER))
    _OWNED(c)

    def hear_them():  # read their heartbeats without announcing ours: they never push to us
        a.beat(force=True)
        established[1].beat(force=True)
        for data in hub.beats.values():
            c.gossip.observe(data)

    hear_them()
    c.catchup.catch_up(c.gossip.others()[0])
    behind = c.round
    for x in established:
        x.opts = replace(x.opts, rounds=5)
    _run_all(established)
    hear_them()
    assert len(c.records) < len(a.records)
    assert c.catchup.start_round() == a.round > behind
    assert (c.state_hash(), c.summary()["set_digest"]) == (a.state_hash(), a.summary()["set_digest"])


def test_serving_newcomers_while_measuring_keeps_the_state_exact(tmp_path, owned):
    """SNAP and LEDG flush pending records into the state from the server's thread while the peer's
    own thread measures; both use the state's scratch buffer, so measuring holds the replica's lock.
    Hammering a peer with those requests during its rounds must leave it at its partner's state."""
    hub = MemoryHub()
    a, b = _peers(hub, tmp_path, 2, rounds=6)
    served = []

    def hammer():
        while not owned.stop.is_set():
            a.handle(b"LEDG")
            a.handle(b"SNAP")
            served.append(1)

    hammering = owned.thread(hammer)
    summaries = _run_all([a, b])
    owned.stop.set()
    hammering.join(timeout=60)
    assert served and not hammering.is_alive()
    assert summaries[0]["set_digest"] == summaries[1]["set_digest"]
    assert summaries[0]["state_hash"] == summaries[1]["state_hash"]  # b was not hammered


def test_first_round_waits_for_the_quorum(tmp_path, owned):
    """With min_peers=2 a lone peer measures nothing until a second one is live, then both train
    from round 0 together; a quorum that never comes is given up after quorum_timeout."""
    hub = MemoryHub()
    a, b = _peers(hub, tmp_path, 2, rounds=2)
    a.opts = replace(a.opts, min_peers=2)
    checks = _quorum_checks(a)
    owned.thread(a.run, name="a")
    wait_until(lambda: checks.count("a") >= 50, 60, "a to check its quorum 50 times")
    assert a.rounds_completed == 0 and not a.records  # waiting, not training alone
    owned.thread(b.run, name="b")
    owned.join()
    assert a.rounds_completed == b.rounds_completed == 2
    assert a.summary()["set_digest"] == b.summary()["set_digest"]
    assert {r.round for r in a.records.values() if r.peer_id == 1} == {0, 1}  # b's round 0 is in a's set

    lone = _peers(MemoryHub(), tmp_path / "lone", 1, rounds=1)[0]
    lone.opts = replace(lone.opts, min_peers=3, quorum_timeout=0.5)
    with _quorum_waits([lone]) as waits:
        lone.run()
    assert lone.rounds_completed == 1
    assert _until_started(waits[threading.current_thread().name])[-1].endswith("starting anyway")  # gave up


def test_a_waiting_peer_starts_when_the_swarm_has_started_without_it(tmp_path, owned):
    """Quorum views differ (over a thin link, greetings and DHT reads arrive late): a has its
    quorum, b (min_peers=3 here) never will. a's pushes still reach b, though b has been silent
    longer than a's liveness window (it waits, it greets rarely), and b starts at once instead of
    after its quorum_timeout or its next DHT read: its only greeting is the first."""
    hub = MemoryHub()
    a, b = _peers(hub, tmp_path, 2, rounds=2)
    a.opts = replace(a.opts, min_peers=2)
    b.opts = replace(b.opts, min_peers=3, quorum_timeout=60.0)
    a.gossip.members.ttl = 0.05  # b, silent while it waits, drops out of a's live peers at once
    checks = _quorum_checks(b)
    with _quorum_waits([a, b]) as waits:
        owned.thread(b.run, name="b")
        wait_until(lambda: checks.count("b") >= 20, 60, "b to wait, silent, past a's liveness window")
        owned.thread(a.run, name="a")
        owned.join()
    assert _until_started(waits["b"]) == ["greet", "peer 0 has started: starting"]
    # b joined the running swarm (whether a round was left for it depends on how fast a ran)
    assert a.summary()["set_digest"] == b.summary()["set_digest"]


def test_a_restarted_peer_still_waits_for_its_quorum(tmp_path):
    """The others' records in a restarted peer's ledger are not a swarm that has started: only a
    record or heartbeat of a round it has not reached is."""
    _run_all(_peers(MemoryHub(), tmp_path, 2, rounds=1))
    again = _peers(MemoryHub(), tmp_path, 1, rounds=2)[0]  # p0 again, from its directory, alone
    assert again.round == 1 and any(r.peer_id == 1 for r in again.records.values())
    again.opts = replace(again.opts, min_peers=2, quorum_timeout=0.5)
    with _quorum_waits([again]) as waits:
        _wait_for_quorum(again)
    ended = _until_started(waits[threading.current_thread().name])[-1]
    assert ended.startswith("only 1 of 2 peers live") and ended.endswith("starting anyway")  # nobody else came


def test_waiting_peers_introduce_newcomers_a_dht_read_missed(tmp_path, owned):
    """Four peers wait for all four. c's DHT read misses a and d's misses b (over a thin link a read
    can time out), so no peer has met all the others. Peers pass the heartbeats of peers new to
    them on, both ways: all four count four and start at once, instead of at their next DHT read
    20 s later (each greets the DHT once), or at their quorum timeout. Each starts once the one
    before it is waiting."""
    hub = MemoryHub()
    peers = _peers(hub, tmp_path, 4, rounds=1)
    for p in peers:
        p.opts = replace(p.opts, min_peers=4, quorum_timeout=60.0)

    def missing(owner):
        return lambda: [beat for name, beat in list(hub.beats.items()) if name != owner]

    peers[2].net.heartbeats, peers[3].net.heartbeats = missing("p0"), missing("p1")
    with _quorum_waits(peers) as waits:
        for i, p in enumerate(peers):
            if i:
                wait_until(lambda i=i: "greet" in waits[f"p{i - 1}"], 60, f"peer {i - 1} to wait for its quorum")
            owned.thread(p.run, name=f"p{i}")
        owned.join()
    for i in range(4):
        started = _until_started(waits[f"p{i}"])
        assert started[:-1] == ["greet"] and started[-1].endswith(": starting"), (i, started)
    assert all(len(p.members.peers()) == 4 for p in peers)
    assert len({p.summary()["set_digest"] for p in peers}) == 1


def test_a_waiting_peer_reads_the_dht_rarely_and_hears_of_newcomers_directly(tmp_path, owned):
    """While waiting for a quorum a peer reads the DHT once (then after 20 s, doubling up to every
    IDLE_REFRESH seconds), not every second: idle, it sends almost nothing. A newcomer greets it
    directly with its heartbeat, so it still starts as soon as the quorum is there, without
    reading the DHT again."""
    hub = MemoryHub()
    a, b = _peers(hub, tmp_path, 2, rounds=1)
    for p in (a, b):
        p.opts = replace(p.opts, min_peers=2, quorum_timeout=30.0)
    reads = []
    real = a.net.heartbeats
    a.net.heartbeats = lambda: reads.append(1) or real()
    checks = _quorum_checks(a)
    with _quorum_waits([a]) as waits:
        waiting = owned.thread(_wait_for_quorum, a, name="a")
        wait_until(lambda: checks.count("a") >= 100, 60, "a to check its quorum 100 times")
        assert waiting.is_alive() and len(reads) == 1  # one DHT read in 100 checks (a second or more)
        _wait_for_quorum(b)  # the newcomer reads the DHT, finds a and greets it
        owned.join()
    assert _until_started(waits["a"]) == ["greet", "2 peers live: starting"]  # no second DHT greeting
    assert b.opts.peer_id in a.members.live() and a.opts.peer_id in b.members.live()


class _NatHub(MemoryHub):
    """Two sites (p1, p2) that cannot reach each other, or read each other's copies; both reach p0."""

    def _visible(self, me: str, other: str) -> bool:
        return {me, other} != {"p1", "p2"}


def test_a_relay_passes_pushed_records_between_sites_that_cannot_reach_each_other(tmp_path):
    hub = _NatHub()
    peers = _peers(hub, tmp_path, 3, rounds=4)
    relay = peers[0]
    relay.opts = PeerOptions(**{**relay.opts.__dict__, "relay": True})
    summaries = _run_all(peers)
    assert len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1
    assert {s["records_accepted"] for s in summaries} == {12}
    # each site's records went to the other site through the relay, as they arrived
    assert summaries[0]["relayed"] >= 2 * 4 - 2 and summaries[1]["relayed"] == summaries[2]["relayed"] == 0


def test_a_mixed_swarm_in_lockstep_equals_the_simulator(tmp_path):
    """Two sites backpropagate (grad), two run forward passes (fzoo): one run (the scalar's meaning
    is the run's, how a site measures is its own), one (digest, hash), that of the simulator."""
    from onebyte.config import Estimator, Scalar, Step

    base = replace(TRAIN, estimator=Estimator.FZOO, samples=3, step=Step.MEAN)
    sites = [replace(base, estimator=Estimator.GRAD, scalar=Scalar.NORMALISED), base] * 2
    sim = run_simulation(SimConfig(model="tiny-gpt2", task="vader", peers=4, rounds=3, run_id="peer-test",
                                   eval_size=8, train=base, estimators=("grad", "fzoo")), tmp_path / "sim").summary
    hub, peers = MemoryHub(), []
    for pid, train in enumerate(sites):
        setup = _setup(train)
        assert setup.spec.run_tag.hex() == sim["run_tag"]
        shards = split_shards(setup.dataset.train, 4, None, 0)
        opts = PeerOptions(peer_id=pid, rounds=3, lockstep=4, **FAST_PEER)
        peers.append(Peer(setup, shards[pid], MemoryTransport(hub, f"p{pid}"), tmp_path / f"p{pid}", opts))
    for p in peers:
        _OWNED(p)
    summaries = _run_all(peers)
    assert {s["state_hash"] for s in summaries} == {sim["state_hash"]}
    assert {s["set_digest"] for s in summaries} == {sim["set_digest"]}
    assert [s["forward_passes"] for s in summaries] == [9, 12, 9, 12]  # grad: 3 per record; fzoo: K + 1


def test_peers_under_a_link_budget_send_fewer_scalars_and_still_agree(tmp_path):
    """A site with a link budget measures the largest K whose record fits (codec.fit_samples):
    here fewer than the run's 512, and the replicas still end on one (digest, hash)."""
    train = replace(TRAIN, samples=512)
    hub, peers = MemoryHub(), []
    for pid in range(3):
        setup = _setup(train)
        shards = split_shards(setup.dataset.train, 3, None, 0)
        opts = PeerOptions(peer_id=pid, rounds=3, lockstep=3, link_budget=600.0, **FAST_PEER)
        peers.append(Peer(setup, shards[pid], MemoryTransport(hub, f"p{pid}"), tmp_path / f"p{pid}", opts))
    for p in peers:
        _OWNED(p)
    summaries = _run_all(peers)
    assert len({(s["set_digest"], s["state_hash"]) for s in summaries}) == 1
    sent = [s["samples_sent"] for s in summaries]
    assert all(1 <= x["min"] and x["max"] < 512 for x in sent), sent
    assert all(s["link_budget"] == 600.0 for s in summaries)


def test_only_a_record_whose_push_failed_twice_goes_to_the_dht_copy_and_at_once(tmp_path, monkeypatch):
    hub = MemoryHub(bundle=8)  # held back until round 7 unless stored at once
    (peer,) = _peers(hub, tmp_path, 1, rounds=None)
    gossip, other = peer.gossip, SimpleNamespace(peer_id=9, contact="p9")
    sent = []

    def send(contact, data, timeout):
        sent.append(data)
        if data == b"lost":
            raise PeerUnreachable("dropped")

    monkeypatch.setattr(peer.net, "send", send)
    gossip.pushes._push_one(other, b"fine", False, (1, b"record-1"))
    gossip.pushes._push_one(other, b"lost", False, (2, b"record-2"))
    gossip.pushes._push_one(other, b"lost", False, (2, b"record-2"))  # the same record to another peer
    gossip._beater.submit(lambda: None).result(timeout=10)
    assert sent == [b"fine", b"lost", b"lost", b"lost", b"lost"]  # each failed push tried twice
    assert gossip.pushes.dht_copies == 1 and peer.summary()["dht_copies"] == 1
    assert hub.records[2] == {"p0": b"record-2"} and 1 not in hub.records  # visible now, not at round 7
    assert gossip.pushes.counts() == {"9": {"delivered": 1, "failed": 2}}


def _join_with_sources(tmp_path, monkeypatch, fails):
    """``join`` against two fake live sources (peer 1 with the most records); ``fails`` names those
    whose catch-up raises. Returns the tries in order."""
    (peer,) = _peers(hub := MemoryHub(), tmp_path, 1, rounds=None)
    del hub
    sources = {p: SimpleNamespace(peer_id=p, records=10 * p, round=p, contact=f"p{p}") for p in (1, 2)}
    tries = []

    def catch_up(hb):
        tries.append(hb.peer_id)
        if hb.peer_id in fails:
            raise PeerUnreachable(f"peer {hb.peer_id} has left")

    monkeypatch.setattr(peer.gossip, "meet", lambda: True)
    monkeypatch.setattr(peer.gossip, "others", lambda: dict(sources))
    monkeypatch.setattr(peer.catchup, "catch_up", catch_up)
    monkeypatch.setattr("onebyte.catchup.CATCHUP_BACKOFF", 0.01)
    return peer, tries


def test_a_newcomer_whose_catch_up_source_is_gone_tries_another(tmp_path, monkeypatch):
    peer, tries = _join_with_sources(tmp_path, monkeypatch, fails={2})
    peer.join()
    assert tries == [2, 1]  # the one with the most records first, then the other at once


def test_a_newcomer_that_cannot_catch_up_from_anyone_stops_after_bounded_tries(tmp_path, monkeypatch):
    from onebyte.catchup import CATCHUP_TRIES
    from onebyte.errors import CatchUpError

    peer, tries = _join_with_sources(tmp_path, monkeypatch, fails={1, 2})
    with pytest.raises(CatchUpError, match="could not catch up from any live peer"):
        peer.join()
    assert sorted(tries) == [1] * CATCHUP_TRIES + [2] * CATCHUP_TRIES and tries[0] == 2


def test_a_newcomer_its_join_peer_met_leaves_the_dht_alone_until_its_first_exchange(tmp_path, owned):
    """What joining costs is mostly DHT walks (each fetches every peer's signed heartbeat from each
    node it asks). A newcomer whose join peer answered MEET holds every live peer's heartbeat and is
    introduced by it: its quorum wait neither stores nor reads the DHT. Its first heartbeat exchange
    does both (it has heard of peers new to it): without its heartbeat in the DHT, two swarms that
    merge later (the partition lab) did not all learn of it and ended on two sets. The first peer,
    which no join peer met, stores its heartbeat there too."""
    hub = MemoryHub()
    (a,) = _peers(hub, tmp_path, 1, rounds=1)
    setup = _setup()
    b = _OWNED(Peer(setup, split_shards(setup.dataset.train, 2, None, 0)[1], MemoryTransport(hub, "p1", join=("p0",)),
                    tmp_path / "p1", PeerOptions(peer_id=1, rounds=1, secret=b"s", **FAST_PEER)))
    for p in (a, b):  # no staleness: pushes keep a view fresh for 2 heartbeat intervals
        p.opts = replace(p.opts, min_peers=2, quorum_timeout=30.0, heartbeat_interval=30.0)
    calls: dict[str, list[str]] = defaultdict(list)
    for p, name in ((a, "a"), (b, "b")):
        store, read = p.net.announce, p.net.heartbeats
        p.net.announce = lambda hb, ttl=None, s=store, n=name: calls[n].append("store") or s(hb, ttl)
        p.net.heartbeats = lambda r=read, n=name: calls[n].append("read") or r()
    owned.thread(_wait_for_quorum, a, name="a")
    wait_until(lambda: calls["a"], 30, "a to greet the DHT while it waits")
    b.join()  # MEET: a answers with its heartbeat, and meets b
    _wait_for_quorum(b)
    owned.join()
    assert b.gossip.met and 0 in b.members.live() and 1 in a.members.live()
    assert calls["b"] == []  # joining and the quorum wait: MEET and introductions, no DHT walk
    waited = len(calls["a"])
    for p in (a, b):
        p.catchup.start_round()
        wait_until(lambda p=p: p.gossip._beating is None or p.gossip._beating.done(), 30, "the first exchange")
    assert "store" in calls["b"]  # the DHT's copy of the swarm, for swarms that merge later
    assert "store" in calls["a"][waited:]  # and for newcomers no join peer answers
