"""The registry: every experiment contributes one section, and the run and the report iterate them.

Each module named in ``EXPERIMENTS`` defines ``SECTION = Section(...)``: the steps that produce its
results (each one ``python -m <module> ARGS``, run by ``bench.run_all``) and how they are rendered
into BENCHMARKS.md (by ``bench.report``). ``EXPERIMENTS`` is in report order; run order is
``run_order``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

#: Experiment modules under ``bench.experiments``, in the order their sections appear in the report.
EXPERIMENTS = ("quality", "demo", "exact", "imbalance", "skew", "estimators", "llm", "llm_estimators", "memory", "comm", "wire", "swarms", "scale", "thinlink", "newcomer", "pool", "speed",
               "catchup", "startup", "fuzz", "privacy", "attacks", "gpu")

#: One row of the report's "Targets at a glance": claim, measured, target, met.
Claim = tuple[str, str, str, bool]


@dataclass(frozen=True)
class Results:
    """The measured results a report is written from: one JSON file per name in ``folder``."""

    folder: Path
    #: How the report links to files in ``folder`` ("" when the report sits beside them).
    images: str = ""

    def get(self, name: str) -> dict | None:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Step:
    """One run of a section's module: ``python -m <module> ARGS``; "{out}" in ARGS is the results folder."""

    name: str
    full: tuple[str, ...] | None  # None: not part of the full run
    quick: tuple[str, ...] | None  # None: not part of the quick run
    needs_root: bool = False  # network namespaces
    timeout_min: int = 40  # ``make bench`` stops a step that runs longer (its finished parts are kept)


@dataclass(frozen=True)
class Section:
    """One experiment's part of the benchmarks: how its results are produced and how they read."""

    name: str
    module: str
    render: Callable[[Results], list[str]]  # Markdown lines; [] when its results are absent
    steps: tuple[Step, ...] = ()
    claims: Callable[[Results], list[Claim]] | None = None
    #: Sections whose results this one's steps read (they run first).
    after: tuple[str, ...] = ()
    #: One short paragraph for the docs' "Defaults that hold" page: the default this experiment
    #: chose or checks, and what it was measured to cost (None: nothing measured yet).
    note: Callable[[Results], str | None] | None = None


def notes(results: Results) -> list[str]:
    """Every section's paragraph for the defaults page, in report order."""
    out = []
    for s in sections():
        text = s.note(results) if s.note else None
        if text:
            out.append(text)
    return out


def sections() -> list[Section]:
    """Every registered section, in report order (imports each experiment module); a section's steps
    run the module it was found in, whatever its ``module`` says."""
    mods = [importlib.import_module(f"bench.experiments.{name}") for name in EXPERIMENTS]
    return [replace(m.SECTION, module=m.__name__) for m in mods]


def run_order(secs: list[Section]) -> list[tuple[Section, Step]]:
    """Steps in the order ``make bench`` runs them: local ones first, then those in network
    namespaces; a section's steps after those of the sections it reads (``after``)."""
    by_name = {s.name: s for s in secs}
    ordered: list[Section] = []

    def visit(s: Section) -> None:
        if s in ordered:
            return
        for dep in s.after:
            visit(by_name[dep])
        ordered.append(s)

    for s in secs:
        visit(s)
    steps = [(s, step) for s in ordered for step in s.steps]
    return sorted(steps, key=lambda st: st[1].needs_root)  # stable: keeps the order above within each group


def verdict(ok: bool) -> str:
    """How the report marks a target: met, or missed in bold."""
    return "met" if ok else "**missed**"
