"""recsys.testing catches the mistakes it is there to catch (each broken model breaks one contract)."""

import filecmp
import itertools

import pytest
import torch
from torch import nn

import recsys
from recsys.models.pop import Pop
from recsys.models.sasrec import SASRec
from recsys.testing import (
    LEARN_MARGIN,
    _check_checkpoint_round_trip,
    _check_deterministic,
    _check_fits_and_evaluates,
    _check_learns,
    _check_no_target_leakage,
    _check_outputs,
    _check_registered,
    _Runs,
    check_model,
    registered,
    rule_dataset,
    tiny_dataset,
)


class Peeker(Pop):
    """Reads every user's last item (the held-out test target) from the data module."""

    def setup(self, stage):
        super().setup(stage)
        data = self.trainer.datamodule.data
        last = torch.zeros(data.sequences.num_users + 1, dtype=torch.long)
        for user in range(1, data.sequences.num_users + 1):
            last[user] = int(data.sequences.of(user)[-1])
        self.last = last

    def score(self, batch):
        scores = super().score(batch)
        scores[torch.arange(len(batch.user)), self.last[batch.user]] += 100.0
        return scores


class Cached(Pop):
    """Returns the same tensor every call, so the engine's in-place masking corrupts it."""

    def score(self, batch):
        if getattr(self, "_cached", None) is None or len(self._cached) != len(batch.target):
            self._cached = super().score(batch)
        return self._cached


class Flipper(Pop):
    """Depends on a global counter, not on the seed: every other instance ranks in reverse."""

    instances = itertools.count()

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.sign = -1.0 if next(Flipper.instances) % 2 else 1.0

    def score(self, batch):
        return super().score(batch) * self.sign


class Forgetful(recsys.SeqRecModule):
    """Never calls save_hyperparameters(), so a checkpoint cannot rebuild it."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.items = nn.Embedding(num_items + 1, 4)

    def loss(self, batch):
        return -self.score(batch).log_softmax(-1)[torch.arange(len(batch.target)), batch.target].mean()

    def score(self, batch):
        return self.items(batch.history).mean(1) @ self.items.weight.T


class Inert(Forgetful):
    """Has a parameter, but its loss does not depend on it."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()

    def loss(self, batch):
        return self.items.weight.sum() * 0


class OffByOne(SASRec):
    """Trains as SASRec does, but scores item i with item i - 1's logit (a shifted column)."""

    def score(self, batch):
        return super().score(batch).roll(1, dims=1)


class Broken:
    __name__ = "broken-models"

    @recsys.hookimpl
    def register_models(self, register):
        for model in (Peeker, Cached, Flipper, Forgetful, Inert, OffByOne):
            register(model)


@pytest.fixture
def runs(tmp_path):
    plugin = Broken()
    with registered(plugin):
        yield lambda model: _Runs(model, plugin, {}, 1, tmp_path)


def test_the_packaged_tiny_dataset_is_data_tiny(tiny_path):
    assert not filecmp.dircmp(tiny_path, tiny_dataset()).diff_files
    assert sorted(p.name for p in tiny_dataset().iterdir()) == ["tiny.inter", "tiny.item", "tiny.user"]


def test_an_unregistered_model_is_explained(tmp_path):
    with pytest.raises(AssertionError, match="Peeker is not registered .* set `plugin`"):
        _check_registered(_Runs(Peeker, None, {}, 1, tmp_path))


def test_reading_the_batch_target_is_leakage(fake_plugin, tmp_path):
    from fake_models import OracleRec

    with pytest.raises(AssertionError, match="OracleRec reads batch.target"):
        _check_no_target_leakage(_Runs(OracleRec, None, {}, 1, tmp_path))


def test_reading_held_out_targets_from_the_data_is_leakage(tmp_path):
    # check_model runs the contracts in order: Peeker passes the others, then is caught here.
    with pytest.raises(AssertionError, match="Peeker scores the same histories differently .* reads held-out targets"):
        check_model(Peeker, plugin=Broken(), tmp_path=tmp_path, max_epochs=1)


def test_returning_a_kept_tensor_from_score_is_caught(runs):
    with pytest.raises(AssertionError, match="returned a tensor the model keeps"):
        _check_outputs(runs(Cached))


def test_randomness_outside_the_seed_is_caught(runs):
    with pytest.raises(AssertionError, match="Flipper: two fits with seed 0 .* gave different validation metrics"):
        _check_deterministic(runs(Flipper))


def test_a_checkpoint_that_cannot_be_restored_is_explained(runs):
    with pytest.raises(AssertionError, match=r"Forgetful: .*load_from_checkpoint.*self.save_hyperparameters\(\)"):
        _check_checkpoint_round_trip(runs(Forgetful))


def test_parameters_that_never_train_are_caught(runs):
    with pytest.raises(AssertionError, match="Inert has 1 trainable parameter tensors but training changed none"):
        _check_fits_and_evaluates(runs(Inert))


SMALL_SASREC = {"max_len": 5, "d_model": 8, "ffn_dim": 16}
LEARN = {"max_epochs": 10, "init_args": {"lr": 0.005}}


def test_the_rule_dataset_follows_one_cycle(tmp_path):
    import pandas as pd

    folder = rule_dataset(tmp_path, users=20, items=12, min_length=3, max_length=12, seed=3)
    inter = pd.read_csv(folder / "rule.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    follows = {}
    for _, rows in inter.sort_values(["user_id", "timestamp"]).groupby("user_id"):
        items = rows["item_id"].tolist()
        assert len(set(items)) == len(items)  # never a repeat
        for a, b in itertools.pairwise(items):
            assert follows.setdefault(a, b) == b, f"item {a} is followed by {follows[a]} and by {b}"
    titles = pd.read_csv(folder / "rule.item", sep="\t").iloc[:, 1]
    assert titles.is_unique and len(titles) == 12


def test_a_model_that_learns_the_rule_passes(tmp_path):
    _check_learns(_Runs(SASRec, None, SMALL_SASREC, 1, tmp_path, LEARN))


def test_scoring_the_neighbouring_item_is_caught(tmp_path):
    # Same training as the passing SASRec above; only score() reads the wrong column.
    with registered(Broken()), pytest.raises(AssertionError, match=r"OffByOne did not learn .* controls"):
        _check_learns(_Runs(OffByOne, None, SMALL_SASREC, 1, tmp_path, LEARN))


def test_a_model_that_does_not_learn_sequences_is_caught(tmp_path):
    with pytest.raises(AssertionError, match=rf"Pop did not learn .* must beat each by {LEARN_MARGIN}"):
        _check_learns(_Runs(Pop, None, {}, 1, tmp_path, {"max_epochs": 1}))


def test_learn_none_skips_the_check_and_unknown_budget_keys_are_refused(tmp_path):
    _check_learns(_Runs(Pop, None, {}, 1, tmp_path, None))  # no fit, no failure
    with pytest.raises(TypeError, match=r"`learn` takes max_epochs, init_args and data, got \['epochs'\]"):
        _Runs(Pop, None, {}, 1, tmp_path, {"epochs": 3})
