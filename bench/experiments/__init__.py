"""One module per experiment, each runnable (``python -m bench.experiments.NAME --help``) and each
defining ``SECTION``: its steps and its part of BENCHMARKS.md (see ``bench.sections``)."""
