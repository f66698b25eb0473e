"""Test-suite set-up for recsys and its plugins.

In a plugin's ``tests/conftest.py``::

    from recsys.pytest_plugin import *  # noqa: F403

(or ``pytest -p recsys.pytest_plugin``). It gives every test session:

- installed recsys plugins stay out of the test process (the llm/datasette convention): the
  tests register their own plugin with ``recsys.testing.registered``, so nothing else installed
  can change the results;
- ``isolated_cache``: the recsys cache (converted backbones, text embeddings) is a fresh
  temporary folder, so tests never read or write the user's;
- ``tiny_path``: the packaged tiny dataset (8 users, 15 items).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["isolated_cache", "pytest_configure", "tiny_path"]


def pytest_configure(config) -> None:
    setattr(sys, "_called_from_test", True)  # read by recsys.plugins.load_plugins


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory) -> Iterator[Path]:
    """``RECSYS_CACHE`` points at a temporary folder for the whole session (restored after)."""
    old = os.environ.get("RECSYS_CACHE")
    os.environ["RECSYS_CACHE"] = str(tmp_path_factory.mktemp("recsys-cache"))
    yield Path(os.environ["RECSYS_CACHE"])
    if old is None:
        del os.environ["RECSYS_CACHE"]
    else:
        os.environ["RECSYS_CACHE"] = old


@pytest.fixture
def tiny_path() -> Path:
    """The packaged tiny dataset's folder (RecBole atomic files); read-only."""
    from recsys.testing import tiny_dataset

    return tiny_dataset()
