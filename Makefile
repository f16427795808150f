# The README's two commands: `make run` starts the service, `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,text]'
	touch $(STAMP)

install: $(STAMP)

## Start the API and one worker on 127.0.0.1:8000 (SQLite, ./data, filesystem broker by default).
run: $(STAMP)
	exec $(BIN)/pretrainer up

## Run the whole test suite (unit, API, and integration with real processes).
test: $(STAMP)
	$(BIN)/pytest -q

## Benchmarks, each printing a ratio against a bare baseline; not part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
