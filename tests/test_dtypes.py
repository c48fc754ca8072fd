"""Models in their own dtype (float32, bfloat16, float16): forward passes run in it, and the
integer state makes perturb -> measure -> restore exact in each (MeZO's fp16 weights drift)."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import onebyte
from onebyte.codec import Codec
from onebyte.config import TrainConfig
from onebyte.models import load_model, minilm_path
from onebyte.params import TuneSpec, select_parameters
from onebyte.record import build_record
from onebyte.state import FixedPointState, frac_bits_for
from onebyte.update import apply_records

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
ARCHS = ["llama", "gpt2"]


def tiny_model(arch: str, vocab: int, seed: int = 0) -> torch.nn.Module:
    """A seeded random tiny causal LM (a few thousand weights at ``vocab=256``)."""
    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
        return LlamaForCausalLM(cfg)
    cfg = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=16, n_layer=2, n_head=2)
    return GPT2LMHeadModel(cfg)


def save_tiny(path, arch: str, dtype: torch.dtype, vocab: int = 256, seed: int = 0) -> str:
    """``tiny_model`` in ``dtype``, saved as a Hugging Face directory with MiniLM's tokenizer."""
    tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    tiny_model(arch, vocab, seed).to(dtype).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().view(torch.uint8)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_load_keeps_the_stored_dtype(tmp_path, arch, dtype):
    loaded = load_model(save_tiny(tmp_path / "m", arch, dtype))
    assert {p.dtype for p in loaded.model.parameters()} == {dtype}
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    state = FixedPointState(select_parameters(loaded.model, TuneSpec.parse("all")))
    assert state.view.dtype == dtype
    # the view is the base weights on the grid; a bf16/fp16 base lies on it exactly
    again = load_model(str(tmp_path / "m")).model
    if dtype != torch.float32:
        for (n, p), (_, q) in zip(sorted(loaded.model.named_parameters()), sorted(again.named_parameters()),
                                  strict=True):
            assert torch.equal(bits(p), bits(q)), n


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_thousand_perturb_restore_cycles_are_exact(tmp_path, arch, dtype):
    """1,000 x (theta + eps z, theta - eps z, restore): the view keeps its bits, the hash its value,
    the model its outputs. Large and small eps, so the perturbed weights round in the dtype."""
    loaded = load_model(save_tiny(tmp_path / "m", arch, dtype))
    state = FixedPointState(select_parameters(loaded.model, TuneSpec.parse("all")))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        before_logits = loaded.model(input_ids=ids).logits
    view0, hash0 = bits(state.view), state.state_hash()
    for i in range(1000):
        eps = (1e-3, 3e-2, 1e-5)[i % 3]
        state.perturb(i, eps)
        if i < 3:  # the perturbation really moves the model
            assert not torch.equal(bits(state.view), view0)
        state.perturb(i, -2.0 * eps)
        state.refresh()
    assert torch.equal(bits(state.view), view0)
    assert state.state_hash() == hash0
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, before_logits)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_record_applied_then_undone_restores_the_exact_view(tmp_path, dtype):
    loaded = load_model(save_tiny(tmp_path / "m", "llama", dtype))
    state = FixedPointState(select_parameters(loaded.model, TuneSpec.parse("all")))
    train = TrainConfig(lr=1e-3, codec=Codec.FLOAT32)
    rng = np.random.default_rng(0)
    recs = [build_record(Codec.FLOAT32, b"t" * 16, 0, p, 0, rng.normal(size=4) * 5, p) for p in range(3)]
    view0, hash0 = bits(state.view), state.state_hash()
    apply_records(state, recs, train)
    assert not torch.equal(bits(state.view), view0) and state.state_hash() != hash0
    apply_records(state, recs[1:], train, sign=-1)
    apply_records(state, recs[:1], train, sign=-1)
    assert torch.equal(bits(state.view), view0)
    assert state.state_hash() == hash0


def test_updates_below_the_bf16_resolution_accumulate(tmp_path):
    """The accumulators are the master copy: an update far below a bf16 step leaves the weights as
    they are, yet many of them move the weights, as in float32 (a bf16-fine grid would drop them)."""
    loaded = load_model(save_tiny(tmp_path / "m", "llama", torch.bfloat16))
    norms = select_parameters(loaded.model, TuneSpec.parse("norm"))  # RMSNorm weights, all 1.0
    state = FixedPointState(norms)
    (f,) = set(state.frac_bits.values())

    def weights():
        return torch.cat([bits(p).reshape(-1) for _, p in norms])  # the weights, not the padding

    w0, acc0 = weights(), state.acc.clone()
    c = round(1e-6 * 2.0 ** f)  # one MeZO-sized step: 1e-6, while a bf16 step at 1.0 is 2^-7
    state.add(7, {f: c})
    state.refresh()
    assert not torch.equal(state.acc, acc0) and torch.equal(weights(), w0)
    for _ in range(7999):  # 8e-3 in all, along one direction: beyond half a bf16 step
        state.add(7, {f: c})
    state.refresh()
    moved = (torch.cat([p.detach().reshape(-1) for _, p in norms]).float() - 1.0).abs()
    assert (moved > 4e-3).all()
    for _ in range(8000):
        state.add(7, {f: -c})
    state.refresh()
    assert torch.equal(state.acc, acc0) and torch.equal(weights(), w0)


def test_frac_bits_keep_float16_views_finite():
    for m in (0.5, 100.0, 9000.0, 20000.0, 40000.0):
        f = frac_bits_for(m, torch.float16)
        assert 4 * max(m, 1.0) <= 2.0 ** (31 - f) or m > 8192  # the usual headroom where fp16 allows it
        assert m * 2.0 ** f < 2.0 ** 31  # the base always fits the accumulators
        if m < 32768:
            assert 2.0 ** (31 - f) <= 32768  # every reachable view is finite in fp16
    assert frac_bits_for(0.5, torch.bfloat16) == frac_bits_for(0.5) == 28


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_simulate_and_replay_agree_in_each_dtype(tmp_path, dtype):
    """Base hash and replay for each dtype: replay of the run's ledger gives the run's state hash,
    and a base in another dtype is another base."""
    vocab = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True).vocab_size
    path = save_tiny(tmp_path / "m", "llama", dtype, vocab=vocab)
    spec = onebyte.RunSpec(model=path, task="vader", train=TrainConfig(tune="all", samples=1, batch_size=4))
    res = onebyte.simulate(spec, out=tmp_path / "run", peers=2, rounds=2, eval_size=8)
    assert res.model.dtype == dtype
    tuned = onebyte.replay(tmp_path / "run")
    assert tuned.state_hash == res.state_hash
    assert tuned.state.view.dtype == dtype
    assert torch.equal(bits(tuned.state.view), bits(res.setup.state.view))
    other = torch.float32 if dtype != torch.float32 else torch.bfloat16
    assert load_model(save_tiny(tmp_path / "o", "llama", other, vocab=vocab)).base_hash != \
        load_model(path).base_hash
