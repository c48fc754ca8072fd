"""Which parameters are tuned: ``all``, ``bias`` (BitFit-style), ``norm``, ``bias+norm`` (both),
``regex:PATTERN``, or ``lora:r=R[,alpha=A][,targets=M1,M2]`` (LoRA adapters built with PEFT, see
``adapters``).

``norm`` selects the weights (and biases) of normalisation layers: modules whose type is a
LayerNorm/RMSNorm/GroupNorm (``torch.nn`` or a model's own ``...RMSNorm`` class), plus parameters
whose module name looks like one (``norm``, ``ln_``, ``layernorm``), for models with custom norms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # keeps ``import onebyte`` and the config free of torch
    import torch

__all__ = ["TuneSpec", "select_parameters", "is_norm_module"]

_FORMS = "all, bias, norm, bias+norm, regex:PATTERN or lora:r=R[,alpha=A][,targets=M1,M2]"

#: Module names of normalisation layers in common architectures (GPT-2 ``ln_1``/``ln_f``, BERT
#: ``LayerNorm``, Llama ``input_layernorm``/``norm``, T5 ``layer_norm``).
_NORM_NAME = re.compile(r"(^|[._])(ln(_\w+)?|\w*norm\w*)$", re.IGNORECASE)

#: LoRA target module names: identifiers, as PEFT matches them against module name suffixes.
_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class TuneSpec:
    kind: str  # "all" | "bias" | "norm" | "bias+norm" | "regex" | "lora"
    pattern: str = ""
    r: int = 0  # lora: rank
    alpha: float = 0.0  # lora: scaling numerator (PEFT's lora_alpha); the update is (alpha / r) B A
    targets: tuple[str, ...] = ()  # lora: module names; () = PEFT's default for the architecture

    @classmethod
    def parse(cls, text: str) -> TuneSpec:
        if text in ("all", "bias", "norm", "bias+norm"):
            return cls(text)
        if text.startswith("regex:") and len(text) > len("regex:"):
            pattern = text[len("regex:"):]
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError.of("train.tune", f"regex {pattern!r} is invalid: {exc}") from None
            return cls("regex", pattern)
        if text.startswith("lora:"):
            return cls._parse_lora(text[len("lora:"):])
        raise ConfigError.of("train.tune", f"must be {_FORMS}, not {text!r}")

    @classmethod
    def _parse_lora(cls, body: str) -> TuneSpec:
        """``r=8,alpha=16,targets=q_proj,v_proj``: a bare name after ``targets=`` is one more target."""
        def bad(msg: str) -> ConfigError:
            return ConfigError.of("train.tune", f"lora: {msg} (form: lora:r=8[,alpha=16][,targets=q_proj,v_proj])")

        values: dict[str, str] = {}
        targets: list[str] = []
        key = ""
        for item in body.split(",") if body.strip() else []:
            item = item.strip()
            if "=" in item:
                key, _, value = item.partition("=")
                key, value = key.strip(), value.strip()
                if key not in ("r", "alpha", "targets"):
                    raise bad(f"unknown setting {key!r}")
                if key in values:
                    raise bad(f"{key} given twice")
                values[key] = value
                if key == "targets":
                    targets.append(value)
            elif key == "targets":
                targets.append(item)
            else:
                raise bad(f"{item!r} is not key=value")
        if "r" not in values:
            raise bad("r is required")
        try:
            r = int(values["r"])
        except ValueError:
            raise bad(f"r must be an integer, not {values['r']!r}") from None
        if r < 1:
            raise bad(f"r must be at least 1, not {r}")
        alpha = 2.0 * r
        if "alpha" in values:
            try:
                alpha = float(values["alpha"])
            except ValueError:
                raise bad(f"alpha must be a number, not {values['alpha']!r}") from None
            if not alpha > 0 or alpha == float("inf"):
                raise bad(f"alpha must be a positive number, not {values['alpha']}")
        if "targets" in values:
            if not targets or any(not t for t in targets):
                raise bad("targets must be a non-empty list of module names")
            for t in targets:
                if not _TARGET.match(t):
                    raise bad(f"target {t!r} is not a module name")
            if len(set(targets)) != len(targets):
                raise bad("a target is named twice")
        return cls("lora", r=r, alpha=alpha, targets=tuple(targets))

    def __str__(self) -> str:
        if self.kind == "regex":
            return f"regex:{self.pattern}"
        if self.kind == "lora":
            text = f"lora:r={self.r},alpha={self.alpha:g}"
            return text + (f",targets={','.join(self.targets)}" if self.targets else "")
        return self.kind

    def matches(self, name: str) -> bool:
        """Whether parameter ``name`` is tuned (``norm`` and ``lora`` also look at modules: see
        ``select_parameters``)."""
        if self.kind == "all":
            return True
        if self.kind == "bias":
            return name.endswith("bias")
        if self.kind == "norm":
            return _NORM_NAME.search(name.rpartition(".")[0]) is not None
        if self.kind == "bias+norm":
            return name.endswith("bias") or _NORM_NAME.search(name.rpartition(".")[0]) is not None
        if self.kind == "lora":
            return ".lora_A." in name or ".lora_B." in name
        return re.search(self.pattern, name) is not None


def is_norm_module(module: torch.nn.Module) -> bool:
    """A normalisation layer, by type: torch's norms or a model's own ``*Norm`` class (RMSNorm)."""
    import torch

    norms = tuple(c for c in (torch.nn.LayerNorm, torch.nn.GroupNorm, getattr(torch.nn, "RMSNorm", None)) if c)
    return isinstance(module, norms) or re.search(r"norm(\dd)?$", type(module).__name__.lower()) is not None


def _norm_names(model: torch.nn.Module) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        if is_norm_module(module):
            names.update(f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False))
    return names


def select_parameters(model: torch.nn.Module, spec: TuneSpec) -> list[tuple[str, torch.nn.Parameter]]:
    """The tuned (name, parameter) pairs in name order; tied parameters appear once."""
    named = list(model.named_parameters())
    if spec.kind in ("norm", "bias+norm"):
        by_type = _norm_names(model)
        chosen = sorted((n, p) for n, p in named if n in by_type or spec.matches(n))
    else:
        chosen = sorted((n, p) for n, p in named if spec.matches(n))
    if not chosen:
        if spec.kind == "bias":
            raise ConfigError.of("train.tune", "this model has no biases (Llama-style models have none); "
                                 "tune norm, bias+norm, lora:r=8 or regex:PATTERN instead")
        if spec.kind == "lora":
            raise ConfigError.of("train.tune", f"{spec} built no adapters (attach them with adapters.attach_lora)")
        raise ConfigError.of("train.tune", f"{spec} selects no parameters of this model")
    return chosen
