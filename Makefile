# Task runner. Every target installs what it needs by itself (scripts/bootstrap.sh), so the two README
# commands `make demo` and `make test` work from a fresh clone on a bare Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bootstrapped
FAULTS_REPORT ?= bench/results/faults-latest.md
LINT_PATHS := services tests bench scripts docker/loadgen

.PHONY: help bootstrap demo test unit integration faults lint typecheck bench bench-lookback clean

help:
	@echo "make demo       run the screener on the embedded stack (broker + redis) with the bundled OFAC sample"
	@echo "make test       lint, type-check, unit and integration tests (real broker protocol + real redis-server)"
	@echo "make faults     fault-injection suite (crashes, failover, outages, poison input); table -> $(FAULTS_REPORT)"
	@echo "make bench      throughput and latency benchmark (results: bench/results/, docs/benchmarks.md)"
	@echo "make bench-lookback   only the lookback benchmark (10M history rows, sync -> last retroactive match)"

$(STAMP): pyproject.toml scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh
	@touch $(STAMP)

bootstrap: $(STAMP)

demo: $(STAMP)
	$(BIN)/aml-screener demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

# The full fault-injection run (about 20 minutes): 20,000+ events per scenario, Redis paused 30 s, every scenario
# under both processing guarantees. `make test` runs the same scenarios reduced (5,000 events, 10 s pause, one storm
# wave, most scenarios under one guarantee). The table goes to FAULTS_REPORT.
faults: $(STAMP)
	AML_FAULTS_FULL=1 AML_FAULTS_REPORT=$(FAULTS_REPORT) $(BIN)/pytest -m faults tests/faults

# The README's test command. pytest exits 5 when it collects nothing; make treats that as failure.
test: lint typecheck
	$(BIN)/pytest tests

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Part E of `make bench` alone (issue 14): 10,000,000 history rows loaded by COPY (about 10 GB, 5-10 minutes),
# then a sync of 1,000 listed addresses timed to the last retroactive match.
bench-lookback: $(STAMP)
	$(BIN)/python -m bench.lookback $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info services/*.egg-info
