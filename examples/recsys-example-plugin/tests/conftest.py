import sys
from pathlib import Path

# The package is importable without installing it (the engine's test suite runs these tests too).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pytest_configure(config):
    # Installed recsys plugins do not load inside the tests (the tests register this one
    # themselves), so whatever else is installed cannot change the results.
    sys._called_from_test = True
