"""Curves from metrics.jsonl (matplotlib's object API: no pyplot, no global backend switch)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["plot_curve"]


def plot_curve(metrics: Path, out: Path, title: str = "", before: dict | None = None) -> Path:
    """Training loss and held-out accuracy against forward passes (``before``: eval at the start)."""
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([r["forward_passes"] for r in rows], [r["train_loss"] for r in rows], lw=1)
    ax1.set_xlabel("forward passes")
    ax1.set_ylabel("training loss (at theta)")
    ev = ([{"forward_passes": 0, "eval": before}] if before else []) + [r for r in rows if "eval" in r]
    ax2.plot([r["forward_passes"] for r in ev], [r["eval"]["accuracy"] for r in ev], marker="o")
    if before:
        ax2.axhline(before["accuracy"], ls="--", c="grey", lw=1, label="before training")
        ax2.legend(loc="lower right")
    ax2.set_xlabel("forward passes")
    ax2.set_ylabel("held-out accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out
