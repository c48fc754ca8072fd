"""Fuzzing the decoders, at benchmark size: the ``fuzz``-marked test in tests/test_fuzz.py, its
counts written to the results for the report.

    python -m bench.experiments.fuzz [--records 100000] [--ledgers 100000] [--out bench/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.output import REPO, RESULTS
from bench.sections import Results, Section, Step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--ledgers", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.unlink(missing_ok=True)
    env = dict(os.environ, ONEBYTE_FUZZ_RECORDS=str(a.records), ONEBYTE_FUZZ_LEDGERS=str(a.ledgers),
               ONEBYTE_FUZZ_REPORT=str(a.out.resolve()))
    rc = subprocess.run([sys.executable, "-m", "pytest", "-m", "fuzz", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
                        cwd=REPO, env=env, check=False).returncode
    if not a.out.exists():
        print(f"the fuzz test wrote no report (pytest exit {rc})", file=sys.stderr)
        return rc or 1
    result = json.loads(a.out.read_text())
    result.update(command=f"python -m bench.experiments.fuzz --records {a.records} --ledgers {a.ledgers}",
                  date=time.strftime("%Y-%m-%d %H:%M"))
    text = json.dumps(result, indent=2)
    print(text)
    a.out.write_text(text + "\n")
    return rc


def render(results: Results) -> list[str]:
    """The fuzzing section of BENCHMARKS.md."""
    r = results.get("fuzz")
    if not r:
        return []
    return [
        "## Fuzzing the decoders",
        "",
        f"`{r['command']}` ({r['date']}): {r['mutated_records']:,} mutated records → "
        f"{r.get('rejected', 0):,} rejected with `ProtocolError`, {r.get('accepted_unchanged', 0):,} accepted "
        f"(mutations that left the bytes unchanged), {r.get('accepted_changed', 0)} changed records accepted; "
        f"{r['mutated_ledgers']:,} mutated ledgers → {r.get('ledger_rejected', 0):,} rejected with `LedgerError`, "
        f"{r.get('ledger_valid', 0)} valid. **Crashes: {r['crashes']}.**",
        "",
    ]


SECTION = Section(
    "fuzz", "bench.experiments.fuzz", render,
    steps=(Step("fuzz", ("--out", "{out}/fuzz.json"),
                ("--records", "5000", "--ledgers", "2000", "--out", "{out}/fuzz.json")),),
)

if __name__ == "__main__":
    sys.exit(main())
