"""A setting, written once: its type, default, help and run-file section live on its dataclass
field (``doc`` in the field's metadata), and everything that shows a setting reads it from there
(``settings``): the run file's comments, the command line's flags and their help, and the reference
page. Also ``Defaults``, the options of ``simulate`` and ``peer`` that are not the run's own.

Nothing here knows the configuration classes themselves; ``onebyte.config`` exports these names.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from .codec import Codec
from .errors import ConfigError
from .modes import FORWARD_ONLY

__all__ = ["Defaults", "Setting", "doc", "parse_split", "plain", "settings", "toml_value"]


def doc(help: str, *, math: bool = False, legacy: Any = None, example: str | None = None,
        aliases: tuple[str, ...] = ()) -> dict[str, Any]:
    """A setting's one description, kept in its dataclass field's metadata; the run file's comment,
    the flag and its help, and the reference page are all derived from it (``settings``).

    ``help``: one paragraph. ``math``: the setting is in the run tag (the run file marks it
    [math]). ``legacy``: its value in runs written before it existed; a run at that value is tagged
    without it, so their run tags stay as they were (``TrainConfig.LEGACY``). ``example``: what the
    run file shows, commented out, for an optional setting left unset. ``aliases``: other names an
    enum setting accepts."""
    meta: dict[str, Any] = {"help": help, "math": math, "example": example, "aliases": aliases}
    if legacy is not None:
        meta["legacy"] = legacy
    return meta


def plain(v: Any) -> Any:
    if isinstance(v, Codec):
        return v.label
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple):
        return list(v)
    return v


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


@dataclass(frozen=True)
class Setting:
    """One documented setting, as the run file, the command line and the reference page show it:
    read from its dataclass field (``settings``), never written down a second time."""

    name: str
    section: str  # "" (the run file's top level) or "train"
    kind: type  # int, float, str, bool, tuple (a list of names), or an enum
    default: Any  # as the run file writes it (plain JSON types)
    help: str
    math: bool
    example: str | None = None  # an unset optional setting, as the run file shows it commented out
    aliases: tuple[str, ...] = ()
    forward_only: Any = None  # the default a forward-only estimator brings (FORWARD_ONLY), if other

    @property
    def key(self) -> str:
        """Its name in error messages and in the run file: ``train.lr``, ``run_id``."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...]:
        """An enum setting's values (then its aliases); () for any other."""
        if self.kind is Codec:
            return tuple(c.label for c in Codec)
        if issubclass(self.kind, enum.Enum):
            return tuple(m.value for m in self.kind) + self.aliases
        return ()

    def shown_default(self) -> str:
        """The default as the flag's help and the reference show it ("" for an unset one)."""
        if self.default is None or self.default == []:
            return ""
        text = toml_value(self.default).strip('"')
        if self.forward_only is not None:
            text += f"; a forward-only estimator: {toml_value(self.forward_only).strip(chr(34))}"
        return text


def settings(cls: type) -> list[Setting]:
    """The documented settings of ``RunSpec`` or ``TrainConfig`` (or a subclass), in field order:
    every field whose metadata has its ``doc``; in the run file's table the class names as its
    ``SECTION`` (``TrainConfig``'s is ``train``; none: the top level)."""
    hints = typing.get_type_hints(cls)
    section = getattr(cls, "SECTION", "")
    out = []
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # str | None: an optional setting
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        kind = typing.get_origin(kind) or kind
        alt = FORWARD_ONLY.get(f.name) if section else None
        out.append(Setting(f.name, section, kind, plain(f.default), f.metadata["help"], f.metadata["math"],
                           f.metadata["example"], f.metadata["aliases"], alt))
    return out


class Defaults:
    """The options of ``simulate`` and ``peer`` that are not the run's own (not in ``RunSpec``),
    shared by the Python API, the simulator and the command line: one place, one value."""

    peers = 4
    rounds = 300  # the demo: 1,200 records of K = 1,024 exact projections at 4 peers
    split = "iid"
    seed = 0
    #: held-out examples to evaluate: N (the same fixed-seed sample in every run), 0 (none), or
    #: None (all of them); the simulator evaluates about ten times a run, a peer at start and end
    eval_size: int | None = None


def parse_split(text: str) -> float | None:
    """``iid`` -> None; ``dirichlet:ALPHA`` -> ALPHA."""
    if text == "iid":
        return None
    if text.startswith("dirichlet:"):
        try:
            alpha = float(text.split(":", 1)[1])
        except ValueError:
            alpha = -1.0
        if math.isfinite(alpha) and alpha > 0:
            return alpha
    raise ConfigError.of("split", f"must be iid or dirichlet:ALPHA with ALPHA > 0, not {text!r}")
