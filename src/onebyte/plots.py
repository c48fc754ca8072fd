"""Curves from metrics.jsonl (matplotlib's object API: no pyplot, no global backend switch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["plot_curve"]

# the held-out figures drawn when a run reports them: (key in "eval", legend)
_EVAL_SERIES = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))


def plot_curve(metrics: Path, out: Path, title: str = "", before: dict | None = None) -> Path:
    """Training loss, and held-out accuracy with macro-F1 beside it when the run reports it, against
    forward passes (``before``: eval at the start, drawn dashed)."""
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([r["forward_passes"] for r in rows], [r["train_loss"] for r in rows], lw=1)
    ax1.set_xlabel("forward passes")
    ax1.set_ylabel("training loss (at theta)")
    ev = ([{"forward_passes": 0, "eval": before}] if before else []) + [r for r in rows if "eval" in r]
    drawn = []
    for key, legend in _EVAL_SERIES:
        values = [r["eval"].get(key, math.nan) for r in ev]
        if key != "accuracy" and all(v is None or math.isnan(v) for v in values):
            continue
        line, = ax2.plot([r["forward_passes"] for r in ev], values, marker="o", label=legend)
        if before and before.get(key) is not None:
            ax2.axhline(before[key], ls="--", c=line.get_color(), lw=1, label=f"{legend} before training")
        drawn.append(legend)
    if before or len(drawn) > 1:
        ax2.legend(loc="lower right")
    ax2.set_xlabel("forward passes")
    ax2.set_ylabel("held-out " + " / ".join(drawn))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out
