"""Run every benchmark, one after the other, then write the report (what `make bench` calls).

    python -m bench.run_all [--quick] [--only STEP ...] [--results DIR]

Every registered section (bench/sections.py) names its steps; each step is one
``python -m bench.experiments.NAME ...`` in a subprocess. Full: results in bench/results/, report
in BENCHMARKS.md (about 50 minutes on 2 cores). Quick: smaller versions of each in
bench/results/quick/, report in bench/results/quick/BENCHMARKS.md (under 5 minutes). Each step's
output goes to bench/out/<mode>-<step>.log; the time every step took goes to run.json beside the
results and into the report. The network benchmarks need root (they build network namespaces);
without it they are skipped and say so, and the report keeps their earlier results with their dates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.output import REPO, RESULTS, WORK
from bench.sections import run_order, sections


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far: a step's own cost, which a
    loaded machine does not inflate as it does the wall clock."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    secs = sections()
    steps = run_order(secs)
    ap = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller version of each step (under 5 minutes)")
    ap.add_argument("--only", nargs="*", metavar="STEP", choices=[step.name for _, step in steps],
                    help="run only these steps (then report)")
    ap.add_argument("--results", type=Path, help="results folder (default: bench/results, --quick: bench/results/quick);"
                    " the report goes beside them unless they are the full run's")
    a = ap.parse_args()
    mode = "quick" if a.quick else "full"
    out = (a.results or (RESULTS / "quick" if a.quick else RESULTS)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    record: dict = {"mode": mode, "command": "make bench-quick" if a.quick else "make bench",
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
                    "steps": []}
    start, failed = time.monotonic(), []
    for section, step in steps:
        args = step.quick if a.quick else step.full
        if args is None or (a.only and step.name not in a.only):
            continue
        if step.needs_root and not root:
            print(f"[{step.name}] skipped: network benchmarks need root (network namespaces)", flush=True)
            record["steps"].append({"name": step.name, "skipped": "needs root"})
            continue
        argv = [sys.executable, "-m", section.module, *(x.format(out=out) for x in args)]
        log = WORK / f"{mode}-{step.name}.log"
        t, cpu = time.monotonic(), _children_cpu()
        print(f"[{step.name}] {' '.join(argv[1:])} (log: {log.relative_to(REPO)})", flush=True)
        with open(log, "w") as fh:
            try:
                rc = subprocess.run(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=step.timeout_min * 60).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        secs_taken, cpu = time.monotonic() - t, _children_cpu() - cpu
        print(f"[{step.name}] {'ok' if rc == 0 else f'FAILED (exit {rc}), see {log}'} in {secs_taken:.0f} s "
              f"({cpu:.0f} s of CPU)", flush=True)
        record["steps"].append({"name": step.name, "seconds": round(secs_taken, 1), "cpu_seconds": round(cpu, 1),
                                "exit": rc})
        if rc != 0:
            failed.append(step.name)
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
    print(f"{mode} benchmarks: {record['total_seconds'] / 60:.1f} min; report {os.path.relpath(target, REPO)}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
