"""SKNN (V-SKNN) and EASE: the model contract, hand-computed scores on 4-item toy cases, what the
neighbour sequences / X hold (training items only), and the checkpoint round trip."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
import torch

import recsys.testing
from recsys.data.batch import Batch
from recsys.data.datamodule import SeqDataModule
from recsys.data.sequences import Windows
from recsys.models.base import RecModule
from recsys.models.ease import EASE
from recsys.models.sknn import SKNN




class TestSKNNContract(recsys.testing.ModelContract):
    model = SKNN
    init_args: ClassVar[dict] = {"k": 20}
    learn: ClassVar[dict] = {"max_epochs": 1}  # one epoch collects everything; later ones do nothing


class TestEASEContract(recsys.testing.ModelContract):
    model = EASE
    init_args: ClassVar[dict] = {"reg_weight": 10.0}
    # EASE ignores order, yet passes: with the history masked, the rule's next item is the unseen
    # item that co-occurs most with the history (the items before it are all seen).
    learn: ClassVar[dict] = {"max_epochs": 1}


def _fitted(model, sequences: dict[int, list[int]]):
    """Fit from {user: items} as the first training epoch would (distinct pairs sorted)."""
    pairs = sorted({(u, i) for u, items in sequences.items() for i in items})
    users, items = torch.tensor(pairs).T
    model.fit_interactions(users, items)
    model.fitted.fill_(True)
    return model.eval()


def _batch(histories: list[list[int]], users: list[int], length: int = 4) -> Batch:
    rows = [[0] * (length - len(h)) + h for h in histories]
    return Batch(torch.tensor(rows), torch.zeros(len(rows), dtype=torch.long), torch.tensor(users))


# ---- SKNN, worked by hand ---------------------------------------------------------------------
# Training sequences (as sets): t1 = {1, 2, 3} (user 1), t2 = {2, 4} (user 2), t3 = {1, 4} (user 3).
# History (1, 2) of user 9 (no training sequence): linear weights w(1) = 1/2, w(2) = 2/2 = 1,
# ||w|| = sqrt(5/4). Cosine: t1 = 1.5 / (sqrt(5/4) sqrt 3) = 0.7746, t2 = 1 / (sqrt(5/4) sqrt 2) = 0.6325,
# t3 = 0.5 / (sqrt(5/4) sqrt 2) = 0.3162. With k = 2 the neighbours are t1 and t2:
# item 1: 0.7746 (t1), item 2: 0.7746 + 0.6325, item 3: 0.7746, item 4: 0.6325 (t2).
# Reversed history (2, 1): w(2) = 1/2, w(1) = 1, so t2 and t3 swap similarities (0.3162 and
# 0.6325): t3 = {1, 4} is now the second neighbour, item 1 gets 0.7746 + 0.6325, item 2 only t1's.
TOY = {1: [1, 2, 3], 2: [2, 4], 3: [1, 4]}
N = math.sqrt(5 / 4)
T1, T2, T3 = 1.5 / (N * math.sqrt(3)), 1 / (N * math.sqrt(2)), 0.5 / (N * math.sqrt(2))


def test_sknn_cosine_scores_by_hand():
    model = _fitted(SKNN(4, k=2), TOY)
    scores = model.score(_batch([[1, 2], [2, 1]], [9, 9]))
    expected = torch.tensor([[0, T1, T1 + T2, T1, T2],
                             [0, T1 + T2, T1, T1, T2]])
    torch.testing.assert_close(scores, expected)


def test_sknn_similarities_by_hand():
    model = _fitted(SKNN(4, k=3), TOY)
    batch = _batch([[1, 2]], [9])
    torch.testing.assert_close(model.neighbour_weights(batch.history, batch.user), torch.tensor([[T1, T2, T3]]))
    # dot (session-rec's vec): weighted overlap / distinct history items (2)
    dot = _fitted(SKNN(4, k=3, similarity="dot"), TOY)
    torch.testing.assert_close(dot.neighbour_weights(batch.history, batch.user), torch.tensor([[0.75, 0.5, 0.25]]))
    # no decay (plain SKNN): cosine of binary vectors, 2 / (sqrt 2 sqrt 3), 1 / 2, 1 / 2
    same = _fitted(SKNN(4, k=3, weighting="same"), TOY)
    torch.testing.assert_close(same.neighbour_weights(batch.history, batch.user),
                               torch.tensor([[2 / math.sqrt(6), 0.5, 0.5]]))


def test_sknn_the_newest_item_weighs_most():
    model = _fitted(SKNN(4, k=2), TOY)
    scores = model.score(_batch([[1, 2], [2, 1]], [9, 9]))
    # item 2 last: t2 = {2, 4} is the second neighbour; item 1 last: t3 = {1, 4} is
    assert scores[0, 2] > scores[1, 2] and scores[1, 1] > scores[0, 1]


def test_sknn_repeats_take_their_last_position_and_padding_changes_nothing():
    model = _fitted(SKNN(4, k=3), TOY)
    # (2, 1, 2): n = 3, item 1 at 2/3, item 2 at its last position 3/3
    w = model.query_weights(torch.tensor([[0, 2, 1, 2]]))
    torch.testing.assert_close(w, torch.tensor([[0, 2 / 3, 1.0, 0, 0]]))
    short, padded = _batch([[1, 2]], [9], length=2), _batch([[1, 2]], [9], length=6)
    torch.testing.assert_close(model.score(short), model.score(padded))


def test_sknn_the_users_own_sequence_is_not_a_neighbour():
    model = _fitted(SKNN(4, k=3), TOY)
    batch = _batch([[1, 2]], [1])  # user 1's own training sequence is t1
    torch.testing.assert_close(model.neighbour_weights(batch.history, batch.user), torch.tensor([[0, T2, T3]]))
    kept = _fitted(SKNN(4, k=3, exclude_self=False), TOY)
    torch.testing.assert_close(kept.neighbour_weights(batch.history, batch.user), torch.tensor([[T1, T2, T3]]))


def test_sknn_sample_size_keeps_that_many_candidates():
    model = _fitted(SKNN(4, k=3, sample_size=2), TOY)
    weights = model.neighbour_weights(torch.tensor([[0, 0, 1, 2]]), torch.tensor([9]))
    assert int((weights > 0).sum()) == 2  # 2 of the 3 candidates, each with its own similarity
    kept = weights[0] > 0
    torch.testing.assert_close(weights[0, kept], torch.tensor([T1, T2, T3])[kept])
    everything = _fitted(SKNN(4, k=3, sample_size=3), TOY)
    torch.testing.assert_close(everything.neighbour_weights(torch.tensor([[0, 0, 1, 2]]), torch.tensor([9])),
                               torch.tensor([[T1, T2, T3]]))


# ---- EASE, against the formula in numpy -------------------------------------------------------

X_TOY = {1: [1, 2], 2: [2, 3], 3: [1, 2, 3], 4: [3, 4]}


def _numpy_ease(reg: float) -> np.ndarray:
    x = np.zeros((4, 4))
    for user, items in X_TOY.items():
        x[user - 1, np.array(items) - 1] = 1
    p = np.linalg.inv(x.T @ x + reg * np.eye(4))
    return np.eye(4) - p @ np.diag(1 / np.diag(p))  # Steck's eq.: diag(B) = 0 by construction


def test_ease_weights_and_scores_match_the_formula():
    model = _fitted(EASE(4, reg_weight=2.0), X_TOY)
    b = _numpy_ease(2.0)
    torch.testing.assert_close(model.weights[1:, 1:].double(), torch.from_numpy(b), rtol=1e-5, atol=1e-6)
    assert model.weights[0].abs().sum() == 0 and model.weights[:, 0].abs().sum() == 0  # PAD
    scores = model.score(_batch([[1, 3], [4]], [9, 9]))
    expected = np.stack([b[0] + b[2], b[3]])
    torch.testing.assert_close(scores[:, 1:].double(), torch.from_numpy(expected), rtol=1e-5, atol=1e-6)
    assert (scores[:, 0] == 0).all()


def test_ease_ignores_order_and_repeats():
    model = _fitted(EASE(4, reg_weight=2.0), X_TOY)
    torch.testing.assert_close(model.score(_batch([[1, 3]], [9])), model.score(_batch([[3, 1, 3]], [9])))


# ---- what the first training epoch collects ---------------------------------------------------


@pytest.mark.parametrize("model_class", [SKNN, EASE])
def test_the_training_epoch_collects_exactly_the_training_sequences(model_class):
    """The neighbour sequences (SKNN) and X (EASE) hold each user's training items: every one of
    them, and no validation or test target (for loo: all but the last two items)."""
    data = SeqDataModule(str(recsys.testing.tiny_dataset()), max_len=3)
    model = model_class(data.num_items)
    windows = Windows.for_training(data.data.training, 3, "tiled")
    for start in range(0, len(windows), 4):
        model.training_step(windows.__getitems__(list(range(start, min(start + 4, len(windows))))), 0)
    model.on_train_epoch_end()
    sequences, train_length = data.data.sequences, data.data.split.train_length
    expected = {u: set(sequences.of(u)[: train_length[u]].tolist()) for u in range(1, sequences.num_users + 1)
                if train_length[u] >= 2}
    if isinstance(model, SKNN):
        got = {int(u): set(model.session_items[model.session_offsets[s]:model.session_offsets[s + 1]].tolist())
               for s, u in enumerate(model.session_users)}
        assert got == expected
    else:
        x = np.zeros((len(expected), data.num_items))
        for row, items in enumerate(expected.values()):
            x[row, np.array(sorted(items)) - 1] = 1
        p = np.linalg.inv(x.T @ x + model.reg_weight * np.eye(data.num_items))
        b = np.eye(data.num_items) - p @ np.diag(1 / np.diag(p))
        torch.testing.assert_close(model.weights[1:, 1:].double(), torch.from_numpy(b), rtol=1e-4, atol=1e-7)


def _training_batch(history: list[int], user: int) -> Batch:
    """One tiled training window: ``history`` with every position a target (the next item)."""
    labels = history[1:] + [0]
    return Batch(torch.tensor([history]), torch.tensor([0]), torch.tensor([user]), labels=torch.tensor([labels]))


def test_an_evaluation_in_the_middle_of_the_first_epoch_does_not_stop_the_collection():
    """val_check_interval < 1: the mid-epoch evaluation fits on the first batches, the epoch's end
    on all of them (a model frozen at the first evaluation scored history [4] as all zeros)."""
    mid, whole = EASE(6, reg_weight=1.0), EASE(6, reg_weight=1.0)
    mid.training_step(_training_batch([1, 2, 3], 1), 0)
    assert mid.score(_batch([[4]], [9]))[0, 5:].abs().sum() == 0  # items 5, 6 not seen yet
    for model in (mid, whole):
        if model is whole:
            model.training_step(_training_batch([1, 2, 3], 1), 0)
        model.training_step(_training_batch([4, 5, 6], 2), 1)
        model.on_train_epoch_end()
    history = _batch([[4]], [9])
    torch.testing.assert_close(mid.score(history), whole.score(history))
    assert (whole.score(history)[0, 5:] > 0).all()
    mid.training_step(_training_batch([1, 5], 3), 0)  # a later epoch adds nothing
    mid.on_train_epoch_end()
    torch.testing.assert_close(mid.score(history), whole.score(history))


def test_an_unfitted_model_refuses_to_score():
    with pytest.raises(RuntimeError, match="not been fitted"):
        SKNN(4).score(_batch([[1]], [1]))


# ---- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [SKNN, EASE])
def test_state_dict_round_trip_into_a_fresh_model(model_class, tmp_path):
    model = _fitted(model_class(4), X_TOY)
    fresh = model_class(4)  # empty buffers of other sizes
    fresh.load_state_dict(model.state_dict())
    batch = _batch([[1, 3], [4, 2]], [9, 1])
    assert bool(fresh.fitted)
    torch.testing.assert_close(fresh.eval().score(batch), model.score(batch))
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "recsys_class_path": f"{model_class.__module__}.{model_class.__qualname__}",
                "pytorch-lightning_version": "2.6.0"}, path)
    restored = RecModule.load_from_checkpoint(path)
    assert type(restored) is model_class
    torch.testing.assert_close(restored.eval().score(batch), model.score(batch))
