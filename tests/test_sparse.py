"""Sparse directions (``train.density``): z in {-1, 0, +1}, grown from the seed alone; every path
that expands a direction gives the same values; updates stay exact and order-free, in both states."""

import random

import numpy as np
import pytest
import torch

from conftest import Toy
from onebyte.compact import CompactState
from onebyte.config import TrainConfig
from onebyte.errors import ConfigError
from onebyte.record import build_record
from onebyte.rng import PerturbationLayout, _signs_from_counter
from onebyte.state import FixedPointState
from onebyte.update import apply_records

RUN = b"s" * 16


def _reference(layout: PerturbationLayout, seed: int) -> torch.Tensor:
    """z from the tensor-op reference: sign bits times the AND of the mask streams."""
    bits = np.unpackbits(layout.bits(seed).numpy(), bitorder="little").astype(np.int32)
    mask = np.ones_like(bits)
    for j in range(1, layout.sparsity + 1):
        mask &= np.unpackbits(layout.bits(seed, j).numpy(), bitorder="little").astype(np.int32)
    return torch.from_numpy((2 * bits - 1) * mask)


@pytest.mark.parametrize("sparsity", [0, 1, 3])
def test_every_expansion_path_gives_the_reference(sparsity):
    layout = PerturbationLayout(["a", "b", "c"], [1000, 300, 4100], sparsity=sparsity)
    blk, _, _, _, t_lo, t_hi, _, _ = layout._torch_counter()
    for seed in (5, 2**64 - 3):
        ref = _reference(layout, seed)
        assert torch.equal(layout.rademacher(seed, torch.int32), ref)
        assert torch.equal(layout.rademacher(seed, torch.float32), ref.float())
        chunks = [z.clone() for _, _, z in layout.iter_rademacher(seed, torch.int32, [(0, layout.size)],
                                                                  torch.empty(72, dtype=torch.int32))]
        assert torch.equal(torch.cat(chunks), ref)
        # one tensor's range alone (partial fill), after another seed was grown
        layout.fill(seed + 1)
        a, n = layout.offsets[2], layout.numels[2]
        part = [z.clone() for _, _, z in layout.iter_rademacher(seed, torch.int32, [(a, a + n - n % 8)],
                                                                torch.empty(64, dtype=torch.int32))]
        assert torch.equal(torch.cat(part), ref[a:a + n - n % 8])
        # the one-kernel form (compiled on CUDA), run here uncompiled
        fused = _signs_from_counter(blk, t_lo, t_hi, layout._key(seed), torch.int32, sparsity)
        assert torch.equal(fused, ref)
        many = layout.bits_many([seed, 9])[0]
        assert torch.equal(many, layout.bits(seed))
        if sparsity:
            assert torch.equal(layout.mask_many([seed, 9])[0], layout.mask_bits(seed))


def test_density_is_two_to_the_minus_sparsity_and_the_signs_are_the_dense_ones():
    dense = PerturbationLayout(["w"], [1 << 16])
    for sparsity in (1, 2, 4):
        layout = PerturbationLayout(["w"], [1 << 16], sparsity=sparsity)
        z, zd = layout.rademacher(11, torch.int32), dense.rademacher(11, torch.int32)
        kept = z != 0
        assert abs(float(kept.float().mean()) - 2.0 ** -sparsity) < 0.01
        assert torch.equal(z[kept], zd[kept])  # a sparse direction keeps the dense direction's signs
        assert abs(float(z.float().sum())) < 5 * (kept.sum().item() ** 0.5)


def _records(n: int, count: int = 3):
    rng = np.random.default_rng(2)
    codec = TrainConfig().codec
    return [build_record(codec, RUN, i // 4, i % 4, 0, rng.normal(size=count) * 60.0, i) for i in range(n)]


@pytest.mark.parametrize("n", [1, 12])
def test_sparse_updates_are_exact_order_free_and_the_same_in_both_states(n):
    """A few records (one direction at a time) and a batch (the many-directions path)."""
    train = TrainConfig(density=0.25)
    states = []
    for cls in (FixedPointState, CompactState):
        state = cls(sorted(Toy().named_parameters()), sparsity=train.sparsity)
        states.append((state, state.state_hash()))
    recs = _records(n)
    hashes = set()
    for state, before in states:
        for order in range(3):
            shuffled = recs[:]
            random.Random(order).shuffle(shuffled)
            for rec in shuffled:
                apply_records(state, [rec], train)
            hashes.add(state.state_hash())
            apply_records(state, recs, train, sign=-1)
            assert state.state_hash() == before
        apply_records(state, recs, train)
        hashes.add(state.state_hash())
    assert len(hashes) == 1
    dense = FixedPointState(sorted(Toy().named_parameters()))
    apply_records(dense, recs, TrainConfig())
    assert dense.state_hash() not in hashes  # the mask changed the update


def test_sparse_update_moves_only_the_kept_elements():
    state = FixedPointState(sorted(Toy().named_parameters()), sparsity=2)
    before = state.acc.clone()
    rec = _records(1, count=1)[0]
    apply_records(state, [rec], TrainConfig(density=0.25))
    moved = state.acc != before
    from onebyte.update import record_seeds

    z = state.layout.rademacher(record_seeds(rec, TrainConfig().shared_directions)[0], torch.int32)
    assert moved.any() and not bool((moved & (z == 0)).any())


def test_density_is_validated_and_only_non_default_values_enter_the_run_tag():
    for bad in (0.3, 0.0, 2.0, 1 / 512, True, "half"):
        with pytest.raises(ConfigError, match="train.density"):
            TrainConfig(density=bad).validate()
    assert TrainConfig(density=0.125).sparsity == 3 and TrainConfig().sparsity == 0
    assert "density" not in TrainConfig().canonical()
    assert TrainConfig.from_dict({"density": 1}).density == 1.0
    assert TrainConfig(density=0.5).canonical()["density"] == 0.5


def test_sparse_run_replays_exactly_in_any_order_and_differs_from_dense(tmp_path):
    import onebyte
    from onebyte import RunSpec

    train = TrainConfig(samples=3, batch_size=4, lr=1e-3, horizon=4, density=0.125)
    result = onebyte.simulate(RunSpec(model="tiny-gpt2", train=train), out=tmp_path / "r", peers=3, rounds=4)
    assert onebyte.replay(tmp_path / "r", shuffle=3).state_hash == result.state_hash
    dense = onebyte.simulate(RunSpec(model="tiny-gpt2", train=TrainConfig(samples=3, batch_size=4, lr=1e-3,
                                                                          horizon=4)), out=tmp_path / "d",
                             peers=3, rounds=4)
    assert dense.state_hash != result.state_hash
