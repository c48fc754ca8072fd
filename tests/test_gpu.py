"""On a CUDA machine: the perturbation generator and integer updates give the same bits as on CPU.

    python -m pytest -m gpu tests/test_gpu.py

Philox known answers against NumPy on the GPU; Rademacher values for a MiniLM-sized layout
(22.7M) bit-identical on CUDA and CPU for several seeds; a fixed-point state on CUDA and on CPU
reaching the same state hash after the same records (in opposite orders); and GPU timings of the
generator against ``torch.normal_``. On CUDA the generator runs fused (one Triton kernel from
``torch.compile``); the tensor-op path it replaces is checked and timed beside it. Skipped where CUDA is unavailable.

``ONEBYTE_GPU_CHECK_DEVICE=cpu`` compares CPU with CPU (checks these tests themselves on any
machine); ``ONEBYTE_GPU_REPORT=PATH`` writes the checks and timings as JSON (BENCHMARKS.md's
device section reads bench/results/gpu_check_h100.json).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from onebyte.codec import Codec
from onebyte.config import TrainConfig
from onebyte.record import build_record
from onebyte.rng import PerturbationLayout, key_limbs, philox4x64
from onebyte.state import FixedPointState
from onebyte.update import apply_records

pytestmark = pytest.mark.gpu

MINILM_LIKE = [("embeddings.word_embeddings.weight", 30522 * 384)] + [
    (f"encoder.layer.{i}.{n}", size) for i in range(6)
    for n, size in [("attention.self.query.weight", 384 * 384), ("attention.self.query.bias", 384),
                    ("intermediate.dense.weight", 384 * 1536), ("output.dense.weight", 1536 * 384),
                    ("output.LayerNorm.weight", 384)]]


@pytest.fixture(scope="module")
def device() -> torch.device:
    if os.environ.get("ONEBYTE_GPU_CHECK_DEVICE") == "cpu":
        return torch.device("cpu")  # a dry run: CPU against CPU
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available: these tests compare CUDA's bits with CPU's "
                    "(ONEBYTE_GPU_CHECK_DEVICE=cpu runs them CPU against CPU)")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def report(device: torch.device) -> Iterator[dict]:
    """What the checks found, written to ONEBYTE_GPU_REPORT (if set) when the module is done."""
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run)"
    res: dict = {"device": name, "torch": torch.__version__, "command": "python -m pytest -m gpu tests/test_gpu.py",
                 "checks": {}}
    yield res
    path = os.environ.get("ONEBYTE_GPU_REPORT")
    if path:
        res["all_passed"] = all(res["checks"].values())
        Path(path).write_text(json.dumps(res, indent=2) + "\n")


@pytest.fixture(scope="module")
def layouts(device: torch.device, report: dict) -> tuple[PerturbationLayout, PerturbationLayout]:
    names, sizes = zip(*MINILM_LIKE, strict=True)
    cpu, dev = PerturbationLayout(names, sizes, "cpu"), PerturbationLayout(names, sizes, device)
    report["layout_size"] = cpu.size
    report["fused"] = dev.fused
    return cpu, dev


@pytest.fixture(scope="module")
def eager(device: torch.device) -> PerturbationLayout:
    """The tensor-op generator on the device (launch-bound on CUDA): the fused kernel's reference."""
    names, sizes = zip(*MINILM_LIKE, strict=True)
    return PerturbationLayout(names, sizes, device, fused=False)


def _check(report: dict, name: str, ok: bool) -> None:
    report["checks"][name] = bool(ok)
    assert ok, name


@pytest.mark.parametrize("key", [0, 123456789123, (1 << 64) - 1])
def test_philox_known_answer(device: torch.device, report: dict, key: int) -> None:
    want = [int(x) for x in np.random.Philox(key=np.array([key, 0], dtype=np.uint64)).random_raw(4)]
    c = [torch.tensor([v], device=device) for v in [1, 0, 0, 0, 0, 0, 0, 0]]
    out = philox4x64(c, key_limbs(key))
    got = [int(out[2 * i]) | (int(out[2 * i + 1]) << 32) for i in range(4)]
    _check(report, f"philox known answer on CUDA, key {key:#x}", got == want)


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 5, 987654321987654321])
def test_rademacher_bit_identical(layouts: tuple[PerturbationLayout, PerturbationLayout], report: dict,
                                  seed: int) -> None:
    cpu, dev = layouts
    _check(report, f"rademacher bit-identical CUDA vs CPU, seed {seed}",
           torch.equal(dev.rademacher(seed).cpu(), cpu.rademacher(seed)))


@pytest.mark.parametrize("dtype", [torch.int8, torch.float32])
def test_fused_and_eager_paths_bit_identical(layouts: tuple[PerturbationLayout, PerturbationLayout],
                                             eager: PerturbationLayout, report: dict, dtype: torch.dtype) -> None:
    """Both device paths (fused kernel, tensor ops) and the chunked byte path give CPU's bits."""
    cpu, dev = layouts
    seed = 2**64 - 3
    want = cpu.rademacher(seed, dtype)
    _check(report, f"device default path (fused={dev.fused}) == CPU, {dtype}",
           torch.equal(dev.rademacher(seed, dtype).cpu(), want))
    _check(report, f"device tensor-op path == CPU, {dtype}", torch.equal(eager.rademacher(seed, dtype).cpu(), want))
    scratch = torch.empty(1 << 20, dtype=dtype, device=dev.device)
    chunks = [z.cpu().clone() for _, _, z in dev.iter_rademacher(seed, dtype, [(0, dev.size)], scratch)]
    _check(report, f"device chunked path == CPU, {dtype}", torch.equal(torch.cat(chunks), want))


def _toy(device: torch.device | str) -> FixedPointState:
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.Linear(200, 7))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return FixedPointState(sorted(m.to(device).named_parameters()), device)


def test_state_hash_identical_after_records(device: torch.device, report: dict) -> None:
    rng = np.random.default_rng(1)
    recs = [build_record(Codec.BYTE, b"g" * 16, r, p, 0, rng.normal(size=4) * 30, r * 10 + p)
            for r in range(5) for p in range(4)]
    train = TrainConfig(lr=1e-3)
    s_cpu, s_dev = _toy("cpu"), _toy(device)
    _check(report, "base state hash equal CUDA vs CPU", s_cpu.state_hash() == s_dev.state_hash())
    apply_records(s_cpu, recs, train)
    apply_records(s_dev, list(reversed(recs)), train)
    assert s_cpu.state_hash() != _toy("cpu").state_hash()  # the records did move the state
    _check(report, "state hash equal after 20 records (CPU in order, CUDA reversed)",
           s_cpu.state_hash() == s_dev.state_hash())
    _check(report, "float views equal CUDA vs CPU", torch.equal(s_cpu.view, s_dev.view.cpu()))


def _timed(fn: Callable[[], object], device: torch.device, repeats: int = 20) -> float:
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


def test_timings(device: torch.device, layouts: tuple[PerturbationLayout, PerturbationLayout],
                 eager: PerturbationLayout, report: dict) -> None:
    """Not a check: the generator against ``normal_`` on the device, and on 2 CPU threads, for the report."""
    cpu, dev = layouts
    buf = torch.empty(dev.size, device=device)
    report["cuda_normal_s"] = _timed(lambda: buf.normal_(), device)
    report["cuda_rademacher_int8_s"] = _timed(lambda: dev.rademacher(7), device)
    report["cuda_rademacher_float_s"] = _timed(lambda: dev.rademacher(7, torch.float32), device)
    report["cuda_rademacher_eager_int8_s"] = _timed(lambda: eager.rademacher(7), device)
    report["cuda_fused_speedup_vs_eager"] = report["cuda_rademacher_eager_int8_s"] / report["cuda_rademacher_int8_s"]
    report["cuda_speedup_rademacher_vs_normal"] = report["cuda_normal_s"] / report["cuda_rademacher_int8_s"]
    cpu_buf = torch.empty(cpu.size)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report["cpu2_normal_s"] = _timed(lambda: cpu_buf.normal_(), torch.device("cpu"), 5)
        report["cpu2_rademacher_int8_s"] = _timed(lambda: cpu.rademacher(7), torch.device("cpu"), 5)
    finally:
        torch.set_num_threads(threads)
    assert all(v > 0 for k, v in report.items() if k.endswith("_s"))
