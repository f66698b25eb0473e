import sys
from pathlib import Path

# Installed recsys plugins stay out of the tests (they register this one themselves), so
# whatever else is installed cannot change the results; the recsys cache is a temporary folder.
from recsys.pytest_plugin import *  # noqa: F403

# The package is importable without installing it (the engine's test suite runs these tests too).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
