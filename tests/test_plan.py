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
