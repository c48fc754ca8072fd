"""Where benchmark results live, and how one is written: stamped with its command, machine and date."""

from __future__ import annotations

import json
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
#: The full run's results (the quick run writes to ``RESULTS / "quick"``).
RESULTS = BENCH / "results"
#: Scratch space: work folders and logs (``make clean`` removes it).
WORK = BENCH / "out"


def save_result(result: dict, out: Path, command: str, machine: str, quiet: bool = False) -> None:
    """Stamp a benchmark's result with its command, machine and date; print it (unless ``quiet``:
    for results written after every run) and write it."""
    result.update(machine=machine, date=time.strftime("%Y-%m-%d %H:%M"), command=command)
    text = json.dumps(result, indent=2)
    if not quiet:
        print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
