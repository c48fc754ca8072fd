"""Frozen, validated configuration, and the run file every site shares.

* ``TrainConfig`` (``trainconfig``): everything that changes the math every replica must agree on.
* ``RunSpec``: a run as its sites describe it — run id, model, task, objective, labels and the
  ``TrainConfig`` — loadable from and writable to a TOML run file (``onebyte init run.toml``).
* ``ListedKey`` (``runfile``): a site key the run lets publish (the run file's ``[[keys]]``; see
  ``identity``). The keys are part of the ``RunSpec`` but not of the run tag: sites are added and
  revoked mid-run without forking the run.
* ``Run``: a ``RunSpec`` bound to its base model's hash. Its *run tag* is a hash of the canonical
  configuration (the fields that change the math, plus the base hash): records and heartbeats
  carry it, and mismatched peers are rejected, with the differing fields named
  (``differing_fields``).
* The modes (``modes``: ``Estimator``, ``Aggregate``...) and a setting's one description
  (``settings``: ``doc``, ``settings``, ``Defaults``), from which the run file, the flags and the
  reference page (``reference_markdown``) are derived.

This module is the configuration's one address: it exports every name of those modules, which
import nothing from it. Problems are reported together, each naming its field as in the run file
(``train.lr``); the command line maps fields to its flags. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, RunMismatch
from .modes import (
    FORWARD_ONLY,
    MAX_SPARSITY,
    Aggregate,
    Balance,
    Directions,
    Estimator,
    ObjectiveKind,
    Scalar,
    Schedule,
    Step,
    Weighting,
    cosine_factor,
    forward_passes,
)
from .runfile import (
    MAX_DIFFERENCES,
    RUN_FILE_HEAD,
    ListedKey,
    differing_fields,
    differing_keys,
    keys_toml,
    parse_keys,
    setting_lines,
)
from .settings import Defaults, Setting, doc, parse_split, settings
from .settings import plain as _plain  # noqa: F401  (the tests read settings back with it)
from .trainconfig import TrainConfig

__all__ = ["Aggregate", "Balance", "Directions", "Estimator", "Scalar", "Schedule", "Step", "forward_passes",
           "ObjectiveKind", "Weighting",
           "TrainConfig", "ListedKey", "RunSpec", "Defaults", "Setting", "doc", "settings", "reference_markdown",
           "Run", "parse_split", "differing_fields", "cosine_factor",
           # also here for callers that import them from this module
           "FORWARD_ONLY", "MAX_SPARSITY", "MAX_DIFFERENCES", "differing_keys"]


@dataclass(frozen=True)
class RunSpec:
    """A run as every site describes it. ``model`` and ``task`` are names or local paths (each
    site's own data); the rest must be equal at every site (it makes the run tag).

    ``keys``: the site keys allowed to publish (empty: the swarm secret's HMAC mode). They are
    deliberately not in the run tag (``math``), so a site can be added or revoked mid-run by
    editing the run file; a replica whose run file is older refuses a newer site's records as
    unlisted (and still counts a key revoked since) until its run file is updated and its peer
    restarted."""

    run_id: str = field(default="onebyte", metadata=doc("the run's name: part of the run tag", math=True))
    model: str = field(default="minilm", metadata=doc(
        "minilm, tiny-gpt2, smollm2, or a local Hugging Face model directory (each site may keep its own "
        "copy; the weights must be the same: the base hash is part of the run tag)"))
    task: str = field(default="vader", metadata=doc(
        "vader, tweets, or this site's own data file (.jsonl, .json, .csv, .tsv or .parquet)"))
    objective: ObjectiveKind = field(default=ObjectiveKind.AUTO, metadata=doc(
        "classify (the label from the text), lm (next-token loss), or auto (= classify)", math=True))
    labels: tuple[str, ...] = field(default=(), metadata=doc(
        "label names in index order, comma-separated on the command line (empty: sorted from the data)",
        math=True))
    eval_file: str | None = field(default=None, metadata=doc(
        "this site's held-out data file (unset: 20% of task, always the same texts)",
        example="held-out.jsonl"))
    text_column: str = field(default="text", metadata=doc("the column of this site's data file holding the text"))
    label_column: str = field(default="label", metadata=doc(
        "the column of this site's data file holding the label"))
    template: str | None = field(default=None, metadata=doc(
        "how an example is put to the model, naming any of its columns as {column} (on the command "
        "line \\n is a newline; unset: the text alone)", math=True, example="Review: {review}\nSentiment:"))
    chat: bool = field(default=False, metadata=doc(
        "wrap the prompt in the model's chat template (causal LMs that have one)", math=True))
    train: TrainConfig = field(default_factory=TrainConfig)
    keys: tuple[ListedKey, ...] = ()

    def __post_init__(self) -> None:  # friendly types from Python callers: strings and lists
        if not isinstance(self.keys, tuple) or not all(isinstance(k, ListedKey) for k in self.keys):
            keys, problems = parse_keys(self.keys)
            if problems:
                raise ConfigError.many(problems)
            object.__setattr__(self, "keys", keys)
        if isinstance(self.objective, str):
            try:
                object.__setattr__(self, "objective", ObjectiveKind(self.objective))
            except ValueError:
                raise ConfigError.of("objective", f"must be auto, classify or lm, not {self.objective!r}") from None
        if isinstance(self.labels, list | str):
            labels = self.labels.split(",") if isinstance(self.labels, str) else self.labels
            object.__setattr__(self, "labels", tuple(str(x).strip() for x in labels if str(x).strip()))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))

    def problems(self) -> list[tuple[str, str]]:
        out = list(self.train.problems())
        if not isinstance(self.run_id, str) or not 1 <= len(self.run_id) <= 200:
            out.append(("run_id", f"must be a name of 1..200 characters, not {self.run_id!r}"))
        if not isinstance(self.model, str) or not self.model:
            out.append(("model", "must be minilm, tiny-gpt2, smollm2 or a local model directory"))
        if not isinstance(self.task, str) or not self.task:
            out.append(("task", "must be vader, tweets or a local data file"))
        if self.labels and len(self.labels) < 2:
            out.append(("labels", "needs at least two names"))
        for name in ("text_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                out.append((name, "must be a column name"))
        if self.template is not None and (not isinstance(self.template, str) or "{" not in self.template):
            out.append(("template", f"must name at least one column as {{column}}, not {self.template!r}"))
        if not isinstance(self.chat, bool):
            out.append(("chat", f"must be true or false, not {self.chat!r}"))
        out += parse_keys(self.keys)[1]
        return out

    def validate(self) -> RunSpec:
        problems = self.problems()
        if problems:
            raise ConfigError.many(problems)
        return self

    def with_overrides(self, **changes: Any) -> RunSpec:
        """A copy with ``changes`` applied; keys of ``TrainConfig`` go to ``train``; None is ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        train_keys = {f.name for f in fields(TrainConfig)}
        train = {k: changes.pop(k) for k in list(changes) if k in train_keys}
        unknown = [k for k in changes if k not in {f.name for f in fields(self)}]
        if unknown:
            raise ConfigError.many([(k, "is not a setting") for k in unknown])
        spec = replace(self, **changes)
        if train:
            spec = replace(spec, train=replace(spec.train, **train))
        return spec

    def math(self) -> dict[str, Any]:
        """The canonical configuration: every field that changes the math, plain JSON types."""
        return {"run_id": self.run_id, "objective": self.objective.value, "labels": list(self.labels),
                "template": self.template, "chat": self.chat, "train": self.train.canonical()}

    def to_dict(self) -> dict[str, Any]:
        d = {"run_id": self.run_id, "model": self.model, "task": self.task, "objective": self.objective.value,
             "labels": list(self.labels), "text_column": self.text_column, "label_column": self.label_column,
             "chat": self.chat, "train": self.train.to_dict()}
        for optional in ("eval_file", "template"):
            if getattr(self, optional) is not None:
                d[optional] = getattr(self, optional)
        if self.keys:
            d["keys"] = [k.to_dict() for k in self.keys]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "run file") -> RunSpec:
        known = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ConfigError.many([(k, f"is not a setting of a {where} (known: {', '.join(sorted(known))})")
                                    for k in unknown])
        d = dict(d)
        train = d.pop("train", {})
        if not isinstance(train, dict):
            raise ConfigError.of("train", "must be a table of training settings")
        problems: list[tuple[str, str]] = []
        try:
            train_cfg = TrainConfig.from_dict(train)
        except ConfigError as exc:
            problems += exc.problems or [("train", str(exc))]
            train_cfg = TrainConfig()
        try:
            spec = cls(**d, train=train_cfg)
        except ConfigError as exc:
            raise ConfigError.many(problems + exc.problems) from None
        except TypeError as exc:
            raise ConfigError(f"invalid {where}: {exc}") from None
        problems += spec.problems() if not problems else []
        if problems:
            raise ConfigError.many(problems)
        return spec

    @classmethod
    def load(cls, path: Path | str) -> RunSpec:
        """Read a TOML run file (``onebyte init`` writes a commented template)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"run file {path} not found (onebyte init {path} writes one)") from None
        except OSError as exc:
            raise ConfigError(f"run file {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"run file {path} is not valid TOML: {exc}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            if not exc.problems:
                raise
            raise ConfigError(problems=exc.problems, prefix=f"run file {path}: ") from None

    def to_toml(self) -> str:
        """This spec as a commented run file (``RunSpec.load`` reads it back equal): every setting
        under its own documentation (``settings``), then the site keys."""
        return "\n".join([RUN_FILE_HEAD, *setting_lines(self), "[train]", "", *setting_lines(self.train),
                          keys_toml(self.keys)])

    def save(self, path: Path | str) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")


@dataclass(frozen=True)
class Run:
    """A ``RunSpec`` bound to its base model: what ``run.json`` stores and the run tag names."""

    spec: RunSpec
    base_hash: str

    @property
    def train(self) -> TrainConfig:
        return self.spec.train

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def objective(self) -> ObjectiveKind:
        return self.spec.objective

    def canonical(self) -> dict[str, Any]:
        """What the run tag is a hash of: the math of the spec and the base model's hash."""
        return {**self.spec.math(), "base_hash": self.base_hash}

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()

    def shared(self) -> dict[str, Any]:
        """What every site's run file must agree on, and what a peer answers CONF with: the
        canonical configuration, and the listed site keys by public key (``differing_keys``). The
        keys are not part of the run tag (sites are added and revoked during a run), so peers
        compare them when they meet."""
        d = self.canonical()
        if self.spec.keys:
            d["keys"] = {k.public.hex(): k.to_dict() for k in self.spec.keys}
        return d

    def shared_bytes(self) -> bytes:
        return json.dumps(self.shared(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def run_tag(self) -> bytes:
        """16 bytes naming (run id, base model, math): records carry it; mismatches are rejected."""
        return hashlib.sha256(self.canonical_bytes()).digest()[:16]

    def to_json(self) -> str:
        d = {"spec": self.spec.to_dict(), "base_hash": self.base_hash, "run_tag": self.run_tag.hex()}
        return json.dumps(d, indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path | str) -> Run:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            train = d["spec"].get("train")
            if isinstance(train, dict):  # written before these settings existed: they had their LEGACY values
                d["spec"]["train"] = {**TrainConfig.LEGACY, **train}
            run = cls(RunSpec.from_dict(d["spec"], where="run.json"), str(d["base_hash"]))
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: is this a onebyte run directory?") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON, text, shape
            raise ConfigError(f"{path} is not a valid run description: {exc}") from None
        except OSError as exc:  # a directory, unreadable, ...
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        if "run_tag" in d and d["run_tag"] != run.run_tag.hex():
            raise RunMismatch(f"{path}: its run tag does not match its settings (edited by hand?)")
        return run


def reference_markdown(run: type | None = None, train: type | None = None) -> str:
    """The run file's settings and their flags as a Markdown reference page (the docs site's), from
    the same field documentation that the run file ``onebyte init`` writes and the flags' help use.
    ``run``, ``train``: ``RunSpec`` and ``TrainConfig`` (or subclasses of them)."""
    out = ["Every setting of the run file, the flag that overrides it (on `init`, `simulate`, `peer`, "
           "`swarm` and `eval`), and its default. Settings marked [math] change what a record means: "
           "every peer must agree on them, or its records are rejected as another run's. `onebyte init "
           "run.toml` writes this file with the same text as comments.", ""]
    for title, cls in (("Top level", run or RunSpec), ("`[train]`", train or TrainConfig)):
        out += [f"## {title}", "", "| setting | flag | default | values | [math] | what it sets |",
                "|---|---|---|---|---|---|"]
        for s in settings(cls):
            values = ", ".join(f"`{c}`" for c in s.choices) or _KIND_WORDS.get(s.kind, "text")
            default = f"`{s.shown_default()}`" if s.shown_default() else "unset"
            out.append(f"| `{s.name}` | `{s.flag}` | {default} | {values} | {'yes' if s.math else ''} | "
                       f"{s.help.replace('|', '&#124;')} |")
        out.append("")
    return "\n".join(out)


_KIND_WORDS = {int: "integer", float: "number", bool: "true or false", tuple: "list of names", str: "text"}
