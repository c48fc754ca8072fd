"""Robust aggregation: a round's step is a statistic of its records, and replicas stay exact."""

import random

import numpy as np
import pytest

from conftest import Toy
from onebyte.codec import Codec
from onebyte.config import Aggregate, TrainConfig
from onebyte.record import build_record
from onebyte.replica import Replica
from onebyte.state import FixedPointState
from onebyte.update import robust_step

RUN = b"q" * 16
MEDIAN = TrainConfig(lr=1e-3, samples=3, aggregate=Aggregate.MEDIAN)
CLIPPED = TrainConfig(lr=1e-3, samples=3, aggregate=Aggregate.CLIPPED)


def _rec(round_, peer, g, codec=Codec.BYTE):
    return build_record(codec, RUN, round_, peer, 0, np.asarray(g, dtype=float), round_ * 100 + peer)


def _fresh():
    m = Toy()
    return FixedPointState(sorted(m.named_parameters()))


def _hash(records, train=MEDIAN, batches=None):
    """State hash after applying ``records`` in the given batches (default: all at once)."""
    rep = Replica(_fresh(), train, RUN)
    for batch in batches or [records]:
        rep.add(batch)
    return rep.state_hash()


def test_robust_step_statistics():
    assert robust_step([3.0, 1.0, 2.0], Aggregate.MEDIAN) == 2.0 * 3
    assert robust_step([4.0, 1.0, 2.0, 3.0], Aggregate.MEDIAN) == 2.5 * 4
    # trimmed: the lowest and highest quarter dropped (one of each of 4..7 values)
    assert robust_step([100.0, 1.0, 2.0, 3.0, -50.0], Aggregate.TRIMMED) == 2.0 * 5
    # sign codec: the median of +-1 is the majority sign (a tie gives no step)
    assert robust_step([1.0, 1.0, -1.0], Aggregate.MEDIAN) == 3.0
    assert robust_step([1.0, -1.0], Aggregate.MEDIAN) == 0.0
    # clipped: the mean of the values within 3 robust standard deviations of the median, times n
    assert robust_step([1.0, 2.0, 3.0], Aggregate.CLIPPED) == 6.0  # no outlier: the sum
    assert robust_step([3.0, 1.0, 100.0, 2.0], Aggregate.CLIPPED) == 8.0  # median 2.5, MAD 1: 100 is out
    assert robust_step([1.0, 2.0, 3.0, 6.0], Aggregate.CLIPPED) == 12.0  # 6 is 3.5 from 2.5, within 4.4
    assert robust_step([1.0, 1.0, -1.0], Aggregate.CLIPPED) == 3.0  # sign codec: the majority sign
    with pytest.raises(ValueError):
        robust_step([1.0], Aggregate.SUM)


@pytest.mark.parametrize("train", [MEDIAN, CLIPPED], ids=["median", "clipped"])
def test_late_record_that_changes_the_median_leaves_the_full_set_state(train):
    """Round 0 applied with two records, then a third arrives late and moves the median: every
    arrival order and batching ends with the state of applying all records at once."""
    recs = [_rec(0, 1, [1.0, -2.0, 0.5]), _rec(0, 2, [3.0, 1.0, -0.5]), _rec(0, 3, [2.5, 0.5, 0.0]),
            _rec(1, 1, [0.25, 0.5, 1.0]), _rec(1, 2, [-1.0, 2.0, 3.0]), _rec(1, 3, [0.0, -1.0, 2.0])]
    whole = _hash(recs, train)
    late = [recs[:2] + recs[3:], [recs[2]]]  # round 0's third record after round 1 was applied
    assert _hash(recs, train, late) == whole
    for seed in range(10):
        order = recs[:]
        random.Random(seed).shuffle(order)
        cuts = sorted(random.Random(seed + 99).sample(range(1, len(order)), 2))
        batches = [order[:cuts[0]], order[cuts[0]:cuts[1]], order[cuts[1]:]]
        assert _hash(recs, train, batches) == whole
    # the late record did change round 0's step: without it the state differs
    assert _hash(recs[:2] + recs[3:], train) != whole


def test_an_outlier_moves_the_model_no_further_than_any_value_beyond_the_median():
    """Under the median a record's size beyond the middle does not matter (under sum it does):
    this fails if the aggregate falls back to the sum."""
    honest = [_rec(0, p, [v, -v, 2 * v]) for p, v in enumerate([0.5, 1.0, 1.5, 2.0])]
    huge = _rec(0, 9, [120.0, -120.0, 240.0])
    mild = _rec(0, 9, [3.0, -3.0, 6.0])  # same side of every median as the huge one
    assert _hash(honest + [huge]) == _hash(honest + [mild])
    sum_train = TrainConfig(lr=1e-3, samples=3, directions=MEDIAN.directions)
    assert _hash(honest + [huge], sum_train) != _hash(honest + [mild], sum_train)


def test_an_outlier_far_from_the_others_counts_not_at_all_under_clipped():
    """The outlier's value does not matter, and the honest records stand in for it: the step is
    their mean times five, the same as a fifth honest record at that mean would give."""
    vals = [0.5, 1.0, 1.5, 2.0]
    honest = [_rec(0, p, [v, -v, 2 * v]) for p, v in enumerate(vals)]
    huge = _rec(0, 9, [120.0, -120.0, 240.0])
    other = _rec(0, 9, [-90.0, 90.0, -200.0])
    mean = sum(vals) / len(vals)
    stand_in = _rec(0, 9, [mean, -mean, 2 * mean])
    assert _hash(honest + [huge], CLIPPED) == _hash(honest + [other], CLIPPED) == _hash(honest + [stand_in], CLIPPED)
    assert _hash(honest + [huge], CLIPPED) != _hash(honest, CLIPPED)  # four values' mean times 5, not 4
    assert _hash(honest + [huge], MEDIAN) != _hash(honest + [other], MEDIAN)  # the median moves by a rank


def test_equivocation_under_the_median_counts_neither_record():
    a, b = _rec(0, 1, [1.0, 2.0, 3.0]), _rec(0, 2, [2.0, 3.0, 4.0])
    c = _rec(0, 3, [9.0, 9.0, 9.0])
    c2 = _rec(0, 3, [-9.0, -9.0, -9.0])  # peer 3 says two different things about one slot
    assert _hash([a, b, c, c2]) == _hash([a, b])
    assert _hash([a, b, c, c2], batches=[[a, b, c], [c2]]) == _hash([a, b])


def test_restart_from_snapshot_and_ledger_rebuilds_the_robust_state(tmp_path):
    recs = [_rec(r, p, [float(p - r), 1.0 + p, -2.0 * p]) for r in range(3) for p in range(1, 5)]
    rep = Replica.open(tmp_path, _fresh(), MEDIAN, RUN)
    rep.add(recs[:6])
    rep.save_snapshot(1)
    rep.add(recs[6:])
    expected = rep.state_hash()
    rep.ledger.close()
    again = Replica.open(tmp_path, _fresh(), MEDIAN, RUN)
    assert again.state_hash() == expected == _hash(recs)
    again.ledger.close()


def test_robust_is_in_the_run_tag_and_the_run_file(tmp_path):
    from onebyte.config import RunSpec

    plain = RunSpec(train=TrainConfig())
    robust = RunSpec(train=TrainConfig(aggregate=Aggregate("robust")))
    assert robust.train.aggregate is Aggregate.MEDIAN and robust.train.shared_directions
    assert "aggregate" not in plain.math()["train"] and robust.math()["train"]["aggregate"] == "median"
    assert TrainConfig.from_dict({"aggregate": "robust"}).aggregate is Aggregate.MEDIAN
    path = tmp_path / "run.toml"
    path.write_text(robust.to_toml())
    assert RunSpec.load(path) == robust


@pytest.mark.parametrize("attack", ["lie-late:0.25", "sybil:0.25"])
def test_attacked_robust_run_replays_exactly_in_any_order(tmp_path, attack):
    """A simulated run with late (and refused sybil) records: its ledger replays, in any order,
    to the run's state hash; the summary names the attack and the refused records."""
    from onebyte.api import replay, simulate
    from onebyte.config import RunSpec

    spec = RunSpec(run_id="robust", model="tiny-gpt2", task="vader",
                   train=TrainConfig(samples=2, batch_size=8, tune="all", aggregate=Aggregate.MEDIAN))
    s = simulate(spec, out=tmp_path / "run", peers=4, rounds=4, eval_size=8, attack=attack).summary
    assert s["attack"] == attack and s["hostile_peers"] == [3]
    assert s["refused_records"] == (12 if attack.startswith("sybil") else 0)
    assert s["records"] == 16  # lie-late: the held-back records are released by the last round
    for order in (None, 1, 2):
        assert replay(tmp_path / "run", shuffle=order).state_hash == s["state_hash"]


def test_attackers_publish_what_they_claim_within_the_cap():
    from onebyte.attacks import FLIP, LATE, Attack, Attacker
    from onebyte.errors import ConfigError
    from onebyte.update import check_cap

    finest = max(_fresh().frac_bits.values())
    honest = [_rec(0, p, [0.5 * (p + 1), -1.0, 0.25]) for p in range(4)]
    train = TrainConfig(lr=1e-3, samples=3)

    def publish(kind, r=0, last=False, attacker=None):
        attacker = attacker or Attacker(Attack.parse(f"{kind}:0.25"), 4, train, finest, RUN)
        return attacker, {(x.peer_id, x.round): x for x in attacker.round(r, [_rec(r, p, honest[p].gradients())
                                                                          for p in range(4)], last)}

    _, out = publish("signflip")
    assert np.allclose(out[(3, 0)].gradients(), -FLIP * honest[3].gradients(), rtol=0.02)
    assert np.array_equal(out[(0, 0)].gradients(), honest[0].gradients())  # honest peers untouched
    _, out = publish("max")
    bad = out[(3, 0)].gradients()
    assert np.array_equal(np.sign(bad), -np.sign(honest[3].gradients()))
    assert min(abs(bad)) > 100 * max(abs(honest[3].gradients()))  # near the cap, far beyond honest values
    for kind in ("max", "random", "sybil"):
        _, out = publish(kind)
        for rec in out.values():
            check_cap(rec, train, finest)  # every replica accepts them
    _, out = publish("sybil")
    assert len(out) == 4 + 3  # the hostile site's own id and three more
    attacker, out = publish("lie-late")
    assert (3, 0) not in out  # held back ...
    _, later = publish("lie-late", r=LATE, attacker=attacker)
    assert (3, 0) in later and (3, LATE) not in later  # ... released LATE rounds on, its own round's held
    _, final = publish("lie-late", r=LATE + 1, last=True, attacker=attacker)
    assert {(3, LATE), (3, LATE + 1)} <= final.keys()  # the last round releases everything
    for bad_text in ("flood:0.25", "max", "max:1.5", "max:x"):
        with pytest.raises(ConfigError):
            Attack.parse(bad_text)
    assert Attack.parse("max:0.25").hostile(8) == [6, 7]
