# make run   set up .venv and train SASRec on MovieLens-100k (prints validation and test metrics)
# make test  set up .venv and run the default test suite (one worker per core; docs/results.md, "The test suite")
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

# One pytest worker per core (pytest-xdist), a test file's tests on one worker (its module fixtures
# built once), one torch thread per worker: two workers with two threads each on two cores were
# 1.2x slower in wall-clock and burnt 1.3x the CPU (docs/results.md, "The test suite").
PYTEST = OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -q -n auto --dist loadfile

test: lint
	$(PYTEST) --durations=25 -m "not slow" $(TESTS)

test-all: lint
	$(PYTEST) $(TESTS)
