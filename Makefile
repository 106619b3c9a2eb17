# Targets named in README.md. Everything runs from the project's own virtualenv (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint format check clean

setup: $(BIN)/sidecar  ## create .venv and install the sidecar with its dev tools

$(BIN)/sidecar: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docker,kubernetes,postgres]'
	@touch $@

test: setup  ## run the whole test suite
	$(BIN)/python -m pytest

lint: setup  ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test  ## everything CI runs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
