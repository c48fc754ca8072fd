"""What a model minimises. Three kinds, all forward-only:

* ``EncoderClassifier``: logits = scale * cosine(embedding of the prompted text, embedding of each
  label's description "This is {label}."); mean pooling, as sentence-transformers does. No new
  parameters, so training starts from the zero-shot classifier.
* ``CausalClassifier``: as in the paper, the loss on the label word after a prompt
  ("{text}\\nsentiment:" -> " positive" / " negative"), restricted to the label words.
* ``CausalLM``: next-token loss on plain text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..config import ObjectiveKind
from ..errors import ConfigError, DataError
from ..models import LoadedModel, ModelKind
from .data import Dataset, Example

__all__ = ["ObjectiveKind", "Objective", "EncoderClassifier", "CausalClassifier", "CausalLM", "build_objective"]

COSINE_SCALE = 20.0


class Objective:
    """A loss on a batch of examples, and evaluation (loss, accuracy) on a list of them."""

    def __init__(self, loaded: LoadedModel, dataset: Dataset, max_length: int):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.template = dataset.template
        self.label_names = dataset.label_names
        self.max_length = max_length

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def per_example(self, batch: Sequence[Example]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits or None, the loss of each example)."""
        raise NotImplementedError

    def logits_and_loss(self, batch: Sequence[Example]) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits, losses = self.per_example(batch)
        return logits, losses.mean()

    @torch.inference_mode()
    def loss(self, batch: Sequence[Example]) -> float:
        return float(self.logits_and_loss(batch)[1])

    @torch.inference_mode()
    def losses(self, batch: Sequence[Example]):
        """Per-example losses as a float64 NumPy array (for differentially private estimates)."""
        return self.per_example(batch)[1].double().numpy()

    @torch.inference_mode()
    def evaluate(self, examples: Sequence[Example], batch_size: int = 128) -> dict[str, float]:
        total, correct, n = 0.0, 0, 0
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            logits, loss = self.logits_and_loss(chunk)
            total += float(loss) * len(chunk)
            n += len(chunk)
            if logits is not None:
                labels = torch.tensor([e.label for e in chunk])
                correct += int((logits.argmax(-1) == labels).sum())
        out = {"loss": total / max(n, 1)}
        out["accuracy"] = correct / max(n, 1) if self.label_names else math.nan
        return out


class EncoderClassifier(Objective):
    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self._tokens(texts)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)

    def per_example(self, batch):
        texts = [self.template.format(text=e.text) for e in batch]
        descriptions = [f"This is {name}." for name in self.label_names]
        emb = self._embed(texts + descriptions)
        logits = COSINE_SCALE * emb[: len(texts)] @ emb[len(texts):].T
        labels = torch.tensor([e.label for e in batch])
        return logits, F.cross_entropy(logits, labels, reduction="none")


class CausalClassifier(Objective):
    def __init__(self, loaded, dataset, max_length):
        super().__init__(loaded, dataset, max_length)
        self.label_tokens = []
        for name in self.label_names:
            ids = self.tokenizer(" " + name, add_special_tokens=False)["input_ids"]
            if not ids:
                raise DataError(f"label {name!r} tokenizes to nothing")
            self.label_tokens.append(ids[0])
        if len(set(self.label_tokens)) != len(self.label_tokens):
            raise DataError(f"labels {self.label_names} share their first token; rename them")
        self.tokenizer.padding_side = "right"

    def per_example(self, batch):
        texts = [self.template.format(text=e.text) + "\nsentiment:" for e in batch]
        enc = self._tokens(texts)
        enc.pop("token_type_ids", None)
        logits = self._label_logits(enc)
        labels = torch.tensor([e.label for e in batch])
        return logits, F.cross_entropy(logits, labels, reduction="none")


    def _label_logits(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the label tokens at each text's last position. Only those rows of the LM head
        are computed: a full head costs positions x vocabulary (30k-50k) per example, which is
        most of a small model's forward pass, for a softmax over a handful of labels."""
        last = enc["attention_mask"].sum(1) - 1
        rows = torch.arange(len(last))
        backbone = getattr(self.model, "base_model", None)
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if backbone is None or backbone is self.model or not isinstance(head, torch.nn.Linear):
            return self.model(**enc).logits[rows, last][:, self.label_tokens]
        hidden = backbone(**enc).last_hidden_state[rows, last]
        logits = hidden @ head.weight[self.label_tokens].T
        return logits + head.bias[self.label_tokens] if head.bias is not None else logits


class CausalLM(Objective):
    def per_example(self, batch):
        enc = self._tokens([e.text for e in batch])
        enc.pop("token_type_ids", None)
        logits = self.model(**enc).logits[:, :-1]
        mask = enc["attention_mask"][:, 1:].to(logits.dtype)
        tok = F.cross_entropy(logits.transpose(1, 2), enc["input_ids"][:, 1:], reduction="none")
        return None, (tok * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def build_objective(loaded: LoadedModel, dataset: Dataset, kind: ObjectiveKind, max_length: int) -> Objective:
    """Pick the objective for (model kind, requested kind)."""
    if kind is ObjectiveKind.LM:
        if loaded.kind is not ModelKind.CAUSAL:
            raise ConfigError.of("objective", "lm needs a causal language model")
        return CausalLM(loaded, dataset, max_length)
    if not dataset.label_names:
        raise ConfigError.of("objective", "classification needs labelled data (or objective = lm)")
    if loaded.kind is ModelKind.ENCODER:
        return EncoderClassifier(loaded, dataset, max_length)
    return CausalClassifier(loaded, dataset, max_length)
