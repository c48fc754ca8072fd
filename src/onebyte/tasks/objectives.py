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

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ObjectiveKind
from ..errors import ConfigError, DataError
from ..models import LoadedModel, ModelKind
from .data import Dataset, Example

__all__ = ["ObjectiveKind", "Objective", "EncoderClassifier", "CausalClassifier", "CausalLM", "build_objective",
           "classification_metrics", "METRICS"]

COSINE_SCALE = 20.0
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def classification_metrics(confusion) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 of a confusion matrix (``confusion[i, j]``: examples
    of class i predicted as j). All three are NaN when it counts no example.

    * balanced accuracy: the mean recall over the classes present among the true labels;
    * macro-F1: the mean F1 over the classes present among the true labels *or* the predictions.
      A present class never predicted scores 0, and so does a class predicted but never true; a
      class that is neither (F1 = 0/0) is left out, not counted as 0, so a held-out slice that
      happens to lack a rare class is not scored down for it (scikit-learn's
      ``zero_division=np.nan``)."""
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"a confusion matrix is square, not of shape {c.shape}")
    n = c.sum()
    if n == 0:
        return dict.fromkeys(METRICS, math.nan)
    tp, support, predicted = np.diag(c), c.sum(1), c.sum(0)
    present, occurs = support > 0, support + predicted > 0
    recall = tp[present] / support[present]
    f1 = 2 * tp[occurs] / (support[occurs] + predicted[occurs])  # 2TP / (2TP + FP + FN)
    return {"accuracy": float(tp.sum() / n), "balanced_accuracy": float(recall.mean()), "macro_f1": float(f1.mean())}


class Objective:
    """A loss on a batch of examples, and evaluation (loss, accuracy) on a list of them."""

    def __init__(self, loaded: LoadedModel, dataset: Dataset, max_length: int):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.template = dataset.template
        self.label_names = dataset.label_names
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: inputs are built there (CPU, or a GPU a site moved it to)."""
        return next(self.model.parameters()).device

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def per_example(self, batch: Sequence[Example]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits or None, the loss of each example)."""
        raise NotImplementedError

    def example_rows(self, batch: Sequence[Example]) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(the loss of each example, for each call of the model in order which example each row of
        its batch serves; None: one call, row i is example i's). Per-example gradients read a
        module's output row by row, so no row may serve two examples."""
        return self.per_example(batch)[1], None

    def logits_and_loss(self, batch: Sequence[Example]) -> tuple[torch.Tensor | None, torch.Tensor]:
        logits, losses = self.per_example(batch)
        return logits, losses.mean()

    def loss_tensor(self, batch: Sequence[Example]) -> torch.Tensor:
        """The mean loss as a tensor autograd can differentiate (``grad`` and ``jvp`` estimators)."""
        return self.logits_and_loss(batch)[1]

    @torch.inference_mode()
    def loss(self, batch: Sequence[Example]) -> float:
        return float(self.logits_and_loss(batch)[1])

    @torch.inference_mode()
    def losses(self, batch: Sequence[Example]):
        """Per-example losses as a float64 NumPy array (for differentially private estimates)."""
        return self.per_example(batch)[1].double().cpu().numpy()

    @torch.inference_mode()
    def evaluate(self, examples: Sequence[Example], batch_size: int = 128) -> dict[str, float]:
        """Mean loss, and for a classifier accuracy, balanced accuracy and macro-F1 from one confusion
        matrix (the same keys for plain text, NaN there), and ``recall``: each class's, by name."""
        total, n = 0.0, 0
        confusion = np.zeros((len(self.label_names),) * 2, dtype=np.int64)
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            logits, loss = self.logits_and_loss(chunk)
            total += float(loss) * len(chunk)
            n += len(chunk)
            if logits is not None:
                np.add.at(confusion, ([e.label for e in chunk], logits.argmax(-1).tolist()), 1)
        out = {"loss": total / max(n, 1)}
        out.update(classification_metrics(confusion) if self.label_names else dict.fromkeys(METRICS, math.nan))
        if self.label_names:  # each class's recall (None where the slice holds none of it)
            support = confusion.sum(1)
            out["recall"] = {name: float(confusion[i, i] / support[i]) if support[i] else None
                             for i, name in enumerate(self.label_names)}
        return out


class EncoderClassifier(Objective):
    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self._tokens(texts)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)

    def _descriptions(self) -> list[str]:
        return [f"This is {name}." for name in self.label_names]

    def per_example(self, batch):
        texts = [self.template.format(text=e.text) for e in batch]
        descriptions = self._descriptions()
        emb = self._embed(texts + descriptions)
        logits = COSINE_SCALE * emb[: len(texts)] @ emb[len(texts):].T
        labels = torch.tensor([e.label for e in batch], device=logits.device)
        return logits, F.cross_entropy(logits, labels, reduction="none")

    def example_rows(self, batch):
        """The same losses with the class descriptions embedded once per example, in a second call of
        the model (short rows, not padded to the texts' length): row i·C + c of that call is example
        i's copy of class c's, so every row of either call serves one example."""
        n, descriptions = len(batch), self._descriptions()
        texts = self._embed([self.template.format(text=e.text) for e in batch])
        per = self._embed(descriptions * n).view(n, len(descriptions), -1)
        logits = COSINE_SCALE * torch.einsum("bh,bch->bc", texts, per)
        labels = torch.tensor([e.label for e in batch], device=logits.device)
        rows = [torch.arange(n), torch.arange(n).repeat_interleave(len(descriptions))]
        return F.cross_entropy(logits, labels, reduction="none"), rows


class CausalClassifier(Objective):
    """A causal LM classifies by the likelihood of each label's words after the prompt.

    The prompt is the example's text (through the dataset's template), then the cue
    ``"\nsentiment:"`` unless the user's template ends in its own, optionally wrapped in the
    model's chat template (``chat``). Label words (verbalizers) may span several tokens: each
    label's score is the total log-likelihood of its tokens (full vocabulary); an example is
    classified as the label of highest score, and its loss is the cross-entropy of the scores
    against its label. (Minus the true label's log-likelihood alone would also reward putting
    probability on *any* label word rather than on other answers — "The sentiment is…" —, which a
    chat model spends most of that loss on; the cross-entropy only rewards telling labels apart.)
    Long texts lose their *beginning*: the end of the text, the cue and the answer always fit in
    ``max_length``.

    Sequences are left-padded with explicit position ids, so every row ends at the same position
    and only the last few positions go through the LM head (``logits_to_keep``): a full head is
    positions x vocabulary per example, most of a small model's forward pass."""

    CUE = "\nsentiment:"

    def __init__(self, loaded, dataset, max_length, chat: bool = False):
        super().__init__(loaded, dataset, max_length)
        tok = self.tokenizer
        self.cue = "" if getattr(dataset, "custom_template", False) else self.CUE
        self.pre, self.post = [], []
        if chat:
            if not getattr(tok, "chat_template", None):
                raise ConfigError.of("chat", "this model's tokenizer has no chat template")
            marker = "\u2063onebyte\u2063"
            wrapped = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                              add_generation_prompt=True)
            before, after = wrapped.split(marker)
            self.pre = tok(before, add_special_tokens=False)["input_ids"]
            self.post = tok(after, add_special_tokens=False)["input_ids"]
        elif tok.bos_token_id is not None and getattr(tok, "add_bos_token", False):
            self.pre = [tok.bos_token_id]
        space = "" if chat else " "
        self.label_ids: list[list[int]] = []
        for name in self.label_names:
            ids = tok(space + name, add_special_tokens=False)["input_ids"]
            if not ids:
                raise DataError(f"label {name!r} tokenizes to nothing")
            self.label_ids.append(list(ids))
        if len({tuple(x) for x in self.label_ids}) != len(self.label_ids):
            raise DataError(f"labels {self.label_names} tokenize to the same tokens; rename them")
        self.longest = max(map(len, self.label_ids))
        self.budget = max_length - len(self.pre) - len(self.post) - self.longest
        if self.budget < 4:
            raise ConfigError.of("train.max_length", f"{max_length} tokens leave no room for the text after the "
                                 "chat template and the label")
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def prompt_ids(self, example: Example) -> list[int]:
        """Token ids of one prompt, cut from the left to fit (the end of the text, nearest the answer, stays)."""
        body = self.tokenizer(self.template.format(text=example.text) + self.cue, add_special_tokens=False)
        return self.pre + body["input_ids"][-self.budget:] + self.post

    def _forward(self, rows: list[list[int]], keep: int) -> torch.Tensor:
        """Log-probabilities at the last ``keep`` positions of left-padded rows: (rows, keep, vocab)."""
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep)
        return F.log_softmax(out.logits[:, -keep:].float(), dim=-1)

    def label_loglik(self, batch: Sequence[Example]) -> torch.Tensor:
        """log p(label words | prompt) for every example and label: (examples, labels)."""
        prompts = [self.prompt_ids(e) for e in batch]
        if self.longest == 1:  # one forward: the next-token distribution after each prompt
            logp = self._forward(prompts, 1)[:, -1]
            return logp[:, [ids[0] for ids in self.label_ids]]
        # several tokens: one row per (example, label), each ending in its label's words
        rows = [p + ids for p in prompts for ids in self.label_ids]
        logp = self._forward(rows, self.longest + 1)[:, :-1]  # position j predicts token j + 1
        scores = torch.empty(len(rows), device=logp.device)
        for r, ids in enumerate(self.label_ids * len(prompts)):
            picked = logp[r, self.longest - len(ids):].gather(1, torch.tensor(ids, device=logp.device).unsqueeze(1))
            scores[r] = picked.sum()
        return scores.view(len(prompts), len(self.label_ids))

    def per_example(self, batch):
        scores = self.label_loglik(batch)
        labels = torch.tensor([e.label for e in batch], device=scores.device)
        return scores, F.cross_entropy(scores, labels, reduction="none")


class CausalLM(Objective):
    def per_example(self, batch):
        enc = self._tokens([e.text for e in batch])
        enc.pop("token_type_ids", None)
        logits = self.model(**enc).logits[:, :-1]
        mask = enc["attention_mask"][:, 1:].to(logits.dtype)
        tok = F.cross_entropy(logits.transpose(1, 2), enc["input_ids"][:, 1:], reduction="none")
        return None, (tok * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def build_objective(loaded: LoadedModel, dataset: Dataset, kind: ObjectiveKind, max_length: int,
                    chat: bool = False) -> Objective:
    """Pick the objective for (model kind, requested kind)."""
    if kind is ObjectiveKind.LM:
        if loaded.kind is not ModelKind.CAUSAL:
            raise ConfigError.of("objective", "lm needs a causal language model")
        return CausalLM(loaded, dataset, max_length)
    if not dataset.label_names:
        raise ConfigError.of("objective", "classification needs labelled data (or objective = lm)")
    if loaded.kind is ModelKind.ENCODER:
        return EncoderClassifier(loaded, dataset, max_length)
    return CausalClassifier(loaded, dataset, max_length, chat=chat)
