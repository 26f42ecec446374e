# EventFlow: `make run` serves the whole system, `make test` runs the whole test suite.
# Both set up everything they need first (virtualenv, install), from nothing but Python 3.11+ and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PROTOS := $(shell find protos -name '*.proto')
PYTEST_ARGS ?=

.PHONY: help venv install protos run test test-e2e test-all soak bench clean distclean

help:
	@echo "make run       set up and run the whole system (usuarios, eventos, reservas, MongoDB, Redis)"
	@echo "make test      set up and run the test suite"
	@echo "make protos    regenerate generated/ from protos/"
	@echo "make soak      long concurrency and crash runs (not part of make test)"
	@echo "make bench     benchmarks that print figures"
	@echo "make clean     remove caches; make distclean also removes .venv and .data"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "EventFlow needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv install: $(STAMP)

# grpcio-tools writes imports from the proto path: protos/eventflow/x/v1/x.proto becomes the
# module eventflow.x.v1.x_pb2, found in generated/ (mapped as the eventflow package in pyproject.toml).
protos: $(STAMP)
	rm -rf generated/eventflow
	$(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=generated --grpc_python_out=generated \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--mypy_out=generated --mypy_grpc_out=generated $(PROTOS)
	find generated/eventflow -type d -exec touch {}/__init__.py \;

run: $(STAMP)
	$(VENV)/bin/eventflow up

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

soak: $(STAMP)
	EVENTFLOW_SOAK=1 $(PY) -m pytest -m soak tests/soak $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m tests.bench

clean:
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
	rm -rf .pytest_cache *.egg-info build

distclean: clean
	rm -rf $(VENV) .data
