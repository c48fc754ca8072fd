"""Hostile and broken peers: each defence has a test that fails without it."""

import struct

import numpy as np
import pytest

import onebyte.intake as intake_mod
from onebyte.cli import main
from onebyte.codec import Codec
from onebyte.config import RunSpec, TrainConfig
from onebyte.peer import Peer, PeerOptions
from onebyte.record import build_record
from onebyte.training import Setup
from onebyte.transport.memory import MemoryHub, MemoryTransport
from onebyte.update import MAX_STEP_UNITS, apply_records, effective

TRAIN = TrainConfig(samples=2, batch_size=8, lr=1e-3, tune="all")
SECRET = b"s" * 16


@pytest.fixture
def victim(tmp_path):
    """A peer that never runs rounds, offered hostile input; closed however the test ends."""
    setup = Setup.build(RunSpec(run_id="hostile", model="tiny-gpt2", task="vader", train=TRAIN))
    with Peer(setup, setup.dataset.train[:50], MemoryTransport(MemoryHub(), "v"), tmp_path / "v",
              PeerOptions(peer_id=1, secret=SECRET)) as p:
        yield p


def _rec(p, round_=0, peer=9, g=(1.0, -2.0), secret=SECRET, tag=None, count=None):
    g = np.array(g if count is None else [0.5] * count)
    return build_record(Codec.BYTE, tag or p.tag, round_, peer, 0, g, round_ * 1000 + peer, secret)


def test_equivocation_neither_counts_and_first_is_undone(victim):
    base = victim.setup.state.state_hash()
    a, b = _rec(victim, g=(1.0, 2.0)), _rec(victim, g=(-3.0, 0.5))
    assert victim.offer(a.to_bytes())
    victim.apply_pending()
    assert victim.setup.state.state_hash() != base
    assert victim.offer(b.to_bytes())  # kept as evidence
    victim.apply_pending()
    assert victim.setup.state.state_hash() == base  # the first was undone exactly
    assert 9 in victim.flagged
    assert not victim.offer(_rec(victim, g=(7.0, 7.0)).to_bytes())  # a third is refused
    assert effective([a, b]) == []


def test_equivocation_in_one_batch_and_replay_agree(victim, tmp_path):
    a, b, c = _rec(victim, g=(1.0, 2.0)), _rec(victim, g=(-3.0, 0.5)), _rec(victim, peer=4)
    for r in (a, b, c):
        victim.offer(r.to_bytes())
    victim.apply_pending()
    fresh = Setup.build(RunSpec(run_id="hostile", model="tiny-gpt2", task="vader", train=TRAIN))
    apply_records(fresh.state, [c], TRAIN)
    assert victim.setup.state.state_hash() == fresh.state.state_hash()


@pytest.mark.parametrize("make,reason", [
    (lambda p: _rec(p, round_=50), "future"),
    (lambda p: _rec(p, count=3), "sample limit"),
    (lambda p: _rec(p, tag=b"x" * 16), "run tag"),
    (lambda p: _rec(p, secret=b"guess"), "authentication"),
])
def test_rejected_and_counted_never_applied(victim, make, reason):
    base = victim.setup.state.state_hash()
    assert not victim.offer(make(victim).to_bytes())
    victim.apply_pending()
    assert victim.setup.state.state_hash() == base
    assert any(reason in k for k in victim.intake.rejections()), victim.intake.rejections()


def test_malformed_bytes_never_crash(victim):
    rng = np.random.default_rng(0)
    good = _rec(victim).to_bytes()
    for _ in range(500):
        bad = bytearray(good)
        bad[rng.integers(len(bad))] ^= int(rng.integers(1, 256))
        victim.offer(bytes(bad))
        victim.handle(b"REC" + struct.pack("<H", len(bad)) + bytes(bad))
        victim.handle(bytes(bad))
    assert victim.records == {} and sum(victim.intake.rejections().values()) >= 500


def test_flooding_peer_cannot_grow_the_work(victim, monkeypatch):
    monkeypatch.setattr(intake_mod, "MAX_PEERS_PER_ROUND", 5)
    accepted = sum(victim.offer(_rec(victim, peer=i).to_bytes()) for i in range(40))
    assert accepted == 5 and len(victim.replica.pending) == 5
    assert victim.intake.rejections()["too many peers in one round (flood)"] == 35


def test_per_record_influence_is_capped():
    setup = Setup.build(RunSpec(run_id="hostile", model="tiny-gpt2", task="vader",
                                train=TrainConfig(samples=1, lr=1.0, tune="all")))
    state = setup.state
    before = state.view.clone()
    lr = 1.0
    # the largest gradient the cap admits for the finest step, then one just beyond it
    f = max(state.frac_bits.values())
    g_ok = MAX_STEP_UNITS * 2.0 ** -f / lr
    ok = build_record(Codec.FLOAT32, setup.spec.run_tag, 0, 1, 0, np.array([g_ok * 0.99]), 0)
    apply_records(state, [ok], setup.train)
    # documented bound: one gradient moves any weight by at most MAX_STEP_UNITS * 2^-f
    for i, name in enumerate(state.names):
        seg = state.layout.segment
        moved = float((seg(state.view, i) - seg(before, i)).abs().max())
        assert moved <= MAX_STEP_UNITS * 2.0 ** -state.frac_bits[name] * 1.0001
    too_big = build_record(Codec.FLOAT32, setup.spec.run_tag, 0, 2, 0, np.array([g_ok * 1.5]), 0)
    from onebyte.errors import ProtocolError

    with pytest.raises(ProtocolError):
        apply_records(state, [too_big], setup.train)


def test_canary_in_training_data_never_leaves_the_peer(tmp_path):
    canary = "zq-canary-7f3a91-secret-patient-record"
    data = tmp_path / "private.jsonl"
    rows = [f'{{"text": "{canary} reading {i}", "label": "{["bad", "good"][i % 2]}"}}' for i in range(40)]
    data.write_text("\n".join(rows) + "\n")
    hub = MemoryHub()
    setup = Setup.build(RunSpec(run_id="canary", model="tiny-gpt2", task=str(data), train=TRAIN))
    with Peer(setup, setup.dataset.train, MemoryTransport(hub, "me"), tmp_path / "out",
              PeerOptions(peer_id=3, rounds=3, secret=SECRET, eval_size=0, min_deadline=0.1, max_deadline=0.5,
                          heartbeat_interval=0.1, drain_timeout=1.0)) as p:  # closed even if run raises
        p.run()
    needle = canary.encode()
    published = b"".join(r for rnd in hub.records.values() for r in rnd.values()) + b"".join(hub.beats.values())
    assert published and needle not in published
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            assert needle not in f.read_bytes(), f
    assert p.summary()["records"] == 3  # it did train and publish


def test_ledger_verify_on_random_mutations_exits_0_or_2_with_one_line(tmp_path, capsys):
    from onebyte.ledger import LedgerWriter

    path = tmp_path / "l.obl"
    with LedgerWriter(path) as w:
        w.append([build_record(Codec.BYTE, b"t" * 16, r, 1, 0, np.array([0.5, -1.0]), r) for r in range(4)])
    good = path.read_bytes()
    rng = np.random.default_rng(1)
    for _ in range(300):
        bad = bytearray(good)
        kind = rng.integers(3)
        if kind == 0:
            bad[rng.integers(len(bad))] ^= int(rng.integers(1, 256))
        elif kind == 1:
            del bad[rng.integers(len(bad)):]
        else:
            pos = rng.integers(len(bad))
            bad[pos:pos] = bytes(rng.integers(0, 256, rng.integers(1, 30)).astype(np.uint8))
        path.write_bytes(bytes(bad))
        code = main(["ledger", "verify", str(path)])
        out = capsys.readouterr()
        assert code in (0, 2)
        if code == 2:
            assert out.err.count("\n") == 1 and "Traceback" not in out.err
