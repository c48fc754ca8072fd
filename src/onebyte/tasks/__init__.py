"""Tasks: where examples come from (``data``) and what loss a model minimises on them (``objectives``)."""

from .data import Dataset, Example, load_dataset, split_shards
from .objectives import Objective, build_objective

__all__ = ["Dataset", "Example", "load_dataset", "split_shards", "Objective", "build_objective"]
