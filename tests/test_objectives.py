"""Causal-LM classification: label likelihoods over several tokens, padding that changes nothing,
truncation that keeps the cue and the answer, and the chat template."""

from dataclasses import replace

import pytest
import torch

from onebyte.config import ObjectiveKind
from onebyte.errors import ConfigError
from onebyte.models import load_model
from onebyte.tasks.data import Example, load_dataset
from onebyte.tasks.objectives import CausalClassifier, build_objective


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-gpt2"), load_dataset("vader")


def _direct(model, ids: list[int], label: list[int]) -> float:
    """log p(label | ids) computed on one unpadded sequence, the plain way."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + label])).logits[0].float()
    logp = torch.log_softmax(logits, -1)[len(ids) - 1:-1]
    return float(logp.gather(1, torch.tensor(label).unsqueeze(1)).sum())


def test_multi_token_labels_score_their_total_log_likelihood(tiny):
    loaded, ds = tiny
    obj = CausalClassifier(loaded, replace(ds, label_names=["very negative", "quite positive"]), 32)
    assert all(len(ids) == 2 for ids in obj.label_ids)
    batch = ds.test[:5]
    with torch.no_grad():
        scores = obj.label_loglik(batch)
    for i, e in enumerate(batch):
        for c, ids in enumerate(obj.label_ids):
            assert scores[i, c].item() == pytest.approx(_direct(loaded.model, obj.prompt_ids(e), ids), abs=1e-4)


def test_left_padding_changes_no_score(tiny):
    loaded, ds = tiny
    obj = build_objective(loaded, ds, ObjectiveKind.AUTO, 32)
    batch = sorted(ds.test[:16], key=lambda e: len(e.text))  # rows of different lengths
    with torch.no_grad():
        together = obj.label_loglik(batch)
        alone = torch.cat([obj.label_loglik([e]) for e in batch])
    assert torch.allclose(together, alone, atol=1e-5)
    # the loss is the cross-entropy of the label scores; classifying picks the likeliest label
    _, losses = obj.per_example(batch)
    labels = torch.tensor([e.label for e in batch])
    expected = -torch.log_softmax(together, 1)[torch.arange(len(batch)), labels]
    assert torch.allclose(losses, expected, atol=1e-5)


def test_long_text_loses_its_beginning_never_the_cue_or_answer(tiny):
    loaded, ds = tiny
    obj = build_objective(loaded, ds, ObjectiveKind.AUTO, 16)
    tok = loaded.tokenizer
    long = Example(" ".join(["filler"] * 200) + " the ending words", 1)
    ids = obj.prompt_ids(long)
    cue = tok(obj.cue, add_special_tokens=False)["input_ids"]
    assert len(ids) + obj.longest <= 16
    assert ids[-len(cue):] == cue  # the cue survived
    assert "ending words" in tok.decode(ids)  # the end of the text, nearest the answer, survived
    assert "filler filler filler filler filler filler filler filler filler" not in tok.decode(ids)


def test_custom_template_brings_its_own_cue(tiny):
    loaded, ds = tiny
    assert CausalClassifier(loaded, ds, 32).cue == CausalClassifier.CUE
    assert CausalClassifier(loaded, replace(ds, custom_template=True), 32).cue == ""


def test_chat_template_wraps_the_prompt(tiny):
    loaded, ds = tiny
    with pytest.raises(ConfigError, match="chat template"):
        CausalClassifier(loaded, ds, 32, chat=True)
    tok = loaded.tokenizer
    tok.chat_template = ("{% for m in messages %}<user> {{ m['content'] }} </user>{% endfor %}"
                         "{% if add_generation_prompt %} <bot>{% endif %}")
    try:
        obj = CausalClassifier(loaded, ds, 32, chat=True)
        text = tok.decode(obj.prompt_ids(Example("lovely", 1)))
        assert text.startswith("<") and "lovely" in text and text.rstrip().endswith("bot >")
    finally:
        tok.chat_template = None
