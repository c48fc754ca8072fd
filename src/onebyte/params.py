"""Which parameters are tuned: ``all``, ``bias`` (BitFit-style), or ``regex:PATTERN``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # keeps ``import onebyte`` and the config free of torch
    import torch

__all__ = ["TuneSpec", "select_parameters"]


@dataclass(frozen=True)
class TuneSpec:
    kind: str  # "all" | "bias" | "regex"
    pattern: str = ""

    @classmethod
    def parse(cls, text: str) -> TuneSpec:
        if text in ("all", "bias"):
            return cls(text)
        if text.startswith("regex:") and len(text) > len("regex:"):
            pattern = text[len("regex:"):]
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError.of("train.tune", f"regex {pattern!r} is invalid: {exc}") from None
            return cls("regex", pattern)
        raise ConfigError.of("train.tune", f"must be all, bias or regex:PATTERN, not {text!r}")

    def __str__(self) -> str:
        return f"regex:{self.pattern}" if self.kind == "regex" else self.kind

    def matches(self, name: str) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "bias":
            return name.endswith("bias")
        return re.search(self.pattern, name) is not None


def select_parameters(model: torch.nn.Module, spec: TuneSpec) -> list[tuple[str, torch.nn.Parameter]]:
    """The tuned (name, parameter) pairs in name order; tied parameters appear once."""
    chosen = sorted((n, p) for n, p in model.named_parameters() if spec.matches(n))
    if not chosen:
        raise ConfigError.of("train.tune", f"{spec} selects no parameters of this model")
    return chosen
