# Two commands do all the set-up on a fresh machine:
#   make run    create .venv, install the pinned dependencies, run the default experiment
#   make test   create .venv if needed, then the test suite and the workflow linters
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-12)
# The machine's CPUs: asking for more oversubscribes them (README: 265 s vs 316 s on 2 CPUs).
CORES ?= $(shell nproc)
# pytest workers: on 2 cores, one-thread unit tests and the workflow tests' waits (SLURM polls,
# serial training chains) fill the second core (benchmarks/README.md, "The test suite").
TEST_WORKERS ?= 2

.PHONY: install run test test-fast lint generate bench bench-gpu bench-slurm dry-run pull

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/snakemake --cores $(CORES) all

dry-run: install
	$(BIN)/snakemake -n all

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 --durations=25
	$(MAKE) --no-print-directory lint

# Everyday tier: the unit tests, no workflow run (pytest -m "not workflow"); make test runs everything.
test-fast: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not workflow" -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .
	$(BIN)/python tools/dvc_pipeline.py --check
	$(BIN)/python tools/schema_registries.py --check

# The files generated from the code: the schema's registry names, then dvc.yaml (which hashes the schema).
generate: install
	$(BIN)/python tools/schema_registries.py
	$(BIN)/python tools/dvc_pipeline.py

# On-demand measurements (not part of the tests); each prints its figures side by side.
bench: install
	$(BIN)/python benchmarks/eot.py
	$(BIN)/python benchmarks/harness.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/workflow.py --cores 2

# On a GPU machine: the fast path on vs off, the public code's setting, accuracy both ways.
bench-gpu: install
	$(BIN)/python benchmarks/gpu_fastpath.py --public --accuracy 8

bench-slurm: install
	$(BIN)/python benchmarks/slurm_overhead.py

# DVC does not keep file times: after pulling, Snakemake is told the pulled files are current.
pull: install
	$(BIN)/dvc pull
	$(BIN)/snakemake --touch --cores 1 all --configfile "$$($(BIN)/python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["configfile"])')"
