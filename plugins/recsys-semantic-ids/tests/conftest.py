import pytest
import torch

from recsys.pytest_plugin import *  # noqa: F403  (installed plugins kept out, isolated cache, tiny_path)


@pytest.fixture
def semantic_ids_plugin():
    import recsys.testing
    import recsys_semantic_ids.plugin

    with recsys.testing.registered(recsys_semantic_ids.plugin, "recsys-semantic-ids"):
        yield


@pytest.fixture(scope="session")
def tiny_data():
    import recsys.testing

    return recsys.testing.tiny_dataset()


@pytest.fixture(scope="session")
def codes_file(tmp_path_factory, tiny_data):
    """Codes of the tiny dataset's 15 items: 3 levels of sizes (3, 3, 2), distinct, seeded."""
    from recsys_semantic_ids.codes import CodeTable, random_codes

    import recsys

    item_ids = list(recsys.SeqDataModule(str(tiny_data)).catalog.vocab.tokens[1:])
    table = CodeTable(item_ids, random_codes(len(item_ids), [3, 3, 2], seed=0), [3, 3, 2], {"method": "test"})
    return str(table.write(tmp_path_factory.mktemp("codes") / "codes.json"))


@pytest.fixture
def seeded():
    torch.manual_seed(0)
