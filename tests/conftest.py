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
def first_party_plugins():
    """The repository's own plugins (plugins/*), registered as their entry points would be:
    configs under configs/ name their models by short name."""
    from importlib.metadata import entry_points

    from recsys.plugins import load_plugins, pm

    load_plugins()
    ours = {path.name for path in (ROOT / "plugins").iterdir() if (path / "pyproject.toml").is_file()}
    added = []
    for ep in entry_points(group="recsys"):
        if ep.dist is not None and ep.dist.name in ours and not pm.has_plugin(ep.dist.name):
            pm.register(ep.load(), name=ep.dist.name)
            added.append(ep.dist.name)
    from recsys.plugins import get_models

    get_models()  # imports the registered classes, as loading installed plugins does
    try:
        yield
    finally:
        for name in added:
            pm.unregister(name=name)


@pytest.fixture
def tiny_data(tiny_path):
    from recsys.data.dataset import load_sequences

    return load_sequences(tiny_path)
