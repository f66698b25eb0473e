import sys
from pathlib import Path

import pytest

from recsys.pytest_plugin import *  # noqa: F403  (installed plugins kept out, isolated cache, tiny_path)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # fake_models, crash_callback


@pytest.fixture
def fake_plugin():
    from fake_models import FakePlugin

    from recsys.plugins import load_plugins, pm

    load_plugins()
    pm.register(FakePlugin(), name="fake-plugin")
    try:
        yield
    finally:
        pm.unregister(name="fake-plugin")


@pytest.fixture
def tiny_data(tiny_path):
    from recsys.data.dataset import load_sequences

    return load_sequences(tiny_path)
