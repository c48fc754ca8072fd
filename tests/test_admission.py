"""One admission path (issue #29): every source of records enters a replica through ``Replica.admit``
— a peer's own and the network's (``Intake``), a restart, a snapshot, a coefficient snapshot, replay
and the simulator — and the roster's filter (the replica's ``counts``) is applied there, once."""

from dataclasses import replace

import numpy as np
import pytest

import onebyte
from conftest import Toy
from onebyte.config import Directions, Step, TrainConfig
from onebyte.intake import Intake
from onebyte.record import build_record
from onebyte.replica import Replica
from onebyte.state import FixedPointState

RUN = b"a" * 16
SECRET = b"s"
TRAIN = TrainConfig(lr=1e-3, step=Step.SCALAR, directions=Directions.DISTINCT, samples=3)


def _state() -> FixedPointState:
    return FixedPointState(sorted(Toy().named_parameters()))


def _records(rounds: int, peers: int = 3, train: TrainConfig = TRAIN) -> list:
    rng = np.random.default_rng(0)
    return [build_record(train.codec, RUN, r, p, 0, rng.normal(size=3) * 50.0, r * peers + p, SECRET)
            for r in range(rounds) for p in range(peers)]


@pytest.fixture
def admitted(monkeypatch) -> list[tuple[bytes, bool]]:
    """(record id, queued) of every call of ``Replica.admit``."""
    calls: list[tuple[bytes, bool]] = []
    admit = Replica.admit

    def spy(self, rec, queue=True):
        calls.append((rec.record_id, queue))
        return admit(self, rec, queue)

    monkeypatch.setattr(Replica, "admit", spy)
    return calls


def test_every_entry_path_admits_through_replica_admit(tmp_path, admitted):
    recs = _records(4)
    ids = [r.record_id for r in recs]
    # own and network records: the intake's policy, then admission
    rep = Replica.open(tmp_path / "a", _state(), TRAIN, RUN)
    intake = Intake(rep, TRAIN, SECRET, horizon=lambda: 4)
    assert intake.offer(recs[0].to_bytes()) and intake.accept(recs[1])
    assert admitted == [(ids[0], True), (ids[1], True)]
    # the simulator's and replay's path
    admitted.clear()
    rep.add(recs[2:])
    assert admitted == [(i, True) for i in ids[2:]]
    # a restart: snapshot + ledger
    rep.save_snapshot(4)
    want = (rep.digest.hex(), rep.state_hash())
    rep.ledger.close()
    admitted.clear()
    back = Replica.open(tmp_path / "a", _state(), TRAIN, RUN)
    assert (back.digest.hex(), back.state_hash()) == want
    assert sorted(admitted) == sorted((i, False) for i in ids)
    back.ledger.close()
    # a newcomer's snapshot install
    admitted.clear()
    newcomer = Replica(_state(), TRAIN, RUN)
    newcomer.install(rep.snapshot(4), [r.to_bytes() for r in recs], SECRET)
    assert newcomer.state_hash() == want[1] and sorted(admitted) == sorted((i, False) for i in ids)
    # a coefficient snapshot's records (seed pool)
    pool = replace(TRAIN, seed_pool=16)
    precs = _records(3, train=pool)
    server = Replica(_state(), pool, RUN)
    server.add(precs)
    admitted.clear()
    joiner = Replica(_state(), pool, RUN)
    joiner.install_coefficients(server.coefficients(3).to_bytes(), 2, [r.to_bytes() for r in precs[6:]], SECRET)
    assert joiner.state_hash() == server.state_hash()
    assert admitted == [(r.record_id, False) for r in precs[6:]]


def test_simulate_and_replay_admit_every_record_they_apply(tmp_path, admitted):
    from onebyte.models import load_model

    base = load_model("tiny-gpt2")
    data = [(f"text number {i} is {'good' if i % 2 else 'bad'}", "good" if i % 2 else "bad") for i in range(40)]
    spec = onebyte.RunSpec(model="tiny-gpt2", task="mine", train=onebyte.TrainConfig(samples=2, batch_size=8))
    result = onebyte.simulate(spec, out=tmp_path / "r", peers=2, rounds=2, model=(base.model, base.tokenizer),
                              train_data=data)
    assert len(admitted) == result.summary["records"] == 4 and all(queued for _, queued in admitted)
    first = sorted(admitted)
    admitted.clear()
    fresh = load_model("tiny-gpt2")
    tuned = onebyte.replay(tmp_path / "r", (fresh.model, fresh.tokenizer))
    assert tuned.state_hash == result.state_hash and sorted(admitted) == first and tuned.records == 4


def test_a_record_that_does_not_count_is_refused_at_admission_on_every_path(tmp_path):
    recs = _records(3)
    not_one = lambda r: r.peer_id != 1  # noqa: E731  (a roster that revoked peer 1 from round 0)
    counted = [r for r in recs if not_one(r)]
    honest = Replica(_state(), TRAIN, RUN)
    honest.add(counted)
    rep = Replica.open(tmp_path / "a", _state(), TRAIN, RUN, counts=not_one)
    assert rep.add(recs) == len(counted) and not any(r.peer_id == 1 for r in rep.records.values())
    assert (rep.digest.hex(), rep.state_hash()) == (honest.digest.hex(), honest.state_hash())
    rep.ledger.close()
    # a ledger that holds them (written before the revocation): restarted, they do not count either
    full = Replica.open(tmp_path / "b", _state(), TRAIN, RUN)
    full.add(recs)
    full.ledger.close()
    back = Replica.open(tmp_path / "b", _state(), TRAIN, RUN, counts=not_one)
    assert (back.digest.hex(), back.state_hash()) == (honest.digest.hex(), honest.state_hash())
    back.ledger.close()
