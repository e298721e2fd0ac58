# Two entry points (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint unit clean

# The runtime alone (what the demo and a deployment need); the test extras on top of it for `make test`.
$(BIN)/.runtime: pyproject.toml setup.py sidecar/core/_native.c  # pip install -e . builds the C extension
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed: pyproject.toml $(BIN)/.runtime
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/.installed

# Runtime dependencies only. Ctrl-C, or closing the terminal (SIGHUP), stops Keycloak and the sidecar.
demo: $(BIN)/.runtime
	$(BIN)/python -m sidecar.demo

# The whole suite: real Keycloak (fetched with mvn, cached in ~/.cache/sidecar-kc), Debian's chromium,
# moto's S3 server and versitygw (built with `go install`, cached in ~/.cache/sidecar-go/bin) on loopback.
# Nothing is skipped: a missing part fails the run.
test: setup lint
	$(BIN)/python -m sidecar.harness.keycloak fetch
	$(BIN)/python -m sidecar.harness.versitygw build
	$(BIN)/python -m sidecar.harness.witness build
	$(BIN)/pytest -q -p no:cacheprovider
	$(BIN)/python tests/individual_coverage.py

unit: setup
	$(BIN)/pytest -q -m "not keycloak and not browser and not slow"

lint: setup
	$(BIN)/ruff format --check sidecar tests
	$(BIN)/ruff check sidecar tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
