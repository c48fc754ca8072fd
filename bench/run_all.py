"""Run every benchmark, one after the other, then write the report (what `make bench` calls).

    python bench/run_all.py [--quick] [--only NAME ...]

Full: results in bench/results/, report in BENCHMARKS.md (about 50 minutes on 2 cores).
Quick: smaller versions of each in bench/results/quick/, report in bench/results/quick/BENCHMARKS.md
(under 5 minutes). Each step's output goes to bench/out/<mode>-<step>.log; the time every step took
goes to run.json beside the results and into the report. The network benchmarks need root (they
build network namespaces); without it they are skipped and say so, and the report keeps their
earlier results with their dates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent

# name, full arguments, quick arguments, needs root. "{out}" is the results folder.
STEPS: list[tuple[str, list[str], list[str], bool]] = [
    ("quality", ["quality.py", "--out", "{out}/quality.json"],
     ["quality.py", "--quick", "--out", "{out}/quality.json"], False),
    ("speed", ["speed.py", "--out", "{out}/speed_cpu.json"],
     ["speed.py", "--quick", "--repeats", "2", "--out", "{out}/speed_cpu.json"], False),
    ("catchup", ["catchup.py", "--out", "{out}/catchup.json"],
     ["catchup.py", "--rounds", "100", "--out", "{out}/catchup.json"], False),
    ("fuzz", ["fuzz.py", "--out", "{out}/fuzz.json"],
     ["fuzz.py", "--records", "5000", "--ledgers", "2000", "--out", "{out}/fuzz.json"], False),
    ("wire", ["wire.py", "--rounds", "40", "--out", "{out}/wire.json"], [], True),
    ("wire-k128", ["wire.py", "--samples", "128", "--rounds", "30", "--out", "{out}/wire_k128.json"], [], True),
    ("comm", ["comm.py", "--out", "{out}/comm.json"], ["comm.py", "--quick", "--out", "{out}/comm.json"], True),
    ("thinlink", ["thinlink.py", "--out", "{out}/thinlink.json"],
     ["thinlink.py", "--quick", "--out", "{out}/thinlink.json"], True),
]
STEP_TIMEOUT_S = 40 * 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", help="run only these steps (then report)")
    a = ap.parse_args()
    mode = "quick" if a.quick else "full"
    out = ROOT / "results" / ("quick" if a.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    logs = ROOT / "out"
    logs.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    record: dict = {"mode": mode, "command": "make bench-quick" if a.quick else "make bench",
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
                    "steps": []}
    start, failed = time.monotonic(), []
    for name, full, quick, needs_root in STEPS:
        args = quick if a.quick else full
        if not args or (a.only and name not in a.only):
            continue
        if needs_root and not root:
            print(f"[{name}] skipped: network benchmarks need root (network namespaces)", flush=True)
            record["steps"].append({"name": name, "skipped": "needs root"})
            continue
        argv = [sys.executable, str(ROOT / args[0]), *(x.format(out=out) for x in args[1:])]
        log = logs / f"{mode}-{name}.log"
        t = time.monotonic()
        print(f"[{name}] {' '.join(argv[1:])} (log: {log.relative_to(REPO)})", flush=True)
        with open(log, "w") as fh:
            try:
                rc = subprocess.run(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=STEP_TIMEOUT_S).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        secs = time.monotonic() - t
        print(f"[{name}] {'ok' if rc == 0 else f'FAILED (exit {rc}), see {log}'} in {secs:.0f} s", flush=True)
        record["steps"].append({"name": name, "seconds": round(secs, 1), "exit": rc})
        if rc != 0:
            failed.append(name)
    record["total_seconds"] = round(time.monotonic() - start, 1)
    try:
        record["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                          text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        record["commit"] = None
    if not a.only:
        (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    report = out / "BENCHMARKS.md" if a.quick else REPO / "BENCHMARKS.md"
    subprocess.run([sys.executable, str(ROOT / "report.py"), "--results", str(out), "--out", str(report)],
                   check=True, timeout=120)
    print(f"{mode} benchmarks: {record['total_seconds'] / 60:.1f} min; report {report.relative_to(REPO)}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
