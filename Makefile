# One entry point for a new clone: `make demo` and `make test` set up .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit protos bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m authz.demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff format --check authz tests protos bench
	$(BIN)/ruff check authz tests protos bench

typecheck: $(STAMP)
	$(BIN)/mypy authz

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	GRPC_VERBOSITY=ERROR $(BIN)/python bench/decide.py
	GRPC_VERBOSITY=ERROR $(BIN)/python bench/keys.py

protos: $(STAMP)
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
