"""Where a run's per-round figures go besides ``metrics.jsonl``: the ecosystem's trackers.

``--log-to tensorboard:DIR`` writes every scalar of a metrics line through TensorBoard's own writer
(``torch.utils.tensorboard.SummaryWriter``) at the line's round, under the same names flattened
with ``/`` (``train_loss``, ``eval/accuracy``, ``bytes_sent`` ...), so TensorBoard's event reader finds
exactly what ``metrics.jsonl`` holds. ``Trackers`` fans one line out to every tracker given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingDependency

__all__ = ["Trackers", "scalars", "KINDS"]

KINDS = ("tensorboard",)


def scalars(line: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """The finite numbers of a metrics line, nested keys joined with ``/`` (``round`` is the step)."""
    for key, value in line.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from scalars(value, name + "/")
        elif isinstance(value, bool) or key == "round" and not prefix:
            continue
        elif isinstance(value, int | float) and math.isfinite(value):
            yield name, float(value)


class _TensorBoard:
    def __init__(self, path: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(path))

    def log(self, line: Mapping[str, Any]) -> None:
        step = int(line["round"])
        for name, value in scalars(line):
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trackers:
    """Every ``KIND:PATH`` of ``--log-to``; ``log(line)`` sends one metrics line to each."""

    def __init__(self, specs: Iterable[str] = ()):
        self.sinks = [_TensorBoard(path) for path in self.check(specs)]

    @staticmethod
    def check(specs: Iterable[str]) -> list[Path]:
        """The paths of ``specs``, or the one-line error a bad form or a missing package gets
        (before a run loads anything, and without creating the trackers' directories)."""
        paths = []
        for spec in specs:
            kind, _, path = spec.partition(":")
            if kind not in KINDS or not path:
                raise ConfigError.of("log_to", f"must be KIND:PATH with KIND one of {', '.join(KINDS)}, not {spec!r}")
            try:
                import tensorboard  # noqa: F401  (torch's writer needs it)
            except ImportError:
                raise MissingDependency("tensorboard", "track", "--log-to tensorboard:DIR") from None
            paths.append(Path(path))
        return paths

    def log(self, line: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(line)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
