"""How fast the command answers when nothing heavy is needed: --version, --help, init, ledger verify.

    python -m bench.experiments.startup [--repeats 7] [--out bench/results/startup.json]

Each command runs as a fresh process (the console script a user types), ``--repeats`` times; the
median wall-clock time is reported beside a bare ``python -c pass`` measured in the same run, and
whether ``import onebyte`` loaded torch. Target: at most 0.5 s each on this 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.output import RESULTS, save_result
from bench.sections import Results, Section, Step

TARGET_S = 0.5


def _median_seconds(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ledger(path: Path, records: int) -> None:
    import numpy as np

    from onebyte.codec import Codec
    from onebyte.ledger import LedgerWriter
    from onebyte.record import build_record

    with LedgerWriter(path) as w:
        w.append([build_record(Codec.BYTE, b"t" * 16, r // 4, r % 4, 0, np.full(4, 0.5), r) for r in range(records)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--records", type=int, default=400, help="records in the ledger verified (the demo's 400)")
    ap.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    a = ap.parse_args()
    exe = Path(sys.executable).with_name("onebyte")
    with tempfile.TemporaryDirectory(prefix="onebyte-startup-") as tmp:
        ledger = Path(tmp) / "ledger.obl"
        _ledger(ledger, a.records)
        runs = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "onebyte --version": [str(exe), "--version"],
            "onebyte --help": [str(exe), "--help"],
            "onebyte init": [str(exe), "init", "--force", str(Path(tmp) / "run.toml")],
            f"onebyte ledger verify ({a.records} records)": [str(exe), "ledger", "verify", str(ledger)],
        }
        rows = [{"command": name, "median_s": round(_median_seconds(cmd, a.repeats), 3)} for name, cmd in runs.items()]
    probe = subprocess.run([sys.executable, "-c", "import onebyte, sys; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True, timeout=120)
    result = {"rows": rows, "repeats": a.repeats, "target_s": TARGET_S,
              "import_onebyte_loads_torch": probe.stdout.strip() == "True"}
    save_result(result, a.out, f"python -m bench.experiments.startup --repeats {a.repeats}",
                "2-core CPU, no GPU")


def _rows(results: Results) -> list[dict]:
    r = results.get("startup")
    return [row for row in (r or {}).get("rows", []) if row["command"].startswith("onebyte")]


def render(results: Results) -> list[str]:
    r = results.get("startup")
    if not r:
        return []
    out = ["## Start-up time of the command", "",
           f"`{r['command']}` ({r['date']}, {r['machine']}): median wall-clock of {r['repeats']} fresh processes. "
           f"`import onebyte` loads torch: {'yes' if r['import_onebyte_loads_torch'] else 'no'}.", "",
           "| command | median (s) |", "|---|---|"]
    out += [f"| `{row['command']}` | {row['median_s']:.3f} |" for row in r["rows"]]
    return out + [""]


def claims(results: Results):
    return [(f"`{row['command']}` answers within {TARGET_S} s", f"{row['median_s']:.2f} s", f"≤ {TARGET_S} s",
             row["median_s"] <= TARGET_S) for row in _rows(results)]


SECTION = Section("startup", "bench.experiments.startup", render,
                  steps=(Step("startup", ("--out", "{out}/startup.json"),
                              ("--repeats", "3", "--out", "{out}/startup.json")),),
                  claims=claims)


if __name__ == "__main__":
    main()
