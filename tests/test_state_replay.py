import random

import numpy as np
import pytest
import torch

from onebyte.codec import Codec
from onebyte.config import Directions, Step, TrainConfig
from onebyte.errors import ProtocolError
from onebyte.record import build_record
from onebyte.state import FixedPointState, frac_bits_for
from onebyte.update import MAX_STEP_UNITS, apply_records, plan, record_seeds

RUN = b"r" * 16


def _records(n, codec=Codec.BYTE, count=3, scale=50.0):
    rng = np.random.default_rng(0)
    return [build_record(codec, RUN, i // 4, i % 4, 0, rng.normal(size=count) * scale, i) for i in range(n)]


def test_view_matches_base_weights_closely(toy_state):
    """The view is the base weights rounded to the grid: within half a step 2^-f of each, and
    the model's parameters are that view (so perturbing the state moves the model)."""
    model, state = toy_state
    # the base weights as they were before the state took the parameters over (Toy is seeded)
    base = {n: p.detach() for n, p in type(model)().named_parameters()}
    assert base.keys() == set(state.frac_bits)
    for name, p in model.named_parameters():
        half = 2.0 ** -state.frac_bits[name] / 2
        assert (p.detach() - base[name]).abs().max() <= half
        nudged = base[name].double()  # float64: a step can be finer than float32 resolves at |w| ~ 10
        nudged.view(-1)[0] += 4 * half  # two grid steps off in one element
        assert (p.detach().double() - nudged).abs().max() > half
    state.perturb(seed=1, scale=1.0)  # +-1 on every element of the view
    for name, p in model.named_parameters():
        assert ((p.detach() - base[name]).abs() > 0.5).all()
    state.refresh()
    for name, p in model.named_parameters():
        assert (p.detach() - base[name]).abs().max() <= 2.0 ** -state.frac_bits[name] / 2


def test_frac_bits_headroom():
    for m in (0.0, 0.5, 1.0, 3.9, 4.0, 1000.0):
        f = frac_bits_for(m)
        assert 2.0 ** (31 - f) >= 4 * max(m, 1.0)
        assert 2.0 ** (31 - f) <= 8 * max(m, 1.0)


def test_fifty_orders_one_state_hash(toy_state):
    _, state = toy_state
    train = TrainConfig(lr=1e-3, step=Step.SCALAR, directions=Directions.DISTINCT)
    records = _records(24)
    base = state.acc.clone()
    hashes = set()
    for seed in range(50):
        state.acc.copy_(base)
        order = records[:]
        random.Random(seed).shuffle(order)
        # also vary the batching: apply in random-sized groups
        i = 0
        while i < len(order):
            k = random.Random(seed * 100 + i).randint(1, 5)
            apply_records(state, order[i:i + k], train)
            i += k
        hashes.add(state.state_hash())
    assert len(hashes) == 1
    state.acc.copy_(base)
    assert state.state_hash() not in hashes  # the records did change the state


def test_apply_then_undo_restores_exactly(toy_state):
    model, state = toy_state
    train = TrainConfig(lr=1e-4, step=Step.SCALAR, directions=Directions.DISTINCT)
    before_hash = state.state_hash()
    before_view = state.view.clone()
    recs = _records(5, scale=500.0)
    apply_records(state, recs, train)
    assert state.state_hash() != before_hash
    apply_records(state, recs[2:3], train, sign=-1)
    apply_records(state, recs[:2] + recs[3:], train, sign=-1)
    assert state.state_hash() == before_hash
    assert torch.equal(state.view, before_view)


def test_update_moves_weights_by_minus_lr_g_z(toy_state):
    model, state = toy_state
    train = TrainConfig(codec=Codec.FLOAT32, lr=1e-3, step=Step.SCALAR, directions=Directions.DISTINCT)
    rec = build_record(Codec.FLOAT32, RUN, 0, 1, 0, np.array([2.5]), 0)
    seed = record_seeds(rec, False)[0]
    z = state.layout.rademacher(seed).double()
    before = state.view.double().clone()
    apply_records(state, [rec], train)
    expected = before - 1e-3 * 2.5 * z
    for i, name in enumerate(state.names):
        seg = state.layout.segment
        step = 2.0 ** -state.frac_bits[name]
        err = (seg(state.view.double(), i) - seg(expected, i)).abs().max()
        assert err <= 2 * step + 1e-6 * float(seg(expected, i).abs().max())


def test_shared_directions_merge_codes(toy_state):
    _, state = toy_state
    a = build_record(Codec.BYTE, RUN, 0, 1, 0, np.array([1.0, 2.0]), 0)
    b = build_record(Codec.BYTE, RUN, 0, 2, 0, np.array([3.0, -1.0]), 0)
    shared = plan([a, b], TrainConfig(directions=Directions.SHARED), state.frac_bits.values())
    distinct = plan([a, b], TrainConfig(directions=Directions.DISTINCT), state.frac_bits.values())
    assert len(shared) == 2 and len(distinct) == 4


def test_oversized_update_rejected_before_touching_state(toy_state):
    _, state = toy_state
    rec = build_record(Codec.FLOAT32, RUN, 0, 1, 0, np.array([1e9]), 0)
    h = state.state_hash()
    with pytest.raises(ProtocolError, match="cap"):
        apply_records(state, [rec], TrainConfig(lr=1.0, step=Step.SCALAR, directions=Directions.DISTINCT))
    assert state.state_hash() == h
    assert MAX_STEP_UNITS < 2**31


def test_state_hash_depends_on_every_tensor(toy_state):
    _, state = toy_state
    h = state.state_hash()
    for i in range(len(state.names)):
        seg = state.layout.segment(state.acc, i)
        seg[-1] += 1
        assert state.state_hash() != h
        seg[-1] -= 1
    assert state.state_hash() == h


def test_padding_does_not_enter_hash():
    m = torch.nn.Linear(3, 1)  # 3 + 1 scalars, padded to 256 each
    state = FixedPointState(sorted(m.named_parameters()))
    h = state.state_hash()
    state.acc[100] += 5  # padding of the first segment
    assert state.state_hash() == h


def test_add_many_matches_add_bit_for_bit():
    """The batched small-layout path (one Philox pass for many seeds, float64 sums) must leave
    exactly the accumulators that one-seed-at-a-time adds leave, wrap-around included."""
    from conftest import Toy

    one, many = Toy(), Toy()
    a, b = FixedPointState(sorted(one.named_parameters())), FixedPointState(sorted(many.named_parameters()))
    assert len(a.groups) > 1
    rnd = random.Random(7)
    fracs = sorted({g.frac_bits for g in a.groups})
    extremes = [2**31 - 1, -(2**31), 1, -1]
    items = []
    for _ in range(300):
        coeffs = {f: rnd.choice([rnd.randint(-(2**31), 2**31 - 1), rnd.randint(-99, 99), rnd.choice(extremes)])
                  for f in fracs if rnd.random() < 0.7}
        items.append((rnd.getrandbits(64), coeffs))
    for seed, coeffs in items:
        a.add(seed, coeffs)
    b.add_many(items)
    assert torch.equal(a.acc, b.acc)
    a.refresh()
    b.refresh()
    assert a.state_hash() == b.state_hash()
