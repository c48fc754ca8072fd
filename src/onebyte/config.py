"""Frozen, validated configuration.

``TrainConfig`` holds everything that changes the math every replica must agree on; it enters
the run tag, so peers with a different configuration cannot mix records. ``RunSpec`` binds it to
a run id and a base model (by hash) and is what ``run.json`` stores.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .codec import Codec
from .errors import ConfigError
from .params import TuneSpec

__all__ = ["Directions", "TrainConfig", "RunSpec", "parse_split"]


class Directions(enum.Enum):
    """``distinct``: every gradient has its own direction (the paper's method; replay cost grows
    with the swarm). ``shared``: all peers of a round measure along the same K directions, so a
    round's records add their codes per direction first and replay costs K generations."""

    DISTINCT = "distinct"
    SHARED = "shared"


@dataclass(frozen=True)
class TrainConfig:
    # Defaults are the demo's: MiniLM on VADER learns well within minutes when only biases move.
    codec: Codec = Codec.BYTE
    lr: float = 1e-3
    eps: float = 1e-3
    samples: int = 4
    batch_size: int = 32
    tune: str = "bias"
    directions: Directions = Directions.DISTINCT
    max_length: int = 32

    def problems(self) -> list[str]:
        out = []
        if not (math.isfinite(self.lr) and self.lr > 0):
            out.append(f"--lr must be a positive number, not {self.lr}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            out.append(f"--eps must be a positive number, not {self.eps}")
        if not 1 <= self.samples <= 4096:
            out.append(f"--samples must be in 1..4096, not {self.samples}")
        if not 1 <= self.batch_size <= 4096:
            out.append(f"--batch-size must be in 1..4096, not {self.batch_size}")
        if not 4 <= self.max_length <= 4096:
            out.append(f"--max-length must be in 4..4096, not {self.max_length}")
        try:
            TuneSpec.parse(self.tune)
        except ConfigError as exc:
            out.append(str(exc))
        return out

    def validate(self) -> TrainConfig:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def lr_at(self, round_: int) -> float:
        """The learning rate of a round (constant; a schedule may use the round number only)."""
        return self.lr

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["codec"] = self.codec.label
        d["directions"] = self.directions.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        try:
            d = dict(d)
            d["codec"] = Codec.parse(d["codec"])
            d["directions"] = Directions(d["directions"])
            return cls(**d).validate()
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid training configuration: {exc}") from None


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    model: str
    task: str
    base_hash: str
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: str = "auto"

    @property
    def run_tag(self) -> bytes:
        """16 bytes naming (run id, base model, math): records carry it; mismatches are rejected."""
        canon = json.dumps({"run_id": self.run_id, "base_hash": self.base_hash,
                            "objective": self.objective, "train": self.train.to_dict()},
                           sort_keys=True)
        return hashlib.sha256(canon.encode()).digest()[:16]

    def to_json(self) -> str:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        d["run_tag"] = self.run_tag.hex()
        return json.dumps(d, indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        try:
            d = json.loads(Path(path).read_text())
            d.pop("run_tag", None)
            d["train"] = TrainConfig.from_dict(d["train"])
            return cls(**d)
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: is this a onebyte run directory?") from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a valid run description: {exc}") from None


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
    raise ConfigError(f"--split must be iid or dirichlet:ALPHA with ALPHA > 0, not {text!r}")
