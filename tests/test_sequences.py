import numpy as np
import pandas as pd
import pytest

from recsys.data.atomic import write_dataset
from recsys.data.dataset import load_sequences
from recsys.data.sequences import LeaveOneOut, Sequences, Windows
from recsys.data.vocab import Vocab


def naive_augmentation(seq: Sequences, split: LeaveOneOut, max_len: int):
    """Every (history, target) pair RecBole's materialised augmentation would build."""
    pairs = []
    for user in range(1, seq.num_users + 1):
        items = seq.of(user)[: split.train_length[user]]
        for end in range(1, len(items)):
            history = list(items[max(0, end - max_len) : end])
            pairs.append((user, tuple([0] * (max_len - len(history)) + history), int(items[end])))
    return sorted(pairs)


def test_vocab_pad_zero_and_natural_order():
    vocab = Vocab.from_tokens(["10", "2", "2", "33"])
    assert vocab.tokens == ["[PAD]", "2", "10", "33"]
    assert vocab.index(["33", "2"]).tolist() == [3, 1]
    with pytest.raises(KeyError, match="unknown item '7'"):
        vocab.index(["7"], what="item")


def test_item_tie_break_does_not_depend_on_file_order(tmp_path):
    inter = pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["c", "a", "b", "d"], "timestamp": [5.0, 5.0, 5.0, 1.0]})
    write_dataset(tmp_path / "a", inter)
    write_dataset(tmp_path / "b", inter.iloc[::-1])
    first, second = load_sequences(tmp_path / "a", tie_break="item"), load_sequences(tmp_path / "b", tie_break="item")
    tokens = [first.items.token(i) for i in first.sequences.of(1)]
    assert tokens == ["d", "a", "b", "c"]  # time first, then item id
    assert first.sequences.items.tolist() == second.sequences.items.tolist()


def test_leave_one_out_targets(tiny_data):
    seq, split = tiny_data.sequences, tiny_data.split
    for stage, offset in (("val", 2), ("test", 1)):
        batch = Windows.for_evaluation(split, stage, max_len=4, mask_history=True).__getitems__(range(len(split.evaluated)))
        for row, user in enumerate(batch.user.tolist()):
            items = seq.of(user)
            end = len(items) - offset
            assert batch.target[row] == items[end]
            history = [i for i in batch.history[row].tolist() if i]
            assert history == items[max(0, end - 4) : end].tolist()
            assert [i for i in batch.seen[row].tolist() if i] == items[:end].tolist()


def test_no_target_leaks_into_training(tiny_data):
    seq, split = tiny_data.sequences, tiny_data.split
    windows = Windows.for_training(split, max_len=50, mode="every")
    batch = windows.__getitems__(range(len(windows)))
    for user, history, target in zip(batch.user.tolist(), batch.history.tolist(), batch.target.tolist()):
        held_out = seq.of(user)[split.train_length[user] :].tolist()
        position = list(seq.of(user)).index(target)
        assert position < split.train_length[user], "a held-out item is a training target"
        assert not set(held_out) & set(i for i in history if i)


@pytest.mark.parametrize("max_len", [1, 3, 50])
def test_every_window_equals_materialised_augmentation(tiny_data, max_len):
    windows = Windows.for_training(tiny_data.split, max_len=max_len, mode="every")
    batch = windows.__getitems__(range(len(windows)))
    lazy = sorted(zip(batch.user.tolist(), map(tuple, batch.history.tolist()), batch.target.tolist()))
    assert lazy == naive_augmentation(tiny_data.sequences, tiny_data.split, max_len)


@pytest.mark.parametrize("max_len, stride", [(2, None), (3, None), (50, None), (4, 2), (5, 1), (3, 3)])
def test_tiled_windows_cover_each_training_target_once(tiny_data, max_len, stride):
    windows = Windows.for_training(tiny_data.split, max_len=max_len, mode="tiled", stride=stride)
    batch = windows.__getitems__(range(len(windows)))
    covered = []
    for user, history, target, labels in zip(batch.user.tolist(), batch.history.tolist(), batch.target.tolist(),
                                             batch.labels.tolist()):
        following = history[1:] + [target]
        for position, label in enumerate(labels):
            if label:
                assert label == following[position] and history[position] != 0
                covered.append((user, label))
    expected = [(u, t) for u, _, t in naive_augmentation(tiny_data.sequences, tiny_data.split, 1)]
    assert sorted(covered) == sorted(expected)


@pytest.mark.parametrize("max_len, stride", [(4, 2), (5, 1), (6, 4), (5, 3), (4, 4)])
def test_overlapping_windows_give_every_target_context(max_len, stride):
    """The documented promise of tiled windows with a stride below max_len: a target sees the
    ``max_len - stride + 1`` items before it (its position's own input included), or all of
    them when it has fewer. Users' items are 1..n in order, so an item is its own position + 1:
    the expected context is read off the item ids, not off the windows' arithmetic."""
    lengths = np.array([3, 4, 5, 7, 9, 12, 16])
    items = np.concatenate([np.arange(1, n + 1) for n in lengths])
    seq = Sequences(np.concatenate(([0, 0], np.cumsum(lengths))), items)
    split = LeaveOneOut(seq)
    windows = Windows.for_training(split, max_len=max_len, mode="tiled", stride=stride)
    batch = windows.__getitems__(range(len(windows)))
    least = max_len - stride + 1  # the first labelled position, max_len - stride, sees this many
    checked = 0
    for history, labels in zip(batch.history.tolist(), batch.labels.tolist()):
        for position, label in enumerate(labels):
            if not label:
                continue
            index = label - 1  # the target's position in its sequence
            context = [item for item in history[: position + 1] if item]
            assert context == list(range(label - len(context), label)), (history, position)  # the items just before it
            assert len(context) >= min(index, least), (history, position, label)
            checked += 1
    # leave-one-out keeps n - 2 items for training, all but the first of them targets: no empty loop
    assert checked == sum(n - 3 for n in lengths if n > 3)


def test_windows_store_per_user_arrays_only():
    users = 1000
    lengths = np.full(users, 300)
    items = np.tile(np.arange(1, 301), users)
    seq = Sequences(np.concatenate(([0, 0], np.cumsum(lengths))), items)
    windows = Windows.for_training(LeaveOneOut(seq), max_len=50, mode="every")
    assert len(windows) == users * 297
    stored = windows.users.nbytes + windows.last_end.nbytes + windows.cumulative.nbytes
    assert stored <= 3 * 8 * users  # O(users), not O(windows x L)
    batch = windows.__getitems__([0, len(windows) - 1])
    assert batch.history.shape == (2, 50)


def test_prediction_windows_use_the_whole_sequence(tiny_data):
    windows = Windows.for_prediction(tiny_data.sequences, max_len=50, mask_history=False)
    batch = windows.__getitems__(range(len(windows)))
    assert (batch.target == 0).all() and batch.seen is None
    user = int(batch.user[0])
    assert [i for i in batch.history[0].tolist() if i] == tiny_data.sequences.of(user).tolist()


def test_popularity_counts_training_interactions_only(tiny_data):
    seq, split = tiny_data.sequences, tiny_data.split
    expected = np.zeros(len(tiny_data.items) + 1, dtype=np.int64)
    for user in range(1, seq.num_users + 1):
        for item in seq.of(user)[: split.train_length[user]]:
            expected[item] += 1
    assert tiny_data.catalog.popularity.tolist() == expected.tolist()


def test_default_tie_break_keeps_file_order_as_recbole(tmp_path):
    inter = pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["c", "a", "b", "d"], "timestamp": [5.0, 5.0, 5.0, 1.0]})
    write_dataset(tmp_path / "a", inter)
    data = load_sequences(tmp_path / "a")
    assert [data.items.token(i) for i in data.sequences.of(1)] == ["d", "c", "a", "b"]


def test_without_timestamps_file_order_is_the_order(tmp_path):
    write_dataset(tmp_path / "a", pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["30", "10", "20", "5"]}))
    data = load_sequences(tmp_path / "a")
    assert [data.items.token(i) for i in data.sequences.of(1)] == ["30", "10", "20", "5"]


def test_timestamp_must_be_numeric(tmp_path):
    from recsys.data.atomic import DataFormatError

    path = tmp_path / "t"
    path.mkdir()
    (path / "t.inter").write_text("user_id:token\titem_id:token\ttimestamp:token\n1\t2\t9\n1\t3\t10\n")
    with pytest.raises(DataFormatError, match=r"t\.inter:1: field 'timestamp' must be typed 'float'"):
        load_sequences(path)


def test_max_history_respects_file_tie_break(tmp_path):
    inter = pd.DataFrame({"user_id": ["u"] * 4, "item_id": ["9", "3", "7", "1"], "timestamp": [1.0, 1.0, 1.0, 2.0]})
    write_dataset(tmp_path / "a", inter)
    data = load_sequences(tmp_path / "a", max_history=3, tie_break="file")
    assert [data.items.token(i) for i in data.sequences.of(1)] == ["3", "7", "1"]
