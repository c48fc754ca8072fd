"""Class-balanced batches: drawn by class from a site's own shard, seeded, order-free."""

from collections import Counter

import pytest

from onebyte.config import Balance, Run, RunSpec, TrainConfig
from onebyte.errors import ConfigError
from onebyte.tasks.data import Example
from onebyte.training import batch_for

TAG = bytes(range(32))
#: 90 / 9 / 1 % of a shard's examples
SHARD = [Example(f"a{i}", 0) for i in range(90)] + [Example(f"b{i}", 1) for i in range(9)] + [Example("c0", 2)]


def _labels(balance, size=3000, sample=0):
    return Counter(e.label for e in batch_for(TAG, SHARD, size, 5, 1, sample, balance))


def test_balanced_batches_draw_each_class_about_equally():
    counts = _labels(Balance.CLASSES)
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 900  # ~1000 each, the lone example included
    uniform = _labels(Balance.NONE)
    assert uniform[2] < 60 and uniform[0] > 2500  # the shard's own mix
    root = _labels(Balance.SQRT)  # sqrt(90) : 3 : 1, about 68 / 23 / 8 %
    assert 1900 < root[0] < 2200 and 550 < root[1] < 850 and 150 < root[2] < 350


def test_balanced_batches_are_seeded_and_change_with_the_draw():
    one = batch_for(TAG, SHARD, 32, 5, 1, 0, Balance.CLASSES)
    assert one == batch_for(TAG, SHARD, 32, 5, 1, 0, Balance.CLASSES)  # every replica draws the same
    assert one != batch_for(TAG, SHARD, 32, 5, 1, 1, Balance.CLASSES)
    # the shard's order does not matter for what a class holds, only the seed for which is drawn
    assert {e.text for e in one} <= {e.text for e in SHARD}


def test_unlabelled_text_is_drawn_uniformly():
    text = [Example(f"t{i}", -1) for i in range(50)]
    assert batch_for(TAG, text, 16, 0, 0, 0, Balance.CLASSES) == batch_for(TAG, text, 16, 0, 0, 0, Balance.NONE)


def test_balance_is_the_default_and_part_of_the_run_tag_old_runs_keep_theirs():
    assert TrainConfig().balance is Balance.SQRT
    assert TrainConfig().canonical()["balance"] == "sqrt"
    legacy = TrainConfig.from_dict({**TrainConfig().to_dict(), "balance": "none"})
    assert "balance" not in legacy.canonical()  # runs from before the setting keep their tags
    assert Run(RunSpec(train=legacy), "00" * 32).run_tag != Run(RunSpec(), "00" * 32).run_tag
    with pytest.raises(ConfigError, match="train.balance"):
        TrainConfig.from_dict({"balance": "weights"})
