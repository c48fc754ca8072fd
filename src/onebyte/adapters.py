"""LoRA adapters built with PEFT (``--tune lora:r=8[,alpha=16][,targets=q_proj,v_proj]``).

Only the adapters (``lora_A``, ``lora_B``) are tuned; the base stays frozen and its hash, taken
before the adapters exist, is the run's base hash (so the run tag can be computed first). Every
peer must build the same starting adapters: PEFT initialises them with torch's global generator
(``lora_A`` Kaiming-uniform, ``lora_B`` zero, so the model starts equal to the base), and we seed
it from the run tag (``stream_seed(run_tag, "lora-init")``) inside ``torch.random.fork_rng`` so
the caller's random state is untouched.

PEFT keeps adapters in float32 on a bf16/fp16 base (its ``autocast_adapter_dtype``): the adapters
are tiny, their state's view is float32, and the base's matmuls still run in the base's dtype.

The fixed-point step of ``lora_B`` cannot come from its values (all zero). ``B A`` is an update of
the adapted weight ``W``, so B's step is chosen to hold ``max|W|`` with 4x headroom, the same rule
as tuning ``W`` itself (``lora_magnitudes``); on most models that is the floor of 1 anyway.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from .errors import ConfigError, MissingDependency, ModelError
from .models import LoadedModel, ModelKind, export_model, tensors_hash
from .params import TuneSpec
from .seeds import stream_seed

__all__ = ["attach_lora", "lora_magnitudes", "is_lora", "export_adapter", "adapters_hash"]


def _peft():
    try:
        import peft
    except ImportError:
        raise MissingDependency("peft", "llm", "LoRA tuning (--tune lora:...)") from None
    return peft


def is_lora(loaded: LoadedModel) -> bool:
    """Whether ``loaded.model`` carries PEFT adapters."""
    return type(loaded.model).__module__.startswith("peft.")


def attach_lora(loaded: LoadedModel, spec: TuneSpec, run_tag: bytes) -> LoadedModel:
    """Wrap the base in LoRA adapters initialised from ``run_tag``; the base is modified in place
    (its target layers gain adapters) and the result keeps the base's hash."""
    if spec.kind != "lora":
        raise ValueError(f"{spec} is not a LoRA tune spec")
    if is_lora(loaded):
        raise ModelError("the model already carries LoRA adapters; give the bare base model")
    peft = _peft()
    base_hash = loaded.base_hash
    alpha = int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha
    # GPT-2's projections are transformers' Conv1D (weights stored transposed): tell PEFT so.
    conv1d = any(type(m).__name__ == "Conv1D" for m in loaded.model.modules())
    cfg = peft.LoraConfig(r=spec.r, lora_alpha=alpha, target_modules=list(spec.targets) or None,
                          lora_dropout=0.0, bias="none", init_lora_weights=True, fan_in_fan_out=conv1d,
                          task_type="CAUSAL_LM" if loaded.kind is ModelKind.CAUSAL else None)
    seed = stream_seed(run_tag, "lora-init")
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations inside PEFT
            torch.manual_seed(seed)
            model = peft.get_peft_model(loaded.model, cfg)
    except ValueError as exc:  # unknown targets, or an architecture without PEFT defaults
        hint = "" if spec.targets else " (name them: lora:r=8,targets=q_proj,v_proj)"
        raise ConfigError.of("train.tune", f"{spec}: {str(exc).splitlines()[0]}{hint}") from None
    return LoadedModel(loaded.spec, model.eval(), loaded.tokenizer, loaded.kind, fixed_base_hash=base_hash)


def lora_magnitudes(model: torch.nn.Module) -> dict[str, float]:
    """For each ``lora_B`` weight, ``max|W|`` of the base layer it adapts (see the module doc)."""
    out: dict[str, float] = {}
    for name, module in model.named_modules():
        base, lora_b = getattr(module, "base_layer", None), getattr(module, "lora_B", None)
        if base is None or not isinstance(lora_b, torch.nn.ModuleDict):
            continue
        weight = getattr(base, "weight", None)
        if weight is None:
            continue
        scale = float(weight.detach().abs().max())
        for adapter in lora_b:
            out[f"{name}.lora_B.{adapter}.weight"] = scale
    return out


def export_adapter(loaded: LoadedModel, out_dir: Path | str, merge: bool = False) -> Path:
    """Write a LoRA run: a PEFT adapter directory (``PeftModel.from_pretrained(base, out)`` loads
    it), or with ``merge`` the base with the adapters merged in, as a Hugging Face directory.
    The tokenizer is written beside either. ``loaded`` is left as it was."""
    out = Path(out_dir)
    model = loaded.model
    if merge:
        # merge_and_unload rewrites the model it is called on: merge a copy.
        merged = copy.deepcopy(model).merge_and_unload()
        return export_model(LoadedModel(loaded.spec, merged, loaded.tokenizer, loaded.kind), out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # The tuned adapters alias one flat buffer; PEFT's save clones tensors that share storage.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations inside PEFT
            model.save_pretrained(str(out), safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(out))
    except OSError as exc:
        raise ModelError(f"cannot write the adapter to {out}: {exc.strerror or exc}") from None
    return out


def adapters_hash(model: torch.nn.Module) -> str:
    """SHA-256 of the adapter weights alone (name order): equal for peers that built the same."""
    return tensors_hash({n: p for n, p in model.named_parameters() if ".lora_" in n})
