"""Data-parallel first-order training's traffic: every step each rank all-reduces a float32
gradient of all of all-MiniLM-L6-v2's parameters with ``torch.distributed`` (gloo, one flat
tensor, one rank per lab namespace, MASTER_ADDR = rank 0's address).

One rank: ``python -m bench.baselines.gloo --index R --world N --master IP --numel M --steps S
--ctl DIR`` (started by ``bench.experiments.comm``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from bench.lab.control import WAIT_S, Control

PORT = 29517


def rank(index: int, world: int, master: str, numel: int, steps: int, ctl: Path) -> None:
    """One data-parallel rank: all-reduce a float32 gradient of ``numel`` elements per step."""
    # torch.distributed reads its rendezvous from the environment; this process is the rank alone.
    os.environ.update(MASTER_ADDR=master, MASTER_PORT=str(PORT), GLOO_SOCKET_IFNAME="eth0")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=index, world_size=world, timeout=timedelta(seconds=WAIT_S))
    grad = torch.randn(numel, dtype=torch.float32)
    dist.all_reduce(grad)  # warm-up: connections and buffers are set up outside the window
    dist.barrier()
    control = Control(ctl)
    control.ready(index)
    control.wait_go()
    dist.barrier()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        dist.all_reduce(grad)
        times.append(time.perf_counter() - t)
    control.done(index, {"step_seconds": times})
    control.wait_exit()
    dist.destroy_process_group()


def minilm_parameters() -> tuple[int, int]:
    """(parameter count, tensor count) of all-MiniLM-L6-v2 as onebyte loads it: the gradient's size."""
    from onebyte.models import load_model

    model = load_model("minilm").model
    params = list(model.parameters())
    return sum(p.numel() for p in params), len(params)


def command(index: int, world: int, master: str, numel: int, steps: int) -> list[str]:
    """How the orchestrator starts rank ``index`` (``--ctl`` is added by ``run_window``)."""
    return [sys.executable, "-m", "bench.baselines.gloo", "--index", str(index), "--world", str(world),
            "--master", master, "--numel", str(numel), "--steps", str(steps)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--master", required=True)
    ap.add_argument("--numel", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--ctl", type=Path, required=True)
    a = ap.parse_args()
    rank(a.index, a.world, a.master, a.numel, a.steps, a.ctl)


if __name__ == "__main__":
    main()
