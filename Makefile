# The README's commands: `make run` starts the service, `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: running needs the service and the text extra; tests and benches also need dev.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEMO ?= demo

.PHONY: run test lint bench demo-data install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[text]'
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,text]'
	touch $(DEV_STAMP)

install: $(STAMP)

## Start the API and one worker on 127.0.0.1:8000 (SQLite, ./data, filesystem broker by default).
run: $(STAMP)
	exec $(BIN)/pretrainer up

## Write the README's example files (blobs.csv, queries.csv, digits.zip, seven.png, …) to ./demo.
demo-data: $(STAMP)
	$(BIN)/python -m app.demo $(DEMO)

## Run the whole test suite (unit, API, and integration with real processes).
test: $(DEV_STAMP)
	$(BIN)/pytest -q

## Lint and type-check (ruff's rules and mypy's settings are in pyproject.toml).
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## Benchmarks, each printing a ratio against a bare baseline; not part of `make test`.
bench: $(DEV_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
