# EventFlow: `make run` serves the whole system, `make test` runs the whole test suite.
# Both set up everything they need first (virtualenv, install), from nothing but Python 3.11+ and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PYTEST_ARGS ?=
# make test spreads the test files over this many pytest-xdist workers (each file stays in one worker, with its
# fixtures): the suite mostly waits on servers, so 4 workers on 2 cores take ~60% of the serial time. 0 runs serially.
PYTEST_WORKERS ?= 4

.PHONY: help venv install protos run test test-e2e test-slow soak fuzz bench compose-secrets k8s-check clean distclean

help:
	@echo "make help      this list"
	@echo "make install   create .venv and install the project into it (make venv does the same; others run it first)"
	@echo "make run       set up and run the whole system (usuarios, eventos, reservas, MongoDB, Redis)"
	@echo "make test      set up and run the test suite"
	@echo "make test-e2e  only the end-to-end tests: eventflow up driven by grpcurl (also part of make test)"
	@echo "make protos    regenerate generated/ from protos/"
	@echo "make test-slow the scale tests of many seconds each, with 50,000-seat maps (not part of make test)"
	@echo "make soak      long concurrency and crash runs (not part of make test)"
	@echo "make fuzz      10,000 generated calls to every RPC of a running stack (FUZZ_CALLS=n; make test runs 300)"
	@echo "make bench     benchmark: the floor and the system, a table, JSON and a chart (BENCH_ARGS=--quick:"
	@echo "               a few minutes; BENCH_ARGS='--baseline main': before and after in one run; see BENCHMARKS.md)"
	@echo "make compose-secrets  .env and secrets/ for docker compose (random passwords, the keys; kept if present)"
	@echo "make k8s-check checkov on deploy/k8s (the local overlays, rendered) and the Dockerfile (docs/deploy.md)"
	@echo "make clean     remove caches"
	@echo "make distclean remove caches, .venv, .venv-checkov, .data and .bench"

# setuptools tells every editable install of a layout like ours (packages served from the checkout's folders) that folders
# named like the packages take precedence: they do here, on purpose (the checkout is the code). Said on each install
# it reads as a problem, so that one notice is filtered; every other warning still shows.
QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

# Two distributions from this repository: eventflow-client (clients/python: the stubs and eventflow.client) and
# the servers, which depend on it; named together, pip takes the local eventflow-client, never one from an index.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "EventFlow needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(QUIET_EDITABLE) $(PY) -m pip install --quiet -e ./clients/python -e '.[dev]'
	@touch $@

venv install: $(STAMP)

# One protoc command, shared with the drift test (tests/test_generated_drift.py): see infra/protogen.py.
protos: $(STAMP)
	$(PY) -m infra.protogen

run: $(STAMP)
	$(VENV)/bin/eventflow up

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Only the end-to-end tests: `eventflow up` driven by grpcurl (also part of `make test`).
test-e2e: $(STAMP)
	$(PY) -m pytest -m e2e tests/e2e $(PYTEST_ARGS)

# The scale tests that take many seconds each (50,000-seat maps), left out of `make test` to keep it short.
test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

soak: $(STAMP)
	EVENTFLOW_SOAK=1 $(PY) -m pytest -m soak tests/soak $(PYTEST_ARGS)

# Calls generated from the services' descriptors against `eventflow up` (tests/fuzz); `make test` runs 300 of them.
# FUZZ_CALLS=n for another number, FUZZ_SEED=n for another sequence, FUZZ_CONCURRENCY=n calls in flight.
FUZZ_CALLS ?= 10000
fuzz: $(STAMP)
	FUZZ_CALLS=$(FUZZ_CALLS) $(PY) -m pytest -m fuzz tests/fuzz -s $(PYTEST_ARGS)

# The chart needs matplotlib: a bench-only extra, installed here once (make test does not need it).
$(BENCH_STAMP): $(STAMP)
	$(QUIET_EDITABLE) $(PY) -m pip install --quiet -e ./clients/python -e '.[dev,bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(PY) -m tests.bench $(BENCH_ARGS)

# What docker-compose.yml needs before `docker compose up`: .env (passwords) and secrets/ (see README,
# Deployment with docker-compose). Existing values are kept, and distclean leaves them: MongoDB's users in the
# compose volume were made with these passwords.
compose-secrets: $(STAMP)
	$(VENV)/bin/eventflow compose-secrets

# checkov, the static security check of deploy/k8s and the Dockerfile (docs/deploy.md, Security): pinned, in a
# virtualenv of its own (a hundred packages, ~300 MB: too much for the dev extra and `make test`, which keeps
# its own assertions of the same rules in tests/test_k8s.py). The overlay is rendered with throwaway secrets.
CHECKOV_VENV  ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
CHECKOV       := $(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==3.3.30
	@touch $@

k8s-check: $(STAMP) $(CHECKOV_STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp -r deploy/k8s "$$tmp/k8s" && overlays="$$tmp/k8s/overlays" && \
	rm -rf "$$overlays/local/.env" "$$overlays/local/secrets" "$$overlays/local-tls/secrets" && \
	$(VENV)/bin/eventflow compose-secrets --dir "$$overlays/local" > /dev/null && \
	$(PY) -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(756)).decode())' > "$$overlays/local/secrets/mongo-keyfile" && \
	$(VENV)/bin/eventflow certs --dir "$$overlays/local-tls/secrets/certs" > /dev/null && \
	for overlay in local local-tls; do \
	  echo "== deploy/k8s/overlays/$$overlay" && \
	  $(VENV)/bin/kubectl kustomize "$$overlays/$$overlay" > "$$tmp/$$overlay.yaml" && \
	  $(CHECKOV) --framework kubernetes -f "$$tmp/$$overlay.yaml" || exit 1; \
	done && \
	echo "== Dockerfile" && $(CHECKOV) --framework dockerfile -f Dockerfile

clean:
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
	rm -rf .pytest_cache *.egg-info build clients/python/build

distclean: clean
	rm -rf $(VENV) $(CHECKOV_VENV) .data .bench
