"""``SeqDataModule(cold_items=...)``: items held out of training, flagged and scored at evaluation."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.data.dataset import load_sequences
from recsys.data.datamodule import SeqDataModule
from recsys.data.sequences import sample_cold_items
from recsys.lightning_cli import run_cli
from test_sequences import naive_augmentation


def test_default_changes_nothing(tiny_path):
    module = SeqDataModule(str(tiny_path), max_len=3, train_windows="every")
    data = module.data
    assert data.training is data.split and module.cold_item_ids.tolist() == []
    windows = module.train_dataloader().dataset
    batch = windows.__getitems__(range(len(windows)))
    lazy = sorted(zip(batch.user.tolist(), map(tuple, batch.history.tolist()), batch.target.tolist()))
    assert lazy == naive_augmentation(data.sequences, data.split, 3)
    assert batch.cold is None
    for loader in (module.val_dataloader(), module.test_dataloader()):
        assert all(b.cold is None for b in loader)
    assert data.catalog.popularity.tolist() == load_sequences(tiny_path).catalog.popularity.tolist()


@pytest.mark.parametrize("mode", ["every", "tiled"])
def test_no_cold_item_in_any_training_window(tiny_path, mode):
    module = SeqDataModule(str(tiny_path), max_len=3, batch_size=4, train_windows=mode, cold_items=0.3)
    cold = set(module.cold_item_ids.tolist())
    assert len(cold) == 4  # round(0.3 * 15)
    targets = []
    for batch in module.train_dataloader():  # a whole epoch
        assert not cold & set(batch.history.flatten().tolist())
        assert not cold & set(batch.target.tolist())
        if batch.labels is not None:
            assert not cold & set(batch.labels.flatten().tolist())
            targets += [(u, t) for u, row in zip(batch.user.tolist(), batch.labels.tolist()) for t in row if t]
        else:
            targets += list(zip(batch.user.tolist(), batch.target.tolist()))
    # Every warm training interaction but each user's first is still a target, once.
    data = module.data
    expected = []
    for user in range(1, data.sequences.num_users + 1):
        warm = [i for i in data.sequences.of(user)[: data.split.train_length[user]].tolist() if i not in cold]
        expected += [(user, item) for item in warm[1:]]
    assert sorted(targets) == sorted(expected)


def test_cold_items_have_no_training_popularity(tiny_path):
    cold = load_sequences(tiny_path, cold_items=0.3)
    warm = load_sequences(tiny_path)
    assert (cold.catalog.popularity[cold.cold_item_ids] == 0).all()
    keep = np.setdiff1d(np.arange(len(warm.items) + 1), cold.cold_item_ids)
    assert cold.catalog.popularity[keep].tolist() == warm.catalog.popularity[keep].tolist()
    assert len(cold.catalog) == len(warm.catalog) == 15  # the catalog keeps every item


@pytest.mark.parametrize("stage", ["val", "test"])
def test_evaluation_flags_exactly_the_cold_targets(tiny_path, stage):
    module = SeqDataModule(str(tiny_path), max_len=3, eval_batch_size=3, cold_items=0.3)
    plain = SeqDataModule(str(tiny_path), max_len=3, eval_batch_size=3)
    loader, plain_loader = getattr(module, f"{stage}_dataloader")(), getattr(plain, f"{stage}_dataloader")()
    flags = []
    for batch, same in zip(loader, plain_loader):
        assert batch.cold.dtype == torch.bool and batch.cold.shape == batch.target.shape
        assert batch.cold.tolist() == [t in set(module.cold_item_ids.tolist()) for t in batch.target.tolist()]
        # Targets, histories and masks are those of the plain split (cold items stay in them).
        for field in ("history", "target", "user", "seen"):
            assert torch.equal(getattr(batch, field), getattr(same, field))
        flags += batch.cold.tolist()
    assert any(flags) and not all(flags)  # seed 0 makes some targets cold on the tiny data


def test_fit_and_test_log_cold_target_metrics(tiny_path, tmp_path, capsys):
    cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", f"--data.path={tiny_path}", "--data.max_len=5",
                   "--data.cold_items=0.3", "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
                   "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    metrics = cli.trainer.callback_metrics  # the last stage's: test
    out = capsys.readouterr().out
    assert re.search(r"^val/cold/hit +\S+ +\S+", out, re.MULTILINE), out  # the validation rows, printed before
    saved = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())["metrics"]
    assert "val/cold/hit@10" in saved and "test/cold/hit@10" in saved
    batch = next(iter(cli.datamodule.test_dataloader()))  # the 8 users fit in one batch
    ranks = cli.model.rank(batch)
    assert batch.cold.any()
    assert metrics["test/cold/hit@10"] == pytest.approx((ranks[batch.cold] <= 10).float().mean().item())
    assert metrics["test/hit@10"] == pytest.approx((ranks <= 10).float().mean().item())


def test_the_seed_decides_the_cold_set(tiny_path):
    first = SeqDataModule(str(tiny_path), cold_items=0.3, cold_seed=0).cold_item_ids
    again = SeqDataModule(str(tiny_path), cold_items=0.3, cold_seed=0).cold_item_ids
    other = SeqDataModule(str(tiny_path), cold_items=0.3, cold_seed=1).cold_item_ids
    assert first.dtype == np.int64 and first.tolist() == sorted(first.tolist())
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()
    assert 0 not in first and first.max() <= 15
    assert sample_cold_items(15, 0.0).tolist() == []
    assert len(sample_cold_items(15, 0.99)) == 14  # at least one item stays trainable


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_fractions_are_refused(tiny_path, fraction):
    with pytest.raises(ValueError, match=r"data\.cold_items must be a fraction in \[0, 1\)"):
        SeqDataModule(str(tiny_path), cold_items=fraction)
    with pytest.raises(ValueError, match=r"cold_items must be a fraction in \[0, 1\)"):
        load_sequences(tiny_path, cold_items=fraction)
