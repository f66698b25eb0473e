"""The CTR protocol: pointwise samples, global-time split, AUC / LogLoss."""

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from recsys import (
    CTRBatch,
    CTRDataModule,
    CTRModule,
    DataFormatError,
    RecModule,
    load_ctr,
    write_dataset,
)


def _dataset(root, users=12, per_user=15, items=25, seed=0, with_user=True, drop=None):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, users + 1):
        chosen = rng.choice(np.arange(1, items + 1), size=per_user, replace=False)
        times = np.sort(rng.integers(0, 50, size=per_user))  # many ties, within and across users
        rows += [(str(u), str(i), float(rng.integers(1, 6)), float(t)) for i, t in zip(chosen, times)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    if drop:
        inter = inter.drop(columns=[drop])
    user = pd.DataFrame({"user_id": [str(u) for u in range(1, users + 1)],
                         "gender": ["M" if u % 2 else "F" for u in range(1, users + 1)],
                         "occupation": ["a", "b", "c"] * (users // 3)}) if with_user else None
    return write_dataset(root / "ctr", inter, None, user)


@pytest.fixture
def ctr_path(tmp_path):
    return _dataset(tmp_path)


def test_split_is_by_global_time_with_8_1_1_proportions(ctr_path):
    data = load_ctr(ctr_path)
    n = len(data.item)
    assert np.bincount(data.split_of).tolist() == [round(0.8 * n), round(0.9 * n) - round(0.8 * n), n - round(0.9 * n)]
    times = [data.timestamp[data.split_of == s] for s in range(3)]
    assert times[0].max() <= times[1].min() and times[1].max() <= times[2].min()
    # Within one timestamp shared by two splits, the order is (user, the user's own order).
    for stage, code in (("train", 0), ("val", 1), ("test", 2)):
        assert (data.split_of[data.samples[stage]] == code).all()
        assert (np.diff(data.timestamp[data.samples[stage]]) >= 0).all()  # samples in global time order


def test_the_interactions_file_is_read_once(ctr_path, monkeypatch):
    """The sequence loader hands its sorted rows (ratings, times) on: no second read, no re-sort."""
    import sys

    from recsys.data import atomic

    reads, real = [], atomic.read_atomic

    def counting(path):
        reads.append(Path(path).suffix)
        return real(path)

    for name, module in list(sys.modules.items()):  # wherever a loader imported it from
        if name.startswith("recsys.data") and getattr(module, "read_atomic", None) is real:
            monkeypatch.setattr(module, "read_atomic", counting)
    data = load_ctr(ctr_path)
    assert reads.count(".inter") == 1
    assert len(data.item) == len(data.rating) == len(data.timestamp) == 12 * 15


def test_samples_with_short_histories_are_dropped(ctr_path):
    data = load_ctr(ctr_path, min_history=5)
    kept = np.concatenate(list(data.samples.values()))
    assert (data.position[kept] >= 5).all()
    assert set(kept.tolist()) == set(np.flatnonzero(data.position >= 5).tolist())
    fewer = load_ctr(ctr_path, min_history=0)
    assert sum(len(s) for s in fewer.samples.values()) == len(fewer.item)


def test_labels_follow_the_threshold(ctr_path):
    for threshold in (4.0, 3.0):
        data = load_ctr(ctr_path, threshold=threshold)
        assert np.array_equal(data.label, (data.rating >= threshold).astype(np.float32))


def test_histories_hold_only_earlier_interactions(ctr_path):
    dm = CTRDataModule(path=str(ctr_path), max_len=8, batch_size=1000)
    data = dm.data
    raw = pd.read_csv(ctr_path / "ctr.inter", sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            assert isinstance(batch, CTRBatch)
            for row in range(len(batch.label)):
                sample = int(batch.sample[row])
                user, pos = int(batch.user[row]), int(data.position[sample])
                start = data.offsets[user]
                expected = data.item[start:start + pos][-8:]  # the last 8 earlier ones
                real = batch.history[row][batch.history_mask[row]].numpy()
                assert np.array_equal(real, expected)
                assert (data.timestamp[start:start + pos] <= data.timestamp[sample]).all()
                assert batch.history_rating[row][batch.history_mask[row]].tolist() == \
                    data.rating[start:start + pos][-8:].tolist()
                assert (batch.history[row][~batch.history_mask[row]] == 0).all()
                assert float(batch.label[row]) == float(data.rating[sample] >= 4)
                # the raw file agrees on user, item and rating
                raw_row = raw[(raw.user_id == int(data.users.token(user))) &
                              (raw.item_id == int(data.items.token(int(batch.item[row]))))]
                assert float(raw_row.rating.iloc[0]) == float(data.rating[sample])


def test_user_fields_are_coded_per_field(ctr_path):
    data = load_ctr(ctr_path)
    assert data.field_names == ["gender", "occupation"]
    assert data.field_sizes == [3, 4]  # values + the 0 = missing row
    assert (data.field_codes[0] == 0).all()  # PAD user


def test_seeded_evaluation_samples_do_not_depend_on_the_training_sample(ctr_path):
    a = CTRDataModule(path=str(ctr_path), train_samples=10, val_samples=5, test_samples=6, sample_seed=3)
    b = CTRDataModule(path=str(ctr_path), train_samples=20, val_samples=5, test_samples=6, sample_seed=3)
    assert len(a.samples("train")) == 10 and len(b.samples("train")) == 20
    assert np.array_equal(a.samples("val"), b.samples("val")) and np.array_equal(a.samples("test"), b.samples("test"))
    assert set(a.samples("train")) <= set(a.data.samples["train"])


@pytest.mark.parametrize("missing", ["rating", "timestamp"])
def test_missing_rating_or_timestamp_is_a_clear_error(tmp_path, missing):
    path = _dataset(tmp_path, drop=missing)
    with pytest.raises(DataFormatError, match=missing):
        load_ctr(path)


def test_unknown_user_field_is_a_clear_error(ctr_path):
    with pytest.raises(DataFormatError, match="zip"):
        load_ctr(ctr_path, user_fields=["zip"])


def test_bad_split_is_a_clear_error(ctr_path):
    with pytest.raises(ValueError, match="split"):
        load_ctr(ctr_path, split=(0.8, 0.1, 0.2))


class _Fixed(CTRModule):
    """Logit = a fixed value per sample id (to check the metrics by hand)."""

    def __init__(self, num_items: int = 1, table: dict | None = None):
        super().__init__(num_items)
        self.table = table or {}
        self.w = torch.nn.Parameter(torch.zeros(()))

    def logits(self, batch):
        return torch.tensor([self.table[int(s)] for s in batch.sample]) + 0 * self.w


def _batch(samples, labels):
    b = len(samples)
    z = torch.zeros(b, 1, dtype=torch.long)
    return CTRBatch(torch.ones(b, dtype=torch.long), torch.ones(b, dtype=torch.long), z, z.float(), z.float(),
                    z.bool(), torch.tensor(labels, dtype=torch.float), torch.zeros(b, 0, dtype=torch.long),
                    torch.tensor(samples))


def test_auc_and_logloss_match_a_hand_computation():
    logits = {0: 2.0, 1: -1.0, 2: 0.5, 3: 0.5, 4: -2.0, 5: 1.0, 6: 0.5}
    labels = [1, 0, 1, 0, 0, 1, 1]
    probs = {k: 1 / (1 + math.exp(-v)) for k, v in logits.items()}
    pos = [probs[i] for i, y in enumerate(labels) if y]
    neg = [probs[i] for i, y in enumerate(labels) if not y]
    auc = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (len(pos) * len(neg))
    logloss = -sum(math.log(probs[i]) if y else math.log(1 - probs[i]) for i, y in enumerate(labels)) / len(labels)
    # Split over batches of unequal size: the epoch values must still be the exact ones.
    batches = [_batch([0, 1, 2], labels[:3]), _batch([3, 4, 5, 6], labels[3:])]
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    model = _Fixed(table=logits)
    val = trainer.validate(model, dataloaders=DataLoader(batches, batch_size=None), verbose=False)[0]
    test = trainer.test(model, dataloaders=DataLoader(batches, batch_size=None), verbose=False)[0]
    for out, stage in ((val, "val"), (test, "test")):
        assert out[f"{stage}/auc"] == pytest.approx(auc, abs=1e-6)
        assert out[f"{stage}/logloss"] == pytest.approx(logloss, abs=1e-6)


def test_ctr_models_declare_the_metrics_the_cli_monitor_check_reads():
    # RecsysCLI.before_fit compares each callback's monitor with logged_metrics(), so a CTR
    # config that keeps the default val/ndcg@10 monitor fails before training, naming val/auc.
    assert _Fixed().logged_metrics("val") == {"val/auc", "val/logloss"}
    assert _Fixed().logged_metrics("train") == {"train/loss"}


def test_cli_defaults_select_ctr_checkpoints_on_the_models_own_monitor(ctr_path, tmp_path, fake_plugin):
    # No callbacks block: the CLI's default ModelCheckpoint/EarlyStopping follow CTRModule.monitor.
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from recsys.lightning_cli import run_cli

    cli = run_cli(["fit", "--model=ItemBiasCTR", "--data=CTRDataModule", f"--data.path={ctr_path}",
                   "--data.min_history=2", "--trainer.max_epochs=2", "--trainer.accelerator=cpu",
                   "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'run'}",
                   "--test_after_fit=false"])
    monitors = {type(c).__name__: (c.monitor, c.mode) for c in cli.trainer.callbacks
                if isinstance(c, (ModelCheckpoint, EarlyStopping)) and c.monitor}  # not the last.ckpt writer
    assert monitors == {"ModelCheckpoint": ("val/auc", "max"), "EarlyStopping": ("val/auc", "max")}
    import yaml

    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())  # what the run used
    assert {c["init_args"]["monitor"] for c in saved["trainer"]["callbacks"]} == {"val/auc", None}  # None: last.ckpt
    assert cli.trainer.checkpoint_callback.best_model_score is not None  # val/auc was logged and monitored


def test_an_explicit_monitor_is_kept_and_checked(ctr_path, tmp_path, fake_plugin):
    from recsys.lightning_cli import ConfigError, run_cli

    with pytest.raises(ConfigError, match="val/hit@10"):
        run_cli(["fit", "--model=ItemBiasCTR", "--data=CTRDataModule", f"--data.path={ctr_path}",
                 "--data.min_history=2", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
                 f"--trainer.default_root_dir={tmp_path / 'run'}",
                 "--trainer.callbacks=lightning.pytorch.callbacks.EarlyStopping",
                 "--trainer.callbacks.monitor=val/hit@10"])


def test_predict_writes_each_samples_click_probability(ctr_path, tmp_path, fake_plugin):
    from recsys.lightning_cli import run_cli

    common = ["--model=ItemBiasCTR", "--data=CTRDataModule", f"--data.path={ctr_path}", "--data.min_history=2",
              "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]
    run_cli(["fit", *common, "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path / 'run'}",
             "--test_after_fit=false"])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    out = tmp_path / "probs.csv"
    cli = run_cli(["predict", *common, f"--ckpt_path={ckpt}", f"--predictions.path={out}",
                   f"--trainer.default_root_dir={tmp_path / 'predict'}"])
    table = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    data = cli.datamodule.data
    test = data.samples["test"]
    assert list(table.columns) == ["user_id", "item_id", "prob"]
    assert len(table) == len(test)
    # ItemBiasCTR's logit is one number per item: each sample's probability is the logistic of
    # its item's bias in the checkpoint predict read, computed here by hand
    bias = RecModule.load_from_checkpoint(ckpt).bias.weight.detach().squeeze(-1).tolist()
    expected = {}
    for i in test:
        user = data.users.token(int(np.searchsorted(data.offsets, i, side="right") - 1))
        item = int(data.item[i])
        expected[(user, data.items.token(item))] = 1 / (1 + math.exp(-bias[item]))
    assert len(expected) == len(test)  # one sample per (user, item): a row names its sample
    got = {(u, i): p for u, i, p in zip(table["user_id"], table["item_id"], table["prob"])}
    assert got.keys() == expected.keys()
    for key, prob in expected.items():
        assert got[key] == pytest.approx(prob, abs=1e-6), key
    assert len({round(p, 4) for p in expected.values()}) > 1  # items differ: a row given another's value shows


def test_print_config_shows_the_monitor_the_run_will_use(ctr_path, capsys, fake_plugin):
    import yaml

    from recsys.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--model=ItemBiasCTR", "--data=CTRDataModule", f"--data.path={ctr_path}", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert [(c["init_args"]["monitor"], c["init_args"]["mode"]) for c in config["trainer"]["callbacks"]] == \
        [("val/auc", "max"), (None, "min"), ("val/auc", "max")]  # (None, "min"): the last.ckpt writer
