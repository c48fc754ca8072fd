"""LoRA adapters through PEFT: deterministic initialisation from the run tag, only the adapters
tuned, replay to the run's hash, and exports that PEFT (or plain transformers) load."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

import onebyte
from onebyte.adapters import adapters_hash, attach_lora
from onebyte.config import TrainConfig
from onebyte.models import load_model, minilm_path
from onebyte.params import TuneSpec
from onebyte.simulator import SimConfig, run_simulation
from onebyte.training import tuned_state
from test_dtypes import save_tiny

SPEC = TuneSpec.parse("lora:r=4,targets=c_attn")


def test_peers_build_identical_initial_adapters_from_the_run_tag():
    rng_before = torch.random.get_rng_state()
    a = attach_lora(load_model("tiny-gpt2"), SPEC, b"a" * 32)
    b = attach_lora(load_model("tiny-gpt2"), SPEC, b"a" * 32)
    other = attach_lora(load_model("tiny-gpt2"), SPEC, b"b" * 32)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's generator is untouched
    assert adapters_hash(a.model) == adapters_hash(b.model) != adapters_hash(other.model)
    lora_b = [p for n, p in a.model.named_parameters() if ".lora_B." in n]
    assert lora_b and all(not p.any() for p in lora_b)  # B = 0: the model starts as the base
    base = load_model("tiny-gpt2")
    assert a.base_hash == base.base_hash  # the base hash is the base's, without adapters
    ids = torch.tensor([[101, 2023, 2003, 102]])
    with torch.no_grad():
        assert torch.equal(a.model(input_ids=ids).logits, base.model(input_ids=ids).logits)


def test_only_the_adapters_are_tuned_and_b_gets_the_adapted_weights_scale():
    loaded, state = tuned_state(load_model("tiny-gpt2"), str(SPEC), b"a" * 32)
    assert state.names and all(".lora_A." in n or ".lora_B." in n for n in state.names)
    assert len(state.names) == 4  # A and B in each of two layers
    # B (all zero) takes the step that the c_attn weight it adapts would get
    for n in state.names:
        if ".lora_B." in n:
            w = dict(loaded.model.named_parameters())[n.replace("lora_B.default", "base_layer")]
            from onebyte.state import frac_bits_for
            assert state.frac_bits[n] == frac_bits_for(float(w.abs().max()))


def test_unknown_targets_are_a_config_error():
    with pytest.raises(onebyte.ConfigError) as err:
        attach_lora(load_model("tiny-gpt2"), TuneSpec.parse("lora:r=2,targets=q_proj"), b"a" * 32)
    assert err.value.problems[0][0] == "train.tune"


def _llama_dir(tmp_path) -> str:
    vocab = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True).vocab_size
    return save_tiny(tmp_path / "llama", "llama", torch.float32, vocab=vocab)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers deprecations inside PEFT
@pytest.mark.parametrize("arch", ["tiny-gpt2", "llama"])
def test_lora_run_replays_and_exports(tmp_path, arch):
    """2 peers x 3 rounds; replay gives the run's hash; the adapter directory loads with PEFT into
    a fresh base and gives *equal* logits (torch.equal: the same weights through the same PEFT
    layers, so the same float operations in the same order); the merged model is W + (alpha/r) B A
    folded into W, which rounds differently from W x + B (A x): close, not equal."""
    model, targets = ("tiny-gpt2", "c_attn") if arch == "tiny-gpt2" else (_llama_dir(tmp_path), "q_proj,v_proj")
    cfg = SimConfig(model=model, task="vader", peers=2, rounds=3, eval_size=8,
                    train=TrainConfig(tune=f"lora:r=4,targets={targets}", samples=2, batch_size=8, lr=1e-2))
    res = run_simulation(cfg.validate(), tmp_path / "run")
    assert any(".lora_B." in n and bool(p.any()) for n, p in res.model.named_parameters())  # training moved B

    tuned = onebyte.replay(tmp_path / "run")
    assert tuned.state_hash == res.state_hash and tuned.records == 6

    out = tuned.export(tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    peft_model = PeftModel.from_pretrained(load_model(model).model, str(out)).eval()
    ids = tuned.tokenizer(["a fine film", "dull and far too long"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = tuned.model(**ids).logits
        assert torch.equal(peft_model(**ids).logits, expected)
        assert torch.equal(res.model(**ids).logits, expected)

    merged = tuned.export(tmp_path / "merged", merge=True)
    assert not (merged / "adapter_config.json").exists()
    plain = load_model(str(merged)).model
    assert not any(".lora_" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(**ids).logits, expected, rtol=0, atol=1e-5)
    with torch.no_grad():  # exporting left the replayed model as it was
        assert torch.equal(tuned.model(**ids).logits, expected)
