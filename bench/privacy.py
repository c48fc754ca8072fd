"""Held-out accuracy against the privacy budget ε (∞, 8, 3, 1) on the demo configuration.

    python bench/privacy.py [--rounds 100] [--out bench/results/privacy.json]

Each run is `onebyte simulate` on minilm + vader, 4 peers, byte codec, the README demo's
defaults, with `--dp-epsilon E --dp-delta 1e-5` (none for ε = ∞); each peer's ε protects its
own shard, as computed by dp-accounting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from onebyte.privacy import DPConfig
from onebyte.simulate import SimConfig, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--epsilons", default="inf,8,3,1")
    ap.add_argument("--out", type=Path, default=Path("bench/results/privacy.json"))
    ap.add_argument("--work", type=Path, default=Path("bench/out/privacy"))
    a = ap.parse_args()
    rows = []
    for text in a.epsilons.split(","):
        eps = float(text)
        work = a.work / f"eps-{text}"
        shutil.rmtree(work, ignore_errors=True)
        dp = None if eps == float("inf") else DPConfig(eps, 1e-5, 1.0)
        s = simulate(SimConfig(model="minilm", task="vader", peers=4, rounds=a.rounds, dp=dp), work)
        rows.append({"epsilon": text, "accuracy_before": s["eval_before"]["accuracy"],
                     "accuracy_after": s["eval_after"]["accuracy"], "dp": s.get("dp"), "seconds": s["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": f"python bench/privacy.py --rounds {a.rounds} --epsilons {a.epsilons}"}
    a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
