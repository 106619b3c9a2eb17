# Targets named in README.md. Everything runs from the project's own virtualenv (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GENVENV ?= /tmp/genvenv

.PHONY: setup test test-unit lint format check clean sample-logs layers screenshots

setup: $(BIN)/sidecar  ## create .venv and install the sidecar with its dev tools

$(BIN)/sidecar: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docker,kubernetes,postgres]'
	@touch $@

test: setup  ## run the whole test suite
	$(BIN)/python -m pytest

test-unit: setup  ## the fast in-process suite
	$(BIN)/python -m pytest tests/unit

layers: setup  ## print the package's import layers
	$(BIN)/python tests/unit/test_architecture.py

lint: setup  ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test  ## everything CI runs

# The generation environment is separate from .venv (the real frameworks, pinned). torch comes
# first: `torch==2.13.0` resolves to the CPU build on these machines. SUITES= names some suites.
sample-logs: setup  ## regenerate sample_logs/ with the real frameworks (about 15 minutes)
	$(PYTHON) -m venv $(GENVENV)
	$(GENVENV)/bin/python -m pip install torch==2.13.0
	$(GENVENV)/bin/python -m pip install -r sample_logs/requirements.txt
	$(GENVENV)/bin/python sample_logs/generate.py --sidecar $(abspath $(BIN)/sidecar) $(SUITES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

screenshots: setup  ## regenerate docs/images/live-page.png (headless Chromium against a live daemon)
	mkdir -p docs/images
	SIDECAR_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/integration/test_page.py
