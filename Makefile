# Bootstraps .venv from python3 alone; every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL := WARNING

.PHONY: demo test test-fast lint bench install dev clean postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps record which pyproject the environment was built from.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(VENV)/.installed $(VENV)/.installed-dev $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/python -m candleflow demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict candleflow

# PostgreSQL's server binaries, for `candleflow server start --database postgres` and its tests
# (Debian's package; needs root to install when they are missing).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	{ echo "PostgreSQL's server is missing: install Debian's postgresql package" >&2; exit 1; }

# The flow tests again on the managed server over PostgreSQL, then the whole suite on two
# workers (each with its own Prefect server, ports and homes: the tests share nothing).
test: lint postgres
	CANDLEFLOW_TEST_DATABASE=postgres $(BIN)/python -m pytest -q \
	  tests/flows/test_load_flow.py tests/flows/test_backfill_flow.py
	$(BIN)/python -m pytest -q -n 2 --durations=25

# The fast tiers only: the core, backtests, IB pieces and tasks (no servers, no subprocess CLIs).
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow" tests/core tests/backtest tests/ib tests/tasks

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
