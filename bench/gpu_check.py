"""On a CUDA machine: the perturbation generator and integer updates give the same bits as on CPU.

    PYTHONPATH=src python bench/gpu_check.py --out gpu_check.json

Checks (each prints PASS/FAIL): Philox known answers vs NumPy on the GPU; Rademacher values for a
MiniLM-sized layout (22.7M) bit-identical on CUDA and CPU for several seeds; a fixed-point state
on CUDA and on CPU reaching the same state hash after the same records; and GPU timings of the
generator vs ``torch.normal_`` (synchronised, medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from onebyte.codec import Codec
from onebyte.config import TrainConfig
from onebyte.record import build_record
from onebyte.replay import apply_records
from onebyte.rng import PerturbationLayout, key_limbs, philox4x64
from onebyte.state import FixedPointState

MINILM_LIKE = [("embeddings.word_embeddings.weight", 30522 * 384)] + [
    (f"encoder.layer.{i}.{n}", size) for i in range(6)
    for n, size in [("attention.self.query.weight", 384 * 384), ("attention.self.query.bias", 384),
                    ("intermediate.dense.weight", 384 * 1536), ("output.dense.weight", 1536 * 384),
                    ("output.LayerNorm.weight", 384)]]


def timed(fn, device, repeats=20):
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--dry-run", action="store_true", help="compare CPU with CPU (checks the script itself)")
    a = ap.parse_args()
    if a.dry_run:
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("no CUDA device; nothing to compare")
        return 1
    else:
        dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (dry run)"
    res: dict = {"device": name, "torch": torch.__version__, "checks": {}}

    def check(name, ok):
        res["checks"][name] = bool(ok)
        print(("PASS " if ok else "FAIL ") + name, flush=True)

    for key in (0, 123456789123, (1 << 64) - 1):
        bg = np.random.Philox(key=np.array([key, 0], dtype=np.uint64))
        want = [int(x) for x in bg.random_raw(4)]
        c = [torch.tensor([v], device=dev) for v in [1, 0, 0, 0, 0, 0, 0, 0]]
        out = philox4x64(c, key_limbs(key))
        got = [int(out[2 * i]) | (int(out[2 * i + 1]) << 32) for i in range(4)]
        check(f"philox known answer on CUDA, key {key:#x}", got == want)

    names, sizes = zip(*MINILM_LIKE, strict=True)
    cpu_layout = PerturbationLayout(names, sizes, "cpu")
    gpu_layout = PerturbationLayout(names, sizes, dev)
    res["layout_size"] = cpu_layout.size
    for seed in (0, 1, 2**63 + 5, 987654321987654321):
        check(f"rademacher bit-identical CUDA vs CPU, seed {seed}",
              torch.equal(gpu_layout.rademacher(seed).cpu(), cpu_layout.rademacher(seed)))

    def toy(device):
        g = torch.Generator().manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.Linear(200, 7))
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        return FixedPointState(sorted(m.to(device).named_parameters()), device)

    rng = np.random.default_rng(1)
    recs = [build_record(Codec.BYTE, b"g" * 16, r, p, 0, rng.normal(size=4) * 30, r * 10 + p)
            for r in range(5) for p in range(4)]
    train = TrainConfig(lr=1e-3)
    s_cpu, s_gpu = toy("cpu"), toy(dev)
    check("base state hash equal CUDA vs CPU", s_cpu.state_hash() == s_gpu.state_hash())
    apply_records(s_cpu, recs, train)
    apply_records(s_gpu, list(reversed(recs)), train)
    check("state hash equal after 20 records (CPU in order, CUDA reversed)", s_cpu.state_hash() == s_gpu.state_hash())
    check("float views equal CUDA vs CPU", torch.equal(s_cpu.view, s_gpu.view.cpu()))

    buf = torch.empty(gpu_layout.size, device=dev)
    res["cuda_normal_s"] = timed(lambda: buf.normal_(), dev)
    res["cuda_rademacher_int8_s"] = timed(lambda: gpu_layout.rademacher(7), dev)
    res["cuda_rademacher_float_s"] = timed(lambda: gpu_layout.rademacher(7).float(), dev)
    res["cuda_speedup_rademacher_vs_normal"] = res["cuda_normal_s"] / res["cuda_rademacher_int8_s"]
    cpu_buf = torch.empty(cpu_layout.size)
    torch.set_num_threads(2)
    res["cpu2_normal_s"] = timed(lambda: cpu_buf.normal_(), torch.device("cpu"), 5)
    res["cpu2_rademacher_int8_s"] = timed(lambda: cpu_layout.rademacher(7), torch.device("cpu"), 5)
    res["all_passed"] = all(res["checks"].values())
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return 0 if res["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
