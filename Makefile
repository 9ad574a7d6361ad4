# make run: create .venv, install driftowner, start the demo daemon.
# make test: install what the tests need (pip into .venv; Debian packages when root), lint, test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := prometheus prometheus-alertmanager chromium postgresql systemd

.PHONY: run test lint pytest system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/driftowner demo

# Real parts for the integration tests. As root (CI, these machines) install them; otherwise
# name them, and the tests that need them skip with the reason (or fail under CI=true).
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "integration tests need Debian packages:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

pytest: $(STAMP) system-deps
	$(BIN)/pytest -q -rs

test: lint pytest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
