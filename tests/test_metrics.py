"""Accuracy, balanced accuracy and macro-F1 from a confusion matrix, and what evaluate reports."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from onebyte.tasks.data import Example
from onebyte.tasks.objectives import METRICS, Objective, classification_metrics


def _confusion(truth, pred, k):
    c = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        c[t, p] += 1
    return c


def test_hand_computed_three_classes():
    # rows: true class, columns: predicted. Class 0: 5 of 6 right; 1: 1 of 3; 2: 0 of 1.
    c = [[5, 1, 0],
         [2, 1, 0],
         [1, 0, 0]]
    m = classification_metrics(c)
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["balanced_accuracy"] == pytest.approx((5 / 6 + 1 / 3 + 0) / 3)
    # F1 = 2TP / (support + predicted): class 0: 10/(6+8), class 1: 2/(3+2), class 2: 0/(1+0)
    assert m["macro_f1"] == pytest.approx((10 / 14 + 2 / 5 + 0) / 3)


def test_majority_guess_has_the_majority_rate_but_not_the_balance():
    # the trap: 65% majority class, everything predicted as it
    m = classification_metrics([[65, 0, 0], [25, 0, 0], [10, 0, 0]])
    assert m["accuracy"] == pytest.approx(0.65)
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)
    assert m["macro_f1"] == pytest.approx((2 * 65 / (100 + 65)) / 3)


def test_class_absent_and_never_predicted_is_left_out():
    # class 2 is neither true nor predicted in this slice: 0/0, not scored
    m = classification_metrics([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1) / 2)
    assert m["macro_f1"] == pytest.approx((6 / 7 + 4 / 5) / 2)


def test_class_predicted_but_absent_scores_zero_f1_and_no_recall():
    m = classification_metrics([[2, 0, 2], [0, 4, 0], [0, 0, 0]])
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)  # class 2 has no recall to average
    assert m["macro_f1"] == pytest.approx((4 / 6 + 1 + 0) / 3)


def test_perfect_and_empty():
    assert classification_metrics(np.diag([3, 1, 7])) == {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0}
    assert all(math.isnan(v) for v in classification_metrics(np.zeros((2, 2))).values())
    with pytest.raises(ValueError, match="square"):
        classification_metrics([[1, 2, 3]])


@given(st.integers(2, 5).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60))))
def test_matches_per_class_definitions(case):
    k, pairs = case
    truth, pred = [t for t, _ in pairs], [p for _, p in pairs]
    m = classification_metrics(_confusion(truth, pred, k))
    assert m["accuracy"] == pytest.approx(np.mean(np.array(truth) == np.array(pred)))
    recalls, f1s = [], []
    for c in range(k):
        tp = sum(t == c and p == c for t, p in pairs)
        fp = sum(t != c and p == c for t, p in pairs)
        fn = sum(t == c and p != c for t, p in pairs)
        if tp + fn:
            recalls.append(tp / (tp + fn))
        if tp + fp + fn:
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert 0 <= m["macro_f1"] <= 1 and 0 <= m["balanced_accuracy"] <= 1


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_agrees_with_scikit_learn(pairs):
    metrics = pytest.importorskip("sklearn.metrics")
    truth, pred = [t for t, _ in pairs], [p for _, p in pairs]
    m = classification_metrics(_confusion(truth, pred, 4))
    with warnings.catch_warnings():  # scikit-learn warns about classes absent from the truth
        warnings.simplefilter("ignore")
        ba = metrics.balanced_accuracy_score(truth, pred)
        f1 = metrics.f1_score(truth, pred, labels=[0, 1, 2, 3], average="macro", zero_division=np.nan)
    assert m["balanced_accuracy"] == pytest.approx(ba)
    assert m["macro_f1"] == pytest.approx(f1)


class _Fixed(Objective):
    """An objective whose logits are given: evaluate's bookkeeping without a model."""

    def __init__(self, label_names, predictions):
        self.label_names = label_names
        self.predictions = predictions

    def per_example(self, batch):
        if not self.label_names:
            return None, torch.ones(len(batch))
        logits = torch.nn.functional.one_hot(torch.tensor([self.predictions[e.text] for e in batch]),
                                             len(self.label_names)).float()
        return logits, torch.full((len(batch),), 0.5)


def test_evaluate_counts_every_batch_into_one_confusion():
    truth = [0] * 6 + [1] * 3 + [2]
    pred = [0, 0, 0, 0, 0, 1, 0, 0, 1, 0]
    examples = [Example(f"t{i}", t) for i, t in enumerate(truth)]
    obj = _Fixed(["a", "b", "c"], {f"t{i}": p for i, p in enumerate(pred)})
    out = obj.evaluate(examples, batch_size=3)
    assert out == {"loss": pytest.approx(0.5), **classification_metrics(_confusion(truth, pred, 3)),
                   "recall": {"a": 5 / 6, "b": 1 / 3, "c": 0.0}}
    assert set(out) == {"loss", *METRICS, "recall"}
    # a class the slice does not hold has no recall (None), not 0
    assert obj.evaluate(examples[:6])["recall"] == {"a": 5 / 6, "b": None, "c": None}


def test_evaluate_plain_text_keeps_the_keys_as_nan():
    out = _Fixed([], {}).evaluate([Example("x", -1), Example("y", -1)])
    assert out["loss"] == 1.0 and set(out) == {"loss", *METRICS}
    assert all(math.isnan(out[k]) for k in METRICS)


@pytest.mark.parametrize("ev", [{"loss": 0.5, "accuracy": 0.6, "balanced_accuracy": 0.5, "macro_f1": 0.4},
                                {"loss": 0.5, "accuracy": 0.6},  # a run from before macro-F1
                                {"loss": 0.5, "accuracy": math.nan, "balanced_accuracy": math.nan,
                                 "macro_f1": math.nan}])  # plain text
def test_curve_draws_what_the_run_reports(tmp_path, ev):
    import json

    from onebyte.plots import plot_curve

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"round": r, "forward_passes": 8 * r, "train_loss": 1.0 / (r + 1),
                                           **({"eval": ev} if r % 2 else {})}) + "\n" for r in range(4)))
    out = plot_curve(metrics, tmp_path / "curve.png", title="t", before=ev)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
