import os
import sys

import pytest


def pytest_configure(config):
    sys._called_from_test = True  # installed plugins never load implicitly during tests


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    os.environ["RECSYS_CACHE"] = str(tmp_path_factory.mktemp("recsys-cache"))


@pytest.fixture
def grounding_plugin():
    import recsys_grounding.plugin
    import recsys.testing

    with recsys.testing.registered(recsys_grounding.plugin, "recsys-grounding"):
        yield


@pytest.fixture(scope="module")
def tiny_data():
    """The packaged tiny dataset as a SeqDataModule (8 users, 15 items), set up."""
    import recsys
    import recsys.testing

    data = recsys.SeqDataModule(path=str(recsys.testing.tiny_dataset()), max_len=5, eval_batch_size=8)
    data.setup("fit")
    return data
