"""A measurement window over processes in a lab, agreed through files in one control folder.

Each process (one per namespace) prepares, says ``ready``, waits for ``go``, does its work,
writes ``done`` with its report and keeps serving until ``exit``. The orchestrator reads every
peer's interface counter after all are ready and again after all are done, so the window holds
the work and nothing of the set-up. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bench.output import REPO

#: Every wait on a process or a file is bounded by this, unless told otherwise.
WAIT_S = 120.0


class AnyLab(Protocol):
    def wrap(self, i: int, cmd: list[str]) -> list[str]: ...
    def tx_bytes(self, i: int) -> int: ...


def wait_for(pred: Callable[[], bool], what: str, timeout: float = WAIT_S, poll: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def own_tx_bytes() -> int:
    """This namespace's eth0 counter (``ip netns exec`` mounts the namespace's sysfs)."""
    return int(Path("/sys/class/net/eth0/statistics/tx_bytes").read_text())


class Control:
    """The process side of the window: ``ready``, ``wait_go``, ``done``, ``wait_exit``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def ready(self, index: int) -> None:
        (self.folder / f"ready-{index}").touch()

    def wait_go(self) -> None:
        wait_for((self.folder / "go").exists, "go")

    def done(self, index: int, report: dict) -> None:
        (self.folder / f"done-{index}.json").write_text(json.dumps(report))

    def wait_exit(self) -> None:
        wait_for((self.folder / "exit").exists, "exit", poll=0.1)


def run_window(lab: AnyLab, commands: list[list[str]], ctl: Path, timeout: float) -> tuple[list[int], list[dict]]:
    """Start ``commands[i]`` in namespace i (each gets ``--ctl CTL``), open the window, and return
    (bytes each peer sent in the window, each peer's report)."""
    ctl.mkdir(parents=True, exist_ok=True)
    for f in ctl.iterdir():
        f.unlink()
    n = len(commands)
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for i, cmd in enumerate(commands):
            log = open(ctl / f"log-{i}.txt", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(lab.wrap(i, [*cmd, "--ctl", str(ctl)]), cwd=REPO, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))

        def check_alive() -> None:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    raise RuntimeError(f"peer {i} exited early: {(ctl / f'log-{i}.txt').read_text()[-2000:]}")

        def all_there(prefix: str) -> bool:
            check_alive()
            return all((ctl / f"{prefix}{i}{'.json' if prefix == 'done-' else ''}").exists() for i in range(n))

        wait_for(lambda: all_there("ready-"), "peers ready", timeout=timeout)
        before = [lab.tx_bytes(i) for i in range(n)]
        (ctl / "go").touch()
        wait_for(lambda: all_there("done-"), "peers done", timeout=timeout)
        time.sleep(0.5)  # trailing ACKs and FINs
        after = [lab.tx_bytes(i) for i in range(n)]
        reports = [json.loads((ctl / f"done-{i}.json").read_text()) for i in range(n)]
        (ctl / "exit").touch()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        return [b - a for a, b in zip(before, after, strict=True)], reports
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)
        for log in logs:
            log.close()
