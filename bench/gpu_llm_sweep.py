"""Compare SmolLM2-on-tweets configurations fast on a GPU (what the llm section's configuration was
chosen from): one process per configuration, several at once on one GPU.

    python bench/gpu_llm_sweep.py cuda ROUNDS EVAL_EVERY EVAL_SIZE '{"estimator": "fzoo", "lr": 1e-3, ...}'

The JSON holds TrainConfig fields (plus "peers"); a cosine's horizon defaults to ROUNDS. It prints each
evaluation and appends the result to $OUT/sweep.jsonl. bench/results/gpu_llm_sweep/done.jsonl holds
the results of the 8 (of 12) runs whose logs came back from an H100 on 2026-11-26 (100 rounds, 300
held-out tweets). CUDA's zero-shot accuracy differs from the CPU's, so only the ranking carries over.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from bench.experiments.llm import TEMPLATE
from onebyte.api import simulate
from onebyte.config import RunSpec, TrainConfig
from onebyte.models import load_model


def main() -> None:
    device, rounds, every, size, cfg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    settings = json.loads(cfg)
    peers = settings.pop("peers", 4)
    settings = {"batch_size": 8, "max_length": 64, **settings}
    if settings.get("lr_schedule") == "cosine":
        settings.setdefault("horizon", rounds)
    train = TrainConfig.from_dict({**TrainConfig().to_dict(), **settings})
    spec = RunSpec(run_id="llm-bench", model="smollm2", task="tweets", labels=("negative", "neutral", "positive"),
                   template=TEMPLATE, chat=True, train=train)
    loaded = load_model("smollm2")
    loaded.model.to(device)  # the state and the inputs follow the model's device
    start, curve = time.time(), []

    def hook(line: dict) -> None:
        if "eval" in line:
            e = line["eval"]
            curve.append((line["round"] + 1, line["forward_passes"], round(e["accuracy"], 3), round(e["macro_f1"], 3),
                          round(e["loss"], 3)))
            print(cfg, curve[-1], round(time.time() - start), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        s = simulate(spec, out=f"{tmp}/run", peers=peers, rounds=rounds, eval_every=every, eval_size=size,
                     model=loaded, on_round=hook).summary
    rec = {"cfg": cfg, "device": device, "before": s["eval_before"], "after": s["eval_after"], "curve": curve,
           "seconds": round(time.time() - start)}
    with open(f"{os.environ.get('OUT', '.')}/sweep.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    print("DONE", json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
