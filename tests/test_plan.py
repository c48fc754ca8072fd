"""update.plan, vectorised: the same integer coefficients as the per-scalar definition, bit for bit."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest

from onebyte.codec import Codec
from onebyte.config import Directions, TrainConfig
from onebyte.errors import ProtocolError
from onebyte.record import build_record
from onebyte.update import MAX_STEP_UNITS, plan, record_seeds


def reference(records, train, frac_bits, sign=1):
    """The definition: per record, per scalar, per step group, -round(ldexp(lr * g, f))."""
    out = defaultdict(lambda: defaultdict(int))
    for rec in records:
        lr = train.lr_at(rec.round)
        for seed, g in zip(record_seeds(rec, train.shared_directions, train.seed_pool), rec.gradients(), strict=True):
            for f in sorted(set(frac_bits)):
                out[seed][f] += sign * -round(math.ldexp(lr * float(g), f))
    return {s: dict(c) for s, c in out.items()}


def _records(n, k, rounds=2, scale=1e-3, seed=0):
    rng = np.random.default_rng(seed)
    return [build_record(Codec.BYTE, b"t" * 16, r, p, 0, rng.normal(size=k) * scale, p)
            for r in range(rounds) for p in range(n)]


@pytest.mark.parametrize("directions", [Directions.SHARED, Directions.DISTINCT])
@pytest.mark.parametrize("pool", [0, 64])
@pytest.mark.parametrize("sign", [1, -1])
def test_plan_equals_the_per_scalar_definition(directions, pool, sign):
    train = replace(TrainConfig(), directions=directions, seed_pool=pool, samples=32)
    recs = _records(7, 32)
    recs += [build_record(Codec.BYTE, b"t" * 16, 1, 9, 0, np.full(12, 0.5), 9)]  # a site measuring fewer
    got = {s: dict(c) for s, c in plan(recs, train, [20, 23, 23, 26], sign).items()}
    assert got == reference(recs, train, [20, 23, 26], sign)


def test_plan_refuses_a_record_beyond_the_cap():
    train = replace(TrainConfig(), samples=4)
    big = build_record(Codec.FLOAT32, b"t" * 16, 0, 1, 0, np.array([0.0, 1e9, 0.0, 0.0]), 1)
    assert abs(round(math.ldexp(train.lr_at(0) * 1e9, 30))) > MAX_STEP_UNITS
    with pytest.raises(ProtocolError, match="cap"):
        plan([big], train, [30])


def test_plan_byte_table_matches_the_definition_across_exponents_and_codecs():
    """A round whose records span many exponents (the table path), one that mixes codecs (the
    general path), and a round of sign records: each the definition's coefficients."""
    train = replace(TrainConfig(), samples=16)
    rng = np.random.default_rng(1)
    recs = [build_record(Codec.BYTE, b"t" * 16, 0, p, 0, rng.normal(size=16) * 10.0 ** rng.uniform(-7, 1), p)
            for p in range(40)]
    recs += [build_record(Codec.BYTE, b"t" * 16, 1, p, 0, rng.normal(size=16) * 10.0 ** -p, p) for p in range(5)]
    recs += [build_record(Codec.FLOAT32, b"t" * 16, 1, 9, 0, rng.normal(size=16), 9)]
    recs += [build_record(Codec.SIGN, b"t" * 16, 2, p, 0, rng.normal(size=16), p) for p in range(3)]
    assert len({r.exponent for r in recs[:40]}) > 10
    for fracs in ([24], [12, 20, 28]):
        got = {s: dict(c) for s, c in plan(recs, train, fracs).items()}
        assert got == reference(recs, train, fracs)


def test_plan_names_the_byte_record_past_the_cap_in_a_round():
    train = replace(TrainConfig(), samples=4)
    small = [build_record(Codec.BYTE, b"t" * 16, 0, p, 0, np.full(4, 1e-3), p) for p in range(5)]
    big = build_record(Codec.BYTE, b"t" * 16, 0, 0xAB, 0, np.array([0.0, 1e9, 0.0, 0.0]), 1)
    with pytest.raises(ProtocolError, match="peer ab\\) exceeds the per-record update cap"):
        plan(small[:2] + [big] + small[2:], train, [30])
    plan(small, train, [30])  # the others alone are within it


@pytest.mark.parametrize("bad", [
    dict(payload=b"\x80" + b"\x01" * 3),  # code -128
    dict(payload=b"\x01" * 3),  # short
    dict(exponent=31),  # outside EXPONENT_RANGE
])
def test_plan_refuses_an_invalid_byte_record_as_decode_does(bad):
    train = replace(TrainConfig(), samples=4)
    recs = [build_record(Codec.BYTE, b"t" * 16, 0, p, 0, np.full(4, 1e-3), p) for p in range(4)]
    hostile = replace(recs[2], **bad)
    with pytest.raises(ProtocolError) as want:
        hostile.gradients()
    with pytest.raises(ProtocolError) as got:
        plan(recs[:2] + [hostile] + recs[3:], train, [24])
    assert str(got.value) == str(want.value)
