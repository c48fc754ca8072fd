"""onebyte's benchmarks, in named parts. Run them from the repository root:

    python -m bench.run_all [--quick]          # every experiment, then BENCHMARKS.md
    python -m bench.experiments.speed --quick  # one experiment
    python -m bench.report                     # BENCHMARKS.md from bench/results/*.json

* ``lab/``: network namespaces (``netns``), the userspace thin-link emulator (``linkemu``), real
  onebyte peers inside a lab (``peers``) and measurement windows over lab processes (``control``);
  real-peer runs on loopback or behind NAT (``churn``, ``partition``, ``natlab``).
* ``baselines/``: what onebyte is compared with: the first public implementation's JSON over HTTP
  (``json_http``), a gloo all-reduce (``gloo``) and one MeZO-style float SPSA (``mezo``).
* ``experiments/``: one module per experiment; each defines ``SECTION``, its steps and its part of
  the report (``sections`` lists them in report order).
* ``sweep``: what the learning-curve experiments share (a worker pool over conditions × seeds,
  resuming, a simulation as a learning curve, mean ± std, the first-order Adam baseline, figures).
* ``report``: writes BENCHMARKS.md; ``run_all``: runs every section's steps, then the report.
"""
