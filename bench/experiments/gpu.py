"""Determinism across devices: CUDA against CPU, bit for bit.

Not run by ``make bench``: the checks are the ``gpu``-marked tests in tests/test_gpu.py, run on a
machine with CUDA, which write the result this section shows:

    ONEBYTE_GPU_REPORT=bench/results/gpu_check_h200.json python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

from bench.output import RESULTS
from bench.sections import Results, Section

RESULT = "gpu_check_h200"
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
        f"GPU timing, same layout ({r['layout_size']:,} values): our generator {1000 * r['cuda_rademacher_int8_s']:.2f} ms "
        f"vs `normal_` {1000 * r['cuda_normal_s']:.3f} ms. On the GPU the tensor-op Philox is bound by "
        "kernel launches (hundreds of tiny elementwise kernels) and is far slower than cuRAND's fused "
        "`normal_`; a fused kernel would be needed there. CPU is where onebyte's peers run today.",
        "",
    ]


SECTION = Section("gpu", "bench.experiments.gpu", render)
