"""Examples from the built-in ``vader`` lexicon or a local ``.jsonl`` / ``.csv`` file, and shards.

``vader``: the VADER sentiment lexicon shipped by the ``vaderSentiment`` package (7,500 entries,
ten human ratings each); mean rating >= 1 is positive, <= -1 negative, the rest dropped. The
train/test split is fixed (a seeded shuffle of the sorted entries, 20% held out).

Files hold ``text`` and ``label`` columns; labels may be names or integers. Label names come from
the data (sorted) unless given. Without a separate eval file, 20% is held out by the same rule.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, MissingDependency

__all__ = ["Example", "Dataset", "load_dataset", "dataset_from_examples", "split_shards", "TEST_FRACTION"]

TEST_FRACTION = 0.2
_SPLIT_SEED = 20231006
MAX_FILE_BYTES = 1 << 30


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # index into Dataset.label_names; -1 for plain text (language modelling)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: list[Example]
    test: list[Example]
    label_names: list[str]
    template: str = "{text}"  # how a text is put to the model (vader: "This is {text}.")


def _split(items: list[Example], name: str, labels: list[str], template: str = "{text}") -> Dataset:
    """Hold out TEST_FRACTION of the distinct (case-folded) texts, so duplicates never straddle."""
    keys = sorted({e.text.casefold() for e in items})
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(keys))
    n_test = max(1, int(round(TEST_FRACTION * len(keys)))) if len(keys) > 1 else 0
    held = {keys[i] for i in order[:n_test]}
    test = [e for e in items if e.text.casefold() in held]
    train = [e for e in items if e.text.casefold() not in held]
    if not train:
        raise DataError(f"{name}: too few examples to train on ({len(items)})")
    return Dataset(name, train, test, labels, template)


def _vader() -> Dataset:
    try:
        import vaderSentiment
    except ImportError:
        raise MissingDependency("vaderSentiment", "demo", "task 'vader'") from None
    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    items = []
    for line in sorted(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        try:
            mean = float(parts[1])
        except ValueError:
            continue
        if mean >= 1.0:
            items.append(Example(parts[0], 1))
        elif mean <= -1.0:
            items.append(Example(parts[0], 0))
    return _split(items, "vader", ["negative", "positive"], "This is {text}.")


def _rows(path: Path) -> list[tuple[int, dict]]:
    if path.suffix not in (".jsonl", ".csv"):
        raise DataError(f"{path}: data files must end in .jsonl or .csv")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    rows: list[tuple[int, dict]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            rows.append((n, obj))
    elif path.suffix == ".csv":
        try:
            reader = csv.DictReader(text.splitlines())
            rows = [(n, r) for n, r in enumerate(reader, 2)]
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV: {exc}") from None
    else:
        raise DataError(f"{path}: data files must end in .jsonl or .csv")
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def _from_rows(path: Path, rows: list[tuple[int, dict]], label_names: list[str] | None,
               need_labels: bool) -> tuple[list[Example], list[str]]:
    raw: list[tuple[str, object]] = []
    for n, row in rows:
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{n}: missing or empty 'text'")
        label = row.get("label")
        if need_labels and (label is None or label == ""):
            raise DataError(f"{path}:{n}: missing 'label'")
        raw.append((text, label))
    if not need_labels:
        return [Example(t, -1) for t, _ in raw], []
    names = list(label_names) if label_names else sorted({str(lab) for _, lab in raw})
    index = {name: i for i, name in enumerate(names)}
    out = []
    for (n, _), (text, label) in zip(rows, raw, strict=True):
        key = str(label)
        if key in index:
            out.append(Example(text, index[key]))
        elif label_names and key.lstrip("-").isdigit() and 0 <= int(key) < len(names):
            out.append(Example(text, int(key)))
        else:
            raise DataError(f"{path}:{n}: label {label!r} is not one of {names}")
    if len(names) < 2:
        raise DataError(f"{path}: classification needs at least two labels, found {names}")
    return out, names


def load_dataset(spec: str, *, label_names: list[str] | None = None, need_labels: bool = True,
                 eval_file: str | None = None, text_column: str = "text", label_column: str = "label",
                 template: str | None = None) -> Dataset:
    """``vader`` or a path to a .jsonl/.csv file (optionally with a separate eval file)."""
    if spec == "vader":
        if not need_labels:
            ds = _vader()
            return Dataset(ds.name, [Example(e.text, -1) for e in ds.train],
                           [Example(e.text, -1) for e in ds.test], [], ds.template)
        return _vader()
    path = Path(spec)
    if not path.suffix:
        raise ConfigError.of("task", f"must be vader or a .jsonl/.csv file, not {spec!r}")
    items, names = _from_rows(path, _rows(path), label_names, need_labels)
    if eval_file is None:
        return _split(items, path.name, names)
    test, _ = _from_rows(Path(eval_file), _rows(Path(eval_file)), names or None, need_labels)
    return Dataset(path.name, items, test, names)


def _as_rows(items: object, where: str) -> list[tuple[int, dict]]:
    """Python examples as rows: ``Example``, ``(text, label)``, ``{"text":…, "label":…}`` or a bare text."""
    if not isinstance(items, list | tuple) or not items:
        raise DataError(f"{where}: give a non-empty list of examples")
    rows = []
    for n, item in enumerate(items, 1):
        if isinstance(item, Example):
            row = {"text": item.text, "label": item.label if item.label >= 0 else None}
        elif isinstance(item, dict):
            row = item
        elif isinstance(item, tuple | list) and len(item) == 2:
            row = {"text": item[0], "label": item[1]}
        elif isinstance(item, str):
            row = {"text": item, "label": None}
        else:
            raise DataError(f"{where}[{n - 1}]: an example is a (text, label) pair, a dict or a text, "
                            f"not {type(item).__name__}")
        rows.append((n, row))
    return rows


def dataset_from_examples(train: list, eval: list | None = None, *, label_names: list[str] | None = None,
                          need_labels: bool = True, name: str = "examples") -> Dataset:
    """A dataset from Python lists (held out as a file would be when ``eval`` is None)."""
    items, names = _from_rows(Path("train_data"), _as_rows(train, "train_data"), label_names, need_labels)
    if eval is None:
        return _split(items, name, names)
    test, _ = _from_rows(Path("eval_data"), _as_rows(eval, "eval_data"), names or None, need_labels)
    return Dataset(name, items, test, names)


def split_shards(examples: list[Example], peers: int, alpha: float | None, seed: int) -> list[list[Example]]:
    """Split training examples over peers: iid (``alpha=None``) or Dirichlet(alpha) label skew."""
    if peers < 1:
        raise ConfigError.of("peers", "must be at least 1")
    if len(examples) < peers:
        raise DataError(f"{len(examples)} training examples cannot feed {peers} peers")
    rng = np.random.default_rng(seed)
    if alpha is None:
        order = rng.permutation(len(examples))
        return [[examples[i] for i in part] for part in np.array_split(order, peers)]
    labels = np.array([e.label for e in examples])
    shards: list[list[int]] = [[] for _ in range(peers)]
    for lab in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        props = rng.dirichlet([alpha] * peers)
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for p, part in enumerate(np.split(idx, cuts)):
            shards[p].extend(part.tolist())
    for p in range(peers):  # no peer may be left empty: lend it one example from the largest
        if not shards[p]:
            donor = max(range(peers), key=lambda q: len(shards[q]))
            shards[p].append(shards[donor].pop())
    return [[examples[i] for i in sorted(s)] for s in shards]
