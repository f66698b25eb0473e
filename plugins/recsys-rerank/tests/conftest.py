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


@pytest.fixture(scope="session")
def retriever(tmp_path_factory):
    """A SASRec trained for two epochs on the tiny data: its best checkpoint."""
    import recsys.testing

    root = tmp_path_factory.mktemp("sasrec")
    cli = recsys.testing.run_cli(["fit", "--model=SASRec", "--model.max_len=5", "--model.d_model=8",
                                  "--model.ffn_dim=16", "--data=SeqDataModule", f"--data.path={recsys.testing.tiny_dataset()}",
                                  "--data.max_len=5", "--trainer.max_epochs=2", f"--trainer.default_root_dir={root}",
                                  "--trainer.enable_progress_bar=false", "--test_after_fit=false"])
    return cli.trainer.checkpoint_callback.best_model_path
