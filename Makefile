# Task runner. Every target installs what it needs by itself (scripts/bootstrap.sh), so the two README
# commands `make demo` and `make test` work from a fresh clone on a bare Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bootstrapped

.PHONY: help bootstrap demo test unit integration lint typecheck bench clean

help:
	@echo "make demo       run the screener on the embedded stack (broker + redis) with the bundled OFAC sample"
	@echo "make test       lint, type-check, unit and integration tests (real broker protocol + real redis-server)"
	@echo "make bench      throughput and latency benchmark (results: bench/results/, docs/benchmarks.md)"

$(STAMP): pyproject.toml scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh
	@touch $(STAMP)

bootstrap: $(STAMP)

demo: $(STAMP)
	$(BIN)/aml-screener demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check services tests bench scripts
	$(BIN)/ruff format --check services tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

# The README's test command. pytest exits 5 when it collects nothing; make treats that as failure.
test: lint typecheck
	$(BIN)/pytest tests

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info services/*.egg-info
