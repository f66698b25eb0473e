# make run   set up .venv and train SASRec on MovieLens-100k (prints validation and test metrics)
# make test  set up .venv and run the default test suite (under 10 minutes on 2 CPU cores)
VENV ?= .venv
TESTS = tests $(wildcard plugins/*/tests) $(wildcard examples/*/tests)

.PHONY: setup run test test-all

setup:
	VENV=$(VENV) ./scripts/setup.sh

# The default run needs only the engine and MovieLens-100k: a lighter set-up (SETUP=run) unless
# .venv is already complete.
run:
	VENV=$(VENV) SETUP=run ./scripts/setup.sh
	$(VENV)/bin/recsys fit --config configs/ml-100k/sasrec.yaml

.PHONY: lint
lint: setup
	$(VENV)/bin/ruff check recsys tests plugins examples benchmarks scripts
	$(VENV)/bin/mypy  # what it checks: [tool.mypy] in pyproject.toml

test: lint
	$(VENV)/bin/python -m pytest -q --durations=25 -m "not slow" $(TESTS)

test-all: lint
	$(VENV)/bin/python -m pytest -q $(TESTS)
