"""The roster filter, written once (``replica.refusal``): a record whose key the run file does not
list, or whose key is revoked at its round, is refused on every path a record takes — the intake
(network and own), a restart from the ledger, the simulator's and replay's ``add``, and a newcomer's
snapshot or coefficient install through catch-up — and each of those paths asks ``refusal``."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import onebyte.intake as intake_mod
import onebyte.replica as replica_mod
from conftest import Toy
from onebyte.catchup import CatchUp
from onebyte.codec import Codec
from onebyte.config import Directions, ListedKey, Step, TrainConfig
from onebyte.errors import ProtocolError
from onebyte.identity import Roster, SiteKey
from onebyte.intake import Intake
from onebyte.record import build_record
from onebyte.replica import Replica, refusal
from onebyte.state import FixedPointState

RUN = b"r" * 16
TRAIN = TrainConfig(samples=2, lr=1e-3, step=Step.SCALAR, directions=Directions.DISTINCT)
A, B, C, D = (SiteKey.generate() for _ in range(4))  # A, B, C listed; C revoked from round 1; D never listed


def _roster(until_c: int | None = 1) -> Roster:
    return Roster([ListedKey("a", A.public), ListedKey("b", B.public), ListedKey("c", C.public, until_c)])


def _state() -> FixedPointState:
    return FixedPointState(sorted(Toy().named_parameters()))


def _rec(key: SiteKey, round_: int, train: TrainConfig = TRAIN):
    g = np.random.default_rng(round_ * 31 + key.peer_id % 997).normal(size=2)
    return build_record(train.codec, RUN, round_, key.peer_id, 0, g, round_ * 7919 + key.peer_id % 1000).signed_by(key)


def _records(rounds: int = 3, train: TrainConfig = TRAIN) -> list:
    return [_rec(k, r, train) for r in range(rounds) for k in (A, B, C)]


def _counted(recs: list) -> list:
    return [r for r in recs if r.peer_id != D.peer_id and not (r.peer_id == C.peer_id and r.round >= 1)]


@pytest.fixture
def asked(monkeypatch) -> list[bytes]:
    """The record ids ``refusal`` was asked about (by the replica and the intake alike)."""
    calls: list[bytes] = []
    real = replica_mod.refusal

    def spy(roster, rec):
        calls.append(rec.record_id)
        return real(roster, rec)

    monkeypatch.setattr(replica_mod, "refusal", spy)
    monkeypatch.setattr(intake_mod, "refusal", spy)
    return calls


def test_refusal_says_why_a_record_does_not_count():
    roster = _roster()
    assert refusal(None, _rec(D, 0)) is None  # a run without site keys: the filter lets all through
    assert refusal(roster, _rec(C, 0)) is None and refusal(roster, _rec(A, 2)) is None
    assert refusal(roster, _rec(C, 1)) == "key 'c' is revoked from round 1"
    assert refusal(roster, _rec(D, 0)) == "record's key is not listed in this run file"
    unsigned = build_record(Codec.BYTE, RUN, 0, A.peer_id, 0, np.array([0.5]), 1, b"secret")
    assert refusal(roster, unsigned) == "record's key is not listed in this run file"  # no signature, no key
    # a bare predicate (``Roster.counts``, as peers pass it) decides alike, with a generic reason
    assert refusal(roster.counts, _rec(C, 0)) is None
    assert "not listed in this run file, or is revoked" in refusal(roster.counts, _rec(C, 1))


def test_the_intake_refuses_a_revoked_or_unlisted_key_and_names_it(asked):
    roster = _roster()
    rep = Replica(_state(), TRAIN, RUN, counts=roster)
    intake = Intake(rep, TRAIN, b"", lambda: 10, roster=roster)
    late, unlisted = _rec(C, 1), _rec(D, 0)
    assert not intake.offer(late.to_bytes())  # from the network: authentic, revoked at its round
    assert not intake.accept(unlisted)  # as if one's own: the policy is the same
    assert late.record_id in asked and unlisted.record_id in asked
    assert intake.rejections() == {"key 'c' is revoked from round 1": 1,
                                   "record's key is not listed in this run file": 1}
    assert late.record_id[:8] in intake.refused_ids()  # sync stops asking for it
    assert intake.offer(_rec(C, 0).to_bytes()) and not rep.records.keys() - {_rec(C, 0).record_id}


def test_a_restart_and_add_leave_out_what_does_not_count(tmp_path, asked):
    recs = [*_records(), _rec(D, 0)]
    honest = Replica(_state(), TRAIN, RUN)
    honest.add(_counted(recs))
    before = Replica.open(tmp_path / "x", _state(), TRAIN, RUN)  # written under a run file without the revocation
    before.add(recs)
    before.ledger.close()
    for counts in (_roster(), _roster().counts):  # the roster itself, or its predicate
        asked.clear()
        back = Replica.open(tmp_path / "x", _state(), TRAIN, RUN, counts=counts)
        assert (back.digest.hex(), back.state_hash()) == (honest.digest.hex(), honest.state_hash())
        assert {r.record_id for r in back.records.values()} == {r.record_id for r in _counted(recs)}
        assert {r.record_id for r in recs} <= set(asked)
        back.ledger.close()
    asked.clear()
    fresh = Replica(_state(), TRAIN, RUN, counts=_roster())  # the simulator's and replay's path
    assert fresh.add(recs) == len(_counted(recs)) and fresh.state_hash() == honest.state_hash()
    assert {r.record_id for r in recs} <= set(asked)


def _catchup(replica: Replica, roster: Roster, **verbs) -> CatchUp:
    """A newcomer's catch-up with a fake client (``verbs``: its methods) and no live peers besides."""
    gossip = SimpleNamespace(members=SimpleNamespace(live=dict))
    client = SimpleNamespace(net=SimpleNamespace(bytes_received=0), **verbs)
    return CatchUp(client, lambda: SimpleNamespace(secret=b""), replica, None, gossip, roster, RUN, lambda: 0,
                   lambda: 0, lambda round_: None)


def test_a_snapshot_covering_a_revoked_record_is_refused_before_anything_changes(asked):
    """The install used to raise a bare KeyError half way (the snapshot's state already loaded): now a
    ProtocolError names the record, and the newcomer is still at the base model with no record."""
    recs = _records()
    source = Replica(_state(), TRAIN, RUN)  # a peer whose older run file does not revoke C
    source.add(recs)
    snap, raws = source.snapshot(3), [r.to_bytes() for r in recs]
    base = _state().state_hash()
    for counts in (_roster(), _roster().counts, lambda r: r.peer_id != C.peer_id):
        joiner = Replica(_state(), TRAIN, RUN, counts=counts)
        with pytest.raises(ProtocolError, match="does not count here"):
            joiner.install(snap, raws, None)
        assert not joiner.records and not joiner.applied and joiner.state_hash() == base
    joiner = Replica(_state(), TRAIN, RUN, counts=_roster())
    asked.clear()
    catchup = _catchup(joiner, _roster(), snap=lambda contact, size: (snap, raws))
    with pytest.raises(ProtocolError, match=r"round 1: key 'c' is revoked from round 1|round 1: record's key"):
        catchup.install_snapshot(SimpleNamespace(contact="p0", peer_id=0))
    assert _rec(C, 1).record_id in asked and not joiner.records and joiner.state_hash() == base
    # the same snapshot under the run file the source has installs whole
    ok = Replica(_state(), TRAIN, RUN, counts=_roster(until_c=None))
    ok.install(snap, raws, None)
    assert ok.state_hash() == source.state_hash()


def test_a_coefficient_snapshot_whose_tail_holds_a_revoked_record_is_refused(asked):
    pool = replace(TRAIN, seed_pool=16)
    recs = _records(train=pool)
    source = Replica(_state(), pool, RUN)
    source.add(recs)
    data, tail = source.coefficients(3).to_bytes(), [r.to_bytes() for r in recs[3:]]  # rounds 1 and 2
    joiner = Replica(_state(), pool, RUN, counts=_roster())
    base = joiner.state_hash()
    catchup = _catchup(joiner, _roster(), coef=lambda contact, size: (data, 1, tail))
    with pytest.raises(ProtocolError, match="does not count here"):
        catchup.install_coefficients(SimpleNamespace(contact="p0", peer_id=0))
    assert _rec(C, 1, pool).record_id in asked
    assert not joiner.records and joiner.state_hash() == base and joiner.base_round == -1
