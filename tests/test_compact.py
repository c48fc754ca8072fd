"""The compact state (float32 view + int8 remainder) against the wide one (int32 accumulators):
the same bits for every update, hash and snapshot; the same perturbed forwards through hooks;
and a fall-back when hooks cannot see every use of a tuned tensor."""

import numpy as np
import pytest
import torch

from conftest import Toy
from onebyte import state as state_mod
from onebyte.compact import CompactState, hooks_cover
from onebyte.config import TrainConfig
from onebyte.record import build_record
from onebyte.state import FixedPointState
from onebyte.update import apply_records

RUN = b"c" * 16


class Net(torch.nn.Module):
    """Two linear layers, a norm and an embedding whose weight is tied to the output layer."""

    def __init__(self, width: int = 40, vocab: int = 50):
        super().__init__()
        torch.manual_seed(3)
        self.emb = torch.nn.Embedding(vocab, width)
        self.l1 = torch.nn.Linear(width, width)
        self.norm = torch.nn.LayerNorm(width)
        self.out = torch.nn.Linear(width, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(torch.tanh(self.l1(self.emb(ids))))).sum()


class Sneaky(Net):
    """Uses the tied weight directly, outside any module that owns it."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.norm(self.l1(self.emb(ids))) @ self.emb.weight.T).sum()


def _pair(model_cls=Net):
    a, b = model_cls(), model_cls()
    return a, FixedPointState(sorted(a.named_parameters())), b, CompactState(sorted(b.named_parameters()))


def _records(n: int, count: int = 3, scale: float = 60.0):
    rng = np.random.default_rng(1)
    codec = TrainConfig().codec
    return [build_record(codec, RUN, i // 4, i % 4, 0, rng.normal(size=count) * scale, i) for i in range(n)]


def _same(wide: FixedPointState, compact: CompactState) -> None:
    assert wide.state_hash() == compact.state_hash()
    assert torch.equal(wide.view, compact.view)
    got = compact.tensors()
    for name, t in wide.tensors().items():
        assert torch.equal(t, got[name])
    assert int(compact.rem.abs().max()) <= 64


@pytest.mark.parametrize("n", [1, 3, 12])
def test_updates_give_the_wide_states_bits(n):
    """One record, a few, and a batch large enough for the many-directions path."""
    _, wide, _, compact = _pair()
    _same(wide, compact)
    recs = _records(n)
    apply_records(wide, recs, TrainConfig())
    apply_records(compact, recs, TrainConfig())
    _same(wide, compact)
    apply_records(wide, recs[: n // 2 + 1], TrainConfig(), sign=-1)
    apply_records(compact, recs[: n // 2 + 1], TrainConfig(), sign=-1)
    _same(wide, compact)


def test_large_layouts_chunk_and_wrap_like_the_wide_state(monkeypatch):
    """A layout above SMALL_LAYOUT (chunk by chunk, several chunks per group), and accumulators
    pushed to the int32 limits, where float32 rounds to 2^31 and the remainder is largest."""
    monkeypatch.setattr(state_mod, "CHUNK", 1 << 10)
    monkeypatch.setattr("onebyte.compact.CHUNK", 1 << 10)
    monkeypatch.setattr("onebyte.compact.SPAN", 1 << 12)
    monkeypatch.setattr("onebyte.compact.SMALL_LAYOUT", 1 << 8)
    _, wide, _, compact = _pair()
    edge = {}
    for name, t in wide.tensors().items():
        x = t.clone().reshape(-1)
        x[: min(8, x.numel())] = torch.tensor([2**31 - 1, -2**31, 2**31 - 64, 2**31 - 65, 2**24 + 1,
                                               -(2**30) - 63, 12345, -1][: min(8, x.numel())], dtype=torch.int32)
        edge[name] = x.view(t.shape)
    wide.load_tensors(edge)
    compact.load_tensors(edge)
    _same(wide, compact)
    recs = _records(9)
    for batch in (recs[:1], recs):
        apply_records(wide, batch, TrainConfig())
        apply_records(compact, batch, TrainConfig())
        _same(wide, compact)


def test_toy_base_weights_and_snapshot_round_trip():
    a, b = Toy(), Toy()
    wide, compact = FixedPointState(sorted(a.named_parameters())), CompactState(sorted(b.named_parameters()))
    _same(wide, compact)
    rng = np.random.default_rng(5)
    noisy = {k: torch.from_numpy(rng.integers(-2**31, 2**31, size=t.shape, dtype=np.int64).astype(np.int32))
             for k, t in wide.tensors().items()}
    wide.load_tensors(noisy)
    compact.load_tensors(noisy)
    _same(wide, compact)


def test_hooked_perturbation_gives_the_in_place_forwards():
    """Perturbed forwards through hooks equal FixedPointState's in-place ones, bit for bit, the
    tied weight included; refresh leaves the model as it was, 1,000 times over."""
    a, wide, b, compact = _pair()
    compact.attach(b)
    ids = torch.arange(30).remainder(50).view(5, 6)
    with torch.inference_mode():
        base = b(ids)
        for seed, eps in ((7, 1e-3), (8, 0.05)):
            wide.perturb(seed, eps)
            compact.perturb(seed, eps)
            assert torch.equal(a(ids), b(ids))
            wide.perturb(seed, -2 * eps)
            compact.perturb(seed, -2 * eps)
            assert torch.equal(a(ids), b(ids))
            assert not torch.equal(b(ids), base)
            wide.refresh()
            compact.refresh()
            assert torch.equal(b(ids), base)
        view, h = compact.view.clone(), compact.state_hash()
        for seed in range(1000):
            compact.perturb(seed, 1e-2)
            compact.refresh()
        assert torch.equal(compact.view, view) and compact.state_hash() == h
        assert torch.equal(b(ids), base)
    assert all(p.data_ptr() == compact.view.data_ptr() + 4 * compact.layout.offsets[i]
               for i, p in enumerate(compact._params.values()))


def test_perturb_without_hooks_is_refused():
    _, _, _, compact = _pair()
    with pytest.raises(RuntimeError, match="attach"):
        compact.perturb(1, 1e-3)


def test_hooks_cover_finds_uses_outside_owning_modules():
    ids = torch.arange(12).view(3, 4)
    good, bad = Net(), Sneaky()
    assert hooks_cover(good, list(good.parameters()), lambda: good(ids))
    assert not hooks_cover(bad, list(bad.parameters()), lambda: bad(ids))
    # the check leaves both models as they were
    assert torch.equal(bad(ids), Sneaky()(ids)) and torch.equal(good(ids), Net()(ids))


def test_tuned_state_picks_compact_only_where_hooks_cover(monkeypatch):
    from onebyte.models import LoadedModel, ModelKind
    from onebyte.training import tuned_state

    monkeypatch.setenv("ONEBYTE_STATE", "compact")
    ids = torch.arange(12).view(3, 4)
    for cls, expected in ((Net, CompactState), (Sneaky, FixedPointState)):
        loaded = LoadedModel(spec=cls.__name__, model=cls(), tokenizer=None, kind=ModelKind.CAUSAL)
        _, state = tuned_state(loaded, "all", RUN, probe=lambda lm: lm.model(ids))
        assert type(state) is expected
        # falling back keeps the accumulators the compact state took, remainders and steps included
        model = cls()
        direct = FixedPointState(sorted(model.named_parameters()))
        assert state.frac_bits == direct.frac_bits and state.state_hash() == direct.state_hash()
        assert torch.equal(loaded.model(ids), model(ids))
    monkeypatch.setenv("ONEBYTE_STATE", "wide")
    loaded = LoadedModel(spec="net", model=Net(), tokenizer=None, kind=ModelKind.CAUSAL)
    _, state = tuned_state(loaded, "all", RUN, probe=lambda lm: lm.model(ids))
    assert type(state) is FixedPointState


def test_a_run_ends_on_the_same_hash_in_either_state(monkeypatch, tmp_path):
    """tiny-gpt2, all weights: simulate with the compact state and with the wide one."""
    import onebyte

    spec = onebyte.RunSpec(model="tiny-gpt2", task="vader",
                           train=onebyte.TrainConfig(samples=2, batch_size=8, tune="all"))
    hashes = {}
    for mode in ("wide", "compact"):
        monkeypatch.setenv("ONEBYTE_STATE", mode)
        result = onebyte.simulate(spec, out=tmp_path / mode, peers=2, rounds=3)
        hashes[mode] = result.state_hash
    assert hashes["wide"] == hashes["compact"]
