"""Protocols are a kind (``recsys.data.protocols``): the built-ins by name, a third party's
without registration (an instance, a subclass, or a LightningCLI ``class_path``), and the
shared data-module plumbing (``RecDataModule.load_data``/``data``/``loader``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data.atomic import DataFormatError, write_dataset
from recsys.data.datamodule import RecDataModule, SeqDataModule
from recsys.data.dataset import load_sequences
from recsys.data.protocols import (
    PROTOCOLS, EvaluationProtocol, GlobalTimeProtocol, LeaveOneOutProtocol, resolve_protocol,
)
from recsys.data.sequences import EpochShuffle, LeaveOneOut, Sequences, Split


@dataclass(frozen=True)
class LongHistoriesSplit(Split):
    """Leave-one-out, but only users with at least ``min_length`` items are evaluated."""

    sequences: Sequences
    min_length: int = 3
    name: str = "long_loo"

    @property
    def train_length(self) -> np.ndarray:
        lengths = self.sequences.lengths
        return np.where(lengths >= self.min_length, lengths - 2, lengths)

    def evaluation(self, stage):
        lengths = self.sequences.lengths
        users = np.flatnonzero(lengths >= self.min_length)
        users = users[users > 0]
        return users, lengths[users] - (2 if stage == "val" else 1), np.ones_like(users)


class LongHistoriesOut(EvaluationProtocol):
    """A third party's protocol, defined here and never registered anywhere."""

    name = "long_loo"
    default_mask_history = False

    def __init__(self, min_length: int = 3):
        self.min_length = min_length

    def split(self, sequences, interactions, tie_break, path):
        assert len(interactions) == len(sequences.items)  # the loader's rows, in sequence order
        assert np.array_equal(interactions["item_id"].to_numpy(), sequences.items)
        return LongHistoriesSplit(sequences, self.min_length)

    def explain_empty(self, sequences):
        return f"no user has {self.min_length} interactions; long_loo needs them"


def test_the_table_names_the_built_ins():
    assert PROTOCOLS == {"loo": LeaveOneOutProtocol, "global_time": GlobalTimeProtocol}
    assert isinstance(resolve_protocol("loo"), LeaveOneOutProtocol)
    assert isinstance(resolve_protocol(GlobalTimeProtocol), GlobalTimeProtocol)
    with pytest.raises(ValueError, match="data.protocol 'random' is not supported; available: \\['loo', 'global_time'\\]"):
        resolve_protocol("random")
    with pytest.raises(ValueError, match="needs a name"):
        resolve_protocol(EvaluationProtocol())


def test_built_in_names_and_defaults_are_unchanged(tiny_path):
    for name, masked in (("loo", True), ("global_time", False)):
        dm = SeqDataModule(path=str(tiny_path), protocol=name)
        assert dm.protocol == name and dm.hparams.protocol == name and dm.mask_history is masked
        assert dm.data.split.name == name


@pytest.mark.parametrize("given", [LongHistoriesOut(), LongHistoriesOut], ids=["instance", "subclass"])
def test_a_protocol_without_registration(tiny_path, given):
    dm = SeqDataModule(path=str(tiny_path), protocol=given, max_len=4)
    assert dm.protocol == "long_loo" and dm.mask_history is False  # the protocol's own default
    dm.setup("test")
    assert isinstance(dm.data.split, LongHistoriesSplit)
    loo = SeqDataModule(path=str(tiny_path), protocol="loo", max_len=4, mask_history=False)
    ours, theirs = next(iter(dm.test_dataloader())), next(iter(loo.test_dataloader()))
    assert torch.equal(ours.target, theirs.target) and torch.equal(ours.history, theirs.history)


def test_a_protocol_explains_its_own_empty_split(tiny_path):
    dm = SeqDataModule(path=str(tiny_path), protocol=LongHistoriesOut(min_length=1000))
    with pytest.raises(DataFormatError, match="no user has 1000 interactions; long_loo needs them"):
        dm.setup("fit")


def test_a_protocol_by_class_path_in_a_config(tiny_path, tmp_path):
    from recsys.lightning_cli import run_cli

    config = tmp_path / "config.yaml"
    config.write_text(
        "data:\n  class_path: recsys.SeqDataModule\n  init_args:\n"
        f"    path: {tiny_path}\n    max_len: 4\n"
        "    protocol:\n      class_path: test_data_protocols.LongHistoriesOut\n      init_args:\n        min_length: 5\n")
    cli = run_cli(["--model=Pop", f"--config={config}", f"--trainer.default_root_dir={tmp_path}"], run=False)
    protocol = cli.datamodule.evaluation_protocol
    assert type(protocol).__name__ == "LongHistoriesOut" and protocol.min_length == 5
    assert cli.datamodule.protocol == "long_loo"


def test_built_in_protocol_by_name_on_the_command_line(tiny_path, tmp_path):
    from recsys.lightning_cli import run_cli

    cli = run_cli(["--model=Pop", "--data=SeqDataModule", f"--data.path={tiny_path}", "--data.protocol=global_time",
                   f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.datamodule.protocol == "global_time" and isinstance(cli.datamodule.evaluation_protocol, GlobalTimeProtocol)


def test_loaded_interactions_are_the_sequences_rows(tmp_path):
    inter = pd.DataFrame({"user_id": ["b", "a", "b", "a", "a"], "item_id": ["x", "y", "y", "x", "z"],
                          "rating": [5.0, 3.0, 4.0, 1.0, 2.0], "timestamp": [2.0, 9.0, 1.0, 3.0, 3.0]})
    write_dataset(tmp_path / "d", inter, types={"rating": "float", "timestamp": "float"})
    data = load_sequences(tmp_path / "d")
    frame = data.interactions
    assert np.array_equal(frame["item_id"].to_numpy(), data.sequences.items)
    assert [data.items.token(i) for i in frame["item_id"]] == ["x", "z", "y", "y", "x"]  # a: 3, 3 (file order), 9
    assert frame["rating"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert frame["timestamp"].tolist() == [3.0, 3.0, 9.0, 1.0, 2.0]
    assert isinstance(data.split, LeaveOneOut)


class Listed(RecDataModule):
    """The smallest data module: the base class serves data, num_items, num_users and catalog."""

    def __init__(self, path):
        super().__init__()
        self.path, self.loads = path, 0

    def load_data(self):
        self.loads += 1
        return load_sequences(self.path)


def test_rec_data_module_plumbing(tiny_path):
    dm = Listed(tiny_path)
    assert (dm.num_items, dm.num_users, len(dm.catalog)) == (15, len(dm.data.users), 15)
    assert dm.loads == 1  # loaded once, on first use
    with pytest.raises(NotImplementedError, match="must implement load_data"):
        RecDataModule().num_items


def test_loader_is_public_and_shuffles_by_seed_and_epoch(tiny_path, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    dm = SeqDataModule(path=str(tiny_path), max_len=4)
    data = list(range(20))
    loader = dm.loader(data, batch_size=4, shuffle=True)
    assert isinstance(loader.sampler, EpochShuffle) and loader.batch_size == 4
    assert list(loader.sampler) == list(EpochShuffle(20, 7))
    assert dm.loader(data, batch_size=4, shuffle=False).sampler.__class__.__name__ == "SequentialSampler"
    with pytest.deprecated_call(match="use RecDataModule.loader"):
        old = dm._loader(data, 4, True)
    assert list(old.sampler) == list(loader.sampler)
