"""One single-seed probe of the demo's configuration with some settings changed (issue #11's search
for a higher final accuracy): 4 simulated peers, MiniLM on VADER, held-out accuracy on the whole
test split every 25 rounds; prints one JSON line.

    python -m bench.lab.probe NAME SEED [setting=value ...] [--run-id ID]
    python -m bench.lab.probe bias+norm 0 tune=bias+norm --run-id exp-0
    python -m bench.lab.probe longer 1 rounds=150 horizon=150

Settings are ``TrainConfig`` fields, or the simulator's ``peers``, ``rounds``, ``eval_every``,
``eval_size``. The run id defaults to ``estimators-seed{SEED}``, the estimator benchmark's, so a probe
is comparable with that benchmark's run of the same seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("seed", type=int)
    ap.add_argument("settings", nargs="*", metavar="setting=value")
    ap.add_argument("--run-id")
    a = ap.parse_args()
    import torch

    import onebyte
    from onebyte.config import TrainConfig

    torch.set_num_threads(1)
    changes, sim = {}, {"peers": 4, "rounds": 100, "eval_every": 25, "eval_size": None}
    for item in a.settings:
        key, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        (sim if key in sim else changes)[key] = value
    train = TrainConfig.from_dict({**TrainConfig().to_dict(), **changes})
    run_id = a.run_id or f"estimators-seed{a.seed}"
    spec = onebyte.RunSpec(run_id=run_id, model="minilm", task="vader", train=train)
    curve: list[tuple[int, int, float]] = []

    def hook(line: dict) -> None:
        if "eval" in line:
            curve.append((line["round"] + 1, line["forward_passes"], round(line["eval"]["accuracy"], 4)))

    t = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        s = onebyte.simulate(spec, out=tmp + "/r", seed=a.seed, on_round=hook, **sim).summary
    print(json.dumps({"name": a.name, "seed": a.seed, "run_id": run_id, "changes": changes, "sim": sim,
                      "curve": curve, "final": s["eval_after"]["accuracy"], "seconds": round(time.time() - t)}))


if __name__ == "__main__":
    main()
