"""Tail averaging probe (issue #11): the demo's default run (4 simulated peers, MiniLM on VADER,
100 rounds), evaluated at its end and as the average of its float weights over the last 50 and 25
rounds; prints one JSON line.

    python -m bench.lab.probe_average SEED
"""

from __future__ import annotations

import json
import sys
import tempfile


def main() -> None:
    import torch

    import onebyte
    from onebyte.config import TrainConfig
    from onebyte.simulator import SimConfig, run_simulation
    from onebyte.training import Setup

    torch.set_num_threads(1)
    seed = int(sys.argv[1])
    spec = onebyte.RunSpec(run_id=f"estimators-seed{seed}", model="minilm", task="vader", train=TrainConfig())
    setup = Setup.build(spec)
    view = setup.state.view
    sums = {n: torch.zeros(view.numel(), dtype=torch.float64) for n in (50, 25)}

    def hook(line: dict) -> None:
        for n, total in sums.items():
            if line["round"] + 1 > 100 - n:
                total += view.double()

    cfg = SimConfig.from_spec(spec, peers=4, rounds=100, seed=seed, eval_every=100).validate()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_simulation(cfg, tmp + "/r", hook, setup=setup)
    out = {"seed": seed, "final": result.summary["eval_after"]["accuracy"]}
    for n, total in sums.items():
        view.copy_((total / n).float())
        out[f"average_of_last_{n}_rounds"] = setup.objective.evaluate(setup.dataset.test)["accuracy"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
