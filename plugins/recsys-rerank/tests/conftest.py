import pytest

from recsys.pytest_plugin import *  # noqa: F403  (installed plugins kept out, isolated cache, tiny_path)


@pytest.fixture(scope="module")
def tiny_data():
    """The packaged tiny dataset as a SeqDataModule (8 users, 15 items), set up."""
    import recsys
    import recsys.testing

    data = recsys.SeqDataModule(path=str(recsys.testing.tiny_dataset()), max_len=5, eval_batch_size=8)
    data.setup("fit")
    return data
