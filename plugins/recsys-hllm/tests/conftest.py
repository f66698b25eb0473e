import os
import sys
from pathlib import Path

import pytest

TINY = Path(__file__).resolve().parents[3] / "data" / "tiny"  # the engine repository's tiny dataset


def pytest_configure(config):
    sys._called_from_test = True  # installed plugins never load implicitly during tests


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    os.environ["RECSYS_CACHE"] = str(tmp_path_factory.mktemp("recsys-cache"))


@pytest.fixture
def hllm_plugin():
    from recsys.plugins import load_plugins, pm

    import recsys_hllm.plugin

    load_plugins()
    pm.register(recsys_hllm.plugin, name="recsys-hllm")
    try:
        yield
    finally:
        pm.unregister(name="recsys-hllm")


@pytest.fixture
def tiny_path():
    return TINY
