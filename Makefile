# EventFlow: `make run` serves the whole system, `make test` runs the whole test suite.
# Both set up everything they need first (virtualenv, install), from nothing but Python 3.11+ and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PYTEST_ARGS ?=

.PHONY: help venv install protos run test test-e2e soak bench compose-secrets clean distclean

help:
	@echo "make run       set up and run the whole system (usuarios, eventos, reservas, MongoDB, Redis)"
	@echo "make test      set up and run the test suite"
	@echo "make test-e2e  only the end-to-end tests: eventflow up driven by grpcurl (also part of make test)"
	@echo "make protos    regenerate generated/ from protos/"
	@echo "make soak      long concurrency and crash runs (not part of make test)"
	@echo "make bench     benchmark: the floor and the system, a table, JSON and a chart (BENCH_ARGS=--quick:"
	@echo "               a few minutes; BENCH_ARGS='--baseline main': before and after in one run; see BENCHMARKS.md)"
	@echo "make compose-secrets  .env and secrets/ for docker compose (random passwords, the keys; kept if present)"
	@echo "make clean     remove caches; make distclean also removes .venv, .data and .bench"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "EventFlow needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv install: $(STAMP)

# One protoc command, shared with the drift test (tests/test_generated_drift.py): see infra/protogen.py.
protos: $(STAMP)
	$(PY) -m infra.protogen

run: $(STAMP)
	$(VENV)/bin/eventflow up

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Only the end-to-end tests: `eventflow up` driven by grpcurl (also part of `make test`).
test-e2e: $(STAMP)
	$(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)

soak: $(STAMP)
	EVENTFLOW_SOAK=1 $(PY) -m pytest -m soak tests/soak $(PYTEST_ARGS)

# The chart needs matplotlib: a bench-only extra, installed here once (make test does not need it).
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(PY) -m tests.bench $(BENCH_ARGS)

# What docker-compose.yml needs before `docker compose up`: .env (passwords) and secrets/ (see README,
# Deployment with docker-compose). Existing values are kept, and distclean leaves them: MongoDB's users in the
# compose volume were made with these passwords.
compose-secrets: $(STAMP)
	$(VENV)/bin/eventflow compose-secrets

clean:
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
	rm -rf .pytest_cache *.egg-info build

distclean: clean
	rm -rf $(VENV) .data .bench
