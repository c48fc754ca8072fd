import numpy as np
import pytest
import torch

from onebyte.rng import BITS_PER_BLOCK, PerturbationLayout, key_limbs, philox4x64, tensor_id


def _words(out):
    return [int(out[2 * i]) | (int(out[2 * i + 1]) << 32) for i in range(4)]


@pytest.mark.parametrize("key", [0, 1, 123456789123, (1 << 64) - 1, 0xDEADBEEFCAFEF00D])
@pytest.mark.parametrize("counter", [0, 1, 7, (1 << 32) - 1])
def test_philox_matches_numpy(key, counter):
    # NumPy increments its 256-bit counter before each block, so block n is counter n-1 + 1.
    bg = np.random.Philox(key=np.array([key, 0], dtype=np.uint64),
                          counter=np.array([counter, 0, 0, 0], dtype=np.uint64))
    expected = [int(x) for x in bg.random_raw(4)]
    c = [torch.tensor([v]) for v in [(counter + 1) & 0xFFFFFFFF, (counter + 1) >> 32, 0, 0, 0, 0, 0, 0]]
    assert _words(philox4x64(c, key_limbs(key))) == expected


def test_philox_all_counter_words_match_numpy():
    ctr = [3, 1 << 40, 0xFFFF_FFFF_FFFF_FFFF, 12345]
    key = [0x0123456789ABCDEF, 0xFEDCBA9876543210]
    bg = np.random.Philox(key=np.array(key, dtype=np.uint64), counter=np.array(ctr, dtype=np.uint64))
    bg.random_raw(4)  # block at counter + 1; the next one is at counter + 2
    expected = [int(x) for x in bg.random_raw(4)]
    nxt = [5, 1 << 40, 0xFFFF_FFFF_FFFF_FFFF, 12345]
    limbs = [torch.tensor([(w >> s) & 0xFFFFFFFF]) for w in nxt for s in (0, 32)]
    klimbs = [(w >> s) & 0xFFFFFFFF for w in key for s in (0, 32)]
    assert _words(philox4x64(limbs, klimbs)) == expected


def test_rademacher_is_bits_of_philox_output():
    layout = PerturbationLayout(["t"], [512])
    z = layout.rademacher(99)
    tid = tensor_id("t")
    for block in (0, 1):
        c = [torch.tensor([v]) for v in [block, 0, 0, 0, tid & 0xFFFFFFFF, tid >> 32, 0, 0]]
        x = sum(w << (64 * i) for i, w in enumerate(_words(philox4x64(c, key_limbs(99)))))
        bits = [(x >> i) & 1 for i in range(BITS_PER_BLOCK)]
        want = [2 * b - 1 for b in bits]
        assert z[block * 256:(block + 1) * 256].tolist() == want


def test_values_independent_of_chunking_and_neighbours():
    names, sizes = ["a.weight", "b.bias", "c"], [1000, 3, 70_000]
    full = PerturbationLayout(names, sizes)
    alone = PerturbationLayout(["c"], [70_000])
    reordered = PerturbationLayout(["c", "a.weight"], [70_000, 1000])
    for seed in (0, 5, 2**63 + 11):
        zc = full.segment(full.rademacher(seed), 2)
        assert torch.equal(zc, alone.segment(alone.rademacher(seed), 0))
        assert torch.equal(zc, reordered.segment(reordered.rademacher(seed), 0))
        za = full.segment(full.rademacher(seed), 0)
        assert torch.equal(za, reordered.segment(reordered.rademacher(seed), 1))


def test_rademacher_is_balanced_and_seed_dependent():
    layout = PerturbationLayout(["x"], [200_000])
    z1, z2 = layout.rademacher(1), layout.rademacher(2)
    assert set(torch.unique(z1).tolist()) == {-1, 1}
    assert abs(float(z1.float().mean())) < 0.01
    assert abs(float((z1.float() * z2.float()).mean())) < 0.01


def test_numpy_fast_path_equals_tensor_op_reference():
    layout = PerturbationLayout(["a", "b.weight", "c"], [300, 5000, 256])
    for seed in (0, 3, 2**64 - 1):
        layout._fill_index(seed)
        assert torch.equal(layout._index, layout.bits(seed))


def test_dtypes_and_reused_output_agree():
    layout = PerturbationLayout(["w"], [1000])
    ref = layout.rademacher(8)
    out = torch.empty(layout.size, dtype=torch.float32)
    assert layout.rademacher(8, torch.float32, out=out) is out
    assert torch.equal(out, ref.float())
    assert torch.equal(layout.rademacher(8, torch.int32), ref.int())
    with pytest.raises(ValueError):
        layout.rademacher(8, torch.float32, out=torch.empty(3))
