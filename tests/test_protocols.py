"""The evaluation protocols: ``global_time`` (BIGRec's) against a direct re-statement of it, the
sampled evaluation windows, and counting every window once when ranks repeat windows."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data.atomic import DataFormatError, write_dataset
from recsys.data.datamodule import SeqDataModule
from recsys.data.dataset import load_sequences
from recsys.data.sequences import GlobalTime, SampledWindows, Windows


@pytest.fixture
def timed(tmp_path):
    """40 users with random timestamps, many of them tied, in a shuffled file order."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(1, 41):
        for item in rng.choice(np.arange(1, 61), size=rng.integers(2, 12), replace=False):
            rows.append((str(user), str(item), float(rng.integers(0, 25))))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).sample(frac=1, random_state=0)
    write_dataset(tmp_path / "timed", inter.reset_index(drop=True))
    return tmp_path / "timed", inter.reset_index(drop=True)


def naive_global_time(inter: pd.DataFrame):
    """(period, user, history tuple, target) of every window, straight from the definition: order
    all rows by time (ties: file order), cut 8:1:1, each row with an earlier row of its user is a
    target of its period with every earlier row of that user as history."""
    ordered = inter.assign(row=range(len(inter))).sort_values(["timestamp", "row"], kind="stable")
    n = len(ordered)
    cuts = np.round(np.cumsum([0.8, 0.1]) * n)
    ordered["period"] = np.searchsorted(cuts, np.arange(n), side="right")
    windows = []
    for user, rows in ordered.groupby("user_id", sort=False):
        items = rows["item_id"].tolist()
        for position in range(1, len(items)):
            windows.append((int(rows["period"].iloc[position]), user, tuple(items[:position]), items[position]))
    return sorted(windows)


def windows_as_tuples(data, windows: Windows, period: int):
    batch = windows.__getitems__(range(len(windows)))
    out = []
    for user, history, target in zip(batch.user.tolist(), batch.history.tolist(), batch.target.tolist()):
        out.append((period, data.users.token(user), tuple(data.items.token(i) for i in history if i), data.items.token(target)))
    return out


def test_global_time_matches_its_definition(timed):
    path, inter = timed
    data = load_sequences(path, protocol="global_time")
    assert isinstance(data.split, GlobalTime)
    ours = windows_as_tuples(data, Windows.for_training(data.split, max_len=100), 0)
    for period, stage in ((1, "val"), (2, "test")):
        ours += windows_as_tuples(data, Windows.for_evaluation(data.split, stage, 100, mask_history=False), period)
    assert sorted(ours) == naive_global_time(inter)
    periods = np.bincount(data.split.period, minlength=3)
    assert periods.tolist() == [round(0.8 * len(inter)), round(0.9 * len(inter)) - round(0.8 * len(inter)),
                                len(inter) - round(0.9 * len(inter))]


def test_global_time_data_module_defaults_and_sampling(timed):
    path, _ = timed
    dm = SeqDataModule(path=str(path), protocol="global_time", max_len=5, eval_batch_size=1000)
    assert dm.mask_history is False  # BIGRec does not mask the history
    assert SeqDataModule(path=str(path)).mask_history is True  # loo: HLLM's masking
    dm.setup("test")
    every = next(iter(dm.test_dataloader()))
    sampled_dm = SeqDataModule(path=str(path), protocol="global_time", max_len=5, eval_batch_size=1000,
                               eval_sample=5, eval_sample_seed=1)
    sampled = next(iter(sampled_dm.test_dataloader()))
    assert len(sampled.target) == 5 and sampled.seen is None
    assert len(set(sampled.index.tolist())) == 5
    position = {index: row for row, index in enumerate(every.index.tolist())}
    rows = [position[i] for i in sampled.index.tolist()]  # a sample of the same windows
    assert sampled.target.tolist() == every.target[rows].tolist()
    again = next(iter(SeqDataModule(path=str(path), protocol="global_time", eval_sample=5, eval_sample_seed=1).test_dataloader()))
    assert again.index.tolist() == sampled.index.tolist()


def test_protocol_errors_name_the_field(tmp_path, timed):
    path, inter = timed
    with pytest.raises(ValueError, match="data.protocol 'random' is not supported"):
        SeqDataModule(path=str(path), protocol="random")
    with pytest.raises(ValueError, match="data.eval_sample"):
        SeqDataModule(path=str(path), eval_sample=0)
    write_dataset(tmp_path / "untimed", inter.drop(columns="timestamp"))
    with pytest.raises(DataFormatError, match="global_time protocol needs a 'timestamp' field"):
        load_sequences(tmp_path / "untimed", protocol="global_time")


def test_sampled_windows_reject_empty_sample(tiny_data):
    windows = Windows.for_evaluation(tiny_data.split, "test", 4, mask_history=True)
    with pytest.raises(ValueError, match="sample size"):
        SampledWindows(windows, 0)


def test_repeated_windows_count_once(tiny_path):
    """A distributed sampler pads ranks by repeating windows; the epoch's metrics must not
    count a repeat twice (here one process sees the same batch twice)."""
    from recsys.models.pop import Pop

    dm = SeqDataModule(path=str(tiny_path), max_len=4, eval_batch_size=3)
    dm.setup("test")
    model = Pop(num_items=dm.num_items)
    model.popularity.copy_(torch.as_tensor(dm.catalog.popularity, dtype=torch.float))
    batches = list(dm.test_dataloader())
    for batch in batches:
        model._evaluate(batch, "test")
    once = model._gathered("test")
    for batch in batches + batches[:1]:
        model._evaluate(batch, "test")
    repeated = model._gathered("test")
    assert len(once) == len(dm.data.split.evaluated)
    assert torch.equal(repeated, once)
