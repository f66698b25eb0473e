import pytest

from recsys.pytest_plugin import *  # noqa: F403  (installed plugins kept out, isolated cache, tiny_path)


@pytest.fixture
def hllm_plugin():
    import recsys_hllm.plugin
    import recsys.testing

    with recsys.testing.registered(recsys_hllm.plugin, "recsys-hllm"):
        yield
