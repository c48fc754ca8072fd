"""Determinism across devices: CUDA against CPU, bit for bit.

Not run by ``make bench``: the checks are the ``gpu``-marked tests in tests/test_gpu.py, run on a
machine with CUDA, which write the result this section shows:

    ONEBYTE_GPU_REPORT=bench/results/gpu_check_h100.json python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

from bench.output import RESULTS
from bench.sections import Results, Section

RESULT = "gpu_check_h100"
RERUN = f"ONEBYTE_GPU_REPORT=bench/results/{RESULT}.json python -m pytest -m gpu tests/test_gpu.py"


def render(results: Results) -> list[str]:
    """The determinism-across-devices section of BENCHMARKS.md."""
    r = Results(RESULTS).get(RESULT)  # measured on a lent GPU machine, not by `make bench`: the quick report shows it too
    if not r:
        return []
    checks = "; ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in r["checks"].items())
    return [
        "## Determinism across devices (CUDA vs CPU)",
        "",
        f"On {r['device']} (torch {r['torch']}), `{r.get('command', 'PYTHONPATH=src python bench/gpu_check.py')}`: "
        f"{checks}." + ("" if "command" in r else f" Today these are the `gpu` tests: `{RERUN}`."),
        "",
        f"GPU timing, same layout ({r['layout_size']:,} values, median of 20): the fused generator (the same "
        f"Philox arithmetic compiled by `torch.compile` into one Triton kernel, counters to signs) "
        f"{1000 * r['cuda_rademacher_int8_s']:.3f} ms, the tensor-op path it replaces "
        f"{1000 * r['cuda_rademacher_eager_int8_s']:.2f} ms ({r['cuda_fused_speedup_vs_eager']:.0f}x faster, same bits), "
        f"cuRAND's `normal_` {1000 * r['cuda_normal_s']:.3f} ms. The tensor-op path is bound by kernel launches "
        "(hundreds of tiny elementwise kernels); the fused kernel does emulated 64-bit multiplies on 32-bit "
        "limbs and stays a few times slower than `normal_`, which is fast enough: a perturbation is far "
        "cheaper than a forward pass. CPU is where onebyte's peers run today.",
        "",
    ]


SECTION = Section("gpu", "bench.experiments.gpu", render)
