"""Run every benchmark, then write the report (what `make bench` and `make bench-quick` call).

    python -m bench.run_all [--quick] [--jobs N] [--only STEP ...] [--results DIR]

Every registered section (bench/sections.py) names its steps; each step is one
``python -m bench.experiments.NAME ...`` in a subprocess. Full: results in bench/results/, report
in BENCHMARKS.md (about 50 minutes on 2 cores), one step after the other, so that each has the
machine to itself. Quick: smaller versions of each in bench/results/quick/, report in
bench/results/quick/BENCHMARKS.md (under 5 minutes on 2 cores), two steps at a time (``--jobs``;
one torch thread each unless a step sets its own): the network steps first (they mostly wait on
their emulated links), then the longest of the last quick run. Either way a section's steps run in
order, after those of the sections it reads (``Section.after``), and one network step at a time.
Each step's output goes to bench/out/<mode>-<step>.log; the time every step took (wall and CPU
seconds) goes to run.json beside the results and into the report. The network benchmarks need root
(they build network namespaces); without it they are skipped and say so, and the report keeps their
earlier results with their dates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import report
from bench.output import REPO, RESULTS, WORK
from bench.sections import Section, Step, run_order, sections

QUICK_JOBS = 2  # steps at a time in the quick run: one per core of the 2-core machine it is sized for


def run_step(argv: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> tuple[int, float]:
    """One step in a subprocess, its output in ``log``: its exit status (124: stopped after
    ``timeout_s``) and CPU seconds (user + system, with the children it waited for), its own cost,
    which neither a loaded machine nor a step beside it inflates as they do the wall clock."""
    stopped = threading.Event()
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)

        def stop() -> None:
            stopped.set()
            proc.kill()

        timer = threading.Timer(timeout_s, stop)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's resources alone, not its neighbour's
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return 124 if stopped.is_set() else proc.returncode, usage.ru_utime + usage.ru_stime


def earlier_seconds(out: Path) -> dict[str, float]:
    """Each step's wall seconds in the last complete run into ``out`` (its run.json)."""
    try:
        steps = json.loads((out / "run.json").read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {x["name"]: x["seconds"] for x in steps if "seconds" in x}


class Schedule:
    """The planned steps, handed out one at a time to the workers: the first in priority order whose
    section's earlier steps and the sections it reads are done, never a second network step at once.
    Priority: the network steps first when ``network_first`` (they spend their time waiting on their
    links, beside the others), then the longest by ``seconds`` (unknown: first), then run order."""

    def __init__(self, planned: list[tuple[Section, Step]], seconds: dict[str, float], network_first: bool = False):
        self.pending = sorted(planned, key=lambda st: (network_first and not st[1].needs_root,
                                                       -seconds.get(st[1].name, float("inf"))))
        self.waits = {step.name: {s.name for sec, s in planned[:i] if sec.name == section.name or sec.name in section.after}
                      for i, (section, step) in enumerate(planned)}
        self.running: list[Step] = []
        self.done: set[str] = set()
        self.cond = threading.Condition()

    def _ready(self) -> tuple[Section, Step] | None:
        network = any(s.needs_root for s in self.running)
        return next(((sec, step) for sec, step in self.pending
                     if self.waits[step.name] <= self.done and not (step.needs_root and network)), None)

    def take(self) -> tuple[Section, Step] | None:
        """The next step to run, waiting while every one left must wait (None: none left)."""
        with self.cond:
            while self.pending:
                if (nxt := self._ready()) is not None:
                    self.pending.remove(nxt)
                    self.running.append(nxt[1])
                    return nxt
                self.cond.wait()
            return None

    def finish(self, step: Step) -> None:
        with self.cond:
            self.running.remove(step)
            self.done.add(step.name)
            self.cond.notify_all()


def main() -> int:
    secs = sections()
    steps = run_order(secs)
    ap = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller version of each step (under 5 minutes)")
    ap.add_argument("--jobs", type=int, help=f"steps at a time (default: 1; --quick: {QUICK_JOBS})")
    ap.add_argument("--only", nargs="*", metavar="STEP", choices=[step.name for _, step in steps],
                    help="run only these steps (then report)")
    ap.add_argument("--results", type=Path, help="results folder (default: bench/results, --quick: bench/results/quick);"
                    " the report goes beside them unless they are the full run's")
    a = ap.parse_args()
    mode = "quick" if a.quick else "full"
    jobs = max(1, a.jobs or (QUICK_JOBS if a.quick else 1))
    out = (a.results or (RESULTS / "quick" if a.quick else RESULTS)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    record: dict = {"mode": mode, "command": "make bench-quick" if a.quick else "make bench",
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
                    "jobs": jobs, "steps": []}
    planned, rows = [], {}
    for section, step in steps:
        if (step.quick if a.quick else step.full) is None or (a.only and step.name not in a.only):
            continue
        if step.needs_root and not root:
            print(f"[{step.name}] skipped: network benchmarks need root (network namespaces)", flush=True)
            rows[step.name] = {"name": step.name, "skipped": "needs root"}
            continue
        planned.append((section, step))
    # two torch threads each would oversubscribe the cores; a step that sets its threads keeps them
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if jobs > 1 and "OMP_NUM_THREADS" not in os.environ else None
    schedule = Schedule(planned, earlier_seconds(out), network_first=True) if jobs > 1 else Schedule(planned, {})
    start, failed = time.monotonic(), []

    def worker() -> None:
        while (taken := schedule.take()) is not None:
            section, step = taken
            argv = [sys.executable, "-m", section.module,
                    *(x.format(out=out) for x in (step.quick if a.quick else step.full))]
            log = WORK / f"{mode}-{step.name}.log"
            print(f"[{step.name}] {' '.join(argv[1:])} (log: {log.relative_to(REPO)})", flush=True)
            t = time.monotonic()
            try:
                rc, cpu = run_step(argv, log, step.timeout_min * 60, env or dict(os.environ))
            except OSError as exc:  # it could not start: a failed step, and the others go on
                print(f"[{step.name}] {exc}", flush=True)
                rc, cpu = 127, 0.0
            took = time.monotonic() - t
            print(f"[{step.name}] {'ok' if rc == 0 else f'FAILED (exit {rc}), see {log}'} in {took:.0f} s "
                  f"({cpu:.0f} s of CPU)", flush=True)
            rows[step.name] = {"name": step.name, "seconds": round(took, 1), "cpu_seconds": round(cpu, 1), "exit": rc,
                               **({"started": round(t - start, 1)} if jobs > 1 else {})}
            if rc != 0:
                failed.append(step.name)
            schedule.finish(step)

    # daemons: Ctrl-C (which the steps get too) ends the run instead of starting the next step
    threads = [threading.Thread(target=worker, name=f"bench-worker-{i}", daemon=True)
               for i in range(min(jobs, len(planned)))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    record["steps"] = [rows[step.name] for _, step in steps if step.name in rows]  # in run order
    record["total_seconds"] = round(time.monotonic() - start, 1)
    try:
        record["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                          text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        record["commit"] = None
    if not a.only:
        (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    target = REPO / "BENCHMARKS.md" if out == RESULTS else out / "BENCHMARKS.md"
    report.write(out, target)
    print(f"{mode} benchmarks: {record['total_seconds'] / 60:.1f} min"
          + (f" ({jobs} steps at a time)" if jobs > 1 else "") + f"; report {os.path.relpath(target, REPO)}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
