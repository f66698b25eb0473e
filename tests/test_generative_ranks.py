"""Generative models (``recommend`` only) are ranked by the same rules as dense models.

Each test puts a dense model and a generative model with the same scores side by side: the
generative model lists its top items with their scores (best first, ``seen`` excluded as the
contract asks), and ``rank`` must give the target the rank the dense model gets.
"""

import pytest
import torch

import recsys
from recsys.data.batch import Batch
from recsys.metrics import list_ranks

INF = float("inf")


class Dense(recsys.SeqRecModule):
    """Scores every item with a fixed (B, N + 1) table."""

    def __init__(self, table: torch.Tensor, **kwargs):
        super().__init__(table.shape[1] - 1, **kwargs)
        self.table = table

    def score(self, batch):
        return self.table[batch.user].clone()


class Listing(recsys.SeqRecModule):
    """Lists the best items of the same table, ``seen`` excluded; ``order`` chooses the list's order
    within equal scores (the old evaluation read positions, so the order decided ties). Rows with
    fewer than k positive-score items are filled with unlisted items scored -inf (fillers), in
    ``filler_order``. Records every ``recommend`` call."""

    def __init__(self, table: torch.Tensor, order: str = "target_first", fill: bool = True, **kwargs):
        super().__init__(table.shape[1] - 1, **kwargs)
        self.table, self.order, self.fill, self.calls = table, order, fill, []

    def recommend(self, batch, k):
        self.calls.append((batch, k))
        n = self.num_items
        ids, scores = [], []
        for row, user in enumerate(batch.user.tolist()):
            excluded = set(batch.seen[row].tolist()) if batch.seen is not None else set()
            table = self.table[user]
            items = [i for i in range(1, n + 1) if i not in excluded and table[i] > -INF]
            target = int(batch.target[row])
            # best first; within equal scores, the target first (or last): positions would decide
            last = self.order == "target_last"
            items.sort(key=lambda i, table=table, target=target: (-table[i].item(), (i == target) == last))
            row_ids = items[:k]
            row_scores = [table[i].item() for i in row_ids]
            if len(row_ids) < k and self.fill:  # fillers: unseen unlisted items first, in id order
                rest = sorted((i for i in range(1, n + 1) if i not in row_ids), key=lambda i: (i in excluded, i))
                row_ids += rest[:k - len(row_ids)]
                row_scores += [-INF] * (k - len(row_scores))
            ids.append(row_ids)
            scores.append(row_scores)
        return torch.tensor(ids), torch.tensor(scores)


def batch_of(target, seen=None):
    target = torch.tensor(target)
    seen = torch.tensor(seen) if seen is not None else None
    return Batch(history=torch.zeros(len(target), 3, dtype=torch.long), target=target,
                 user=torch.arange(len(target)), seen=seen)


def both(table, ties, **kwargs):
    metrics = dict(metrics=["hit@3"], ks=[3], ties=ties)
    return Dense(table, **metrics), Listing(table, **metrics, **kwargs)


@pytest.mark.parametrize("ties", ["pessimistic", "random"])
@pytest.mark.parametrize("order", ["target_first", "target_last"])
def test_equal_scores_rank_as_a_dense_model_ranks_them(ties, order):
    # 12 items; items 2, 5 and 9 tie at the top of every row; the target is one of them
    n = 12
    table = torch.linspace(0.5, 0.1, n + 1).repeat(6, 1)
    table[:, 0] = -INF
    table[:, [2, 5, 9]] = 0.9
    target = [2, 5, 9, 2, 5, 9]
    dense, listing = both(table, ties, order=order)
    batch = batch_of(target)
    expected = dense.rank(batch)
    if ties == "pessimistic":
        assert expected.tolist() == [3] * 6  # behind every item tied with it
    else:
        assert expected.min() >= 1 and expected.max() <= 3 and len(set(expected.tolist())) > 1
    assert torch.equal(listing.rank(batch), expected)


def test_a_tie_group_cut_by_the_end_of_the_list_counts_beyond_it():
    # items 1 and 2 lead; 3, 4, 5 tie next: under pessimistic ties each of them ranks 5th, so
    # hit@3 is 0 for all three, though the list's third slot holds one of them
    table = torch.tensor([[-INF, 0.9, 0.8, 0.5, 0.5, 0.5, 0.3, 0.2, 0.2, 0.1, 0.0]]).repeat(3, 1)
    dense, listing = both(table, "pessimistic", order="target_first")
    batch = batch_of([3, 4, 5])
    assert dense.rank(batch).tolist() == [5, 5, 5]
    ranks = listing.rank(batch)  # the list is one longer than the cutoff: the tie shows at its end
    assert (ranks > 3).all() and torch.equal(listing.metric_set(ranks)["hit@3"], torch.zeros(3))


@pytest.mark.parametrize("ties", ["pessimistic", "random"])
def test_a_target_among_fillers_ties_with_every_unlisted_item(ties):
    # each row scores only 2 items (the rest -inf): the list of 4 is 2 items + 2 fillers (-inf)
    n, users = 20, 400
    table = torch.full((users, n + 1), -INF)
    table[:, 1], table[:, 2] = 2.0, 1.0
    torch.manual_seed(0)
    target = torch.randint(3, n + 1, (users,))
    _, listing = both(table, ties)
    batch = batch_of(target.tolist())
    ids, scores = listing.recommend(batch, 4)
    assert (scores[:, 2:] == -INF).all() and (ids[:, 2] == 3).all()  # fillers in id order, first 3
    ranks = listing.rank(batch)
    if ties == "pessimistic":
        assert ranks.tolist() == [n] * users  # a miss: tied with all 18 unlisted items
    else:
        # a uniform place among the 18 unlisted items: ranks 3..20, as a constant dense model
        # below the two listed items would rank it (dense_ranks' own draw)
        floor = table.clone()
        floor[:, 3:] = 0.0
        assert torch.equal(ranks, Dense(floor, ties=ties).rank(batch))
        assert ranks.min() >= 3 and ranks.max() <= n
        assert (ranks <= 3).float().mean().item() == pytest.approx(1 / 18, abs=0.03)


@pytest.mark.parametrize("ties", ["pessimistic", "random"])
def test_a_repeat_is_hit_exactly_when_a_dense_model_hits_it(ties):
    n = 10
    table = torch.linspace(1.0, 0.1, n + 1).repeat(5, 1)  # item 1 best ... item 10 worst
    table[:, 0] = -INF
    # rows 0, 1, 4: the target is in seen (a repeat); rows 2, 3: not
    seen = [[0, 1, 2, 3], [3, 4, 5, 7], [0, 0, 1, 2], [0, 0, 0, 5], [0, 1, 2, 9]]
    target = [2, 7, 4, 6, 9]
    dense, listing = both(table, ties)
    batch = batch_of(target, seen)
    expected = dense.rank(batch)
    # item 2 beats every unseen item; item 7 is behind 1, 2, 6; item 9 behind 3..8
    assert expected.tolist() == [1, 4, 2, 5, 7]
    ranks = listing.rank(batch)
    listed = expected <= 4  # the list holds 4 items: ranks up to 4 are exact, the rest misses
    assert torch.equal(ranks[listed], expected[listed]) and (ranks[~listed] > 4).all()
    assert torch.equal(listing.metric_set(ranks)["hit@3"], dense.metric_set(expected)["hit@3"])
    first, *again = listing.calls[-4:]
    assert first[1] == 4 and first[0].seen is not None  # one longer than the largest cutoff
    # the repeats are asked again, without seen, one call per list length (k + distinct seen items)
    # (the target field blanked: the model gets histories only)
    assert [(call.seen, call.user.tolist(), call.target.tolist(), k) for call, k in again] == [
        (None, [0, 4], [0, 0], 4 + 3), (None, [1], [0], 4 + 4)]


def test_list_ranks_reads_scores_not_positions():
    ids = torch.tensor([[4, 2, 9, 7], [4, 2, 9, 7]])
    scores = torch.tensor([[3.0, 3.0, 1.0, -INF], [3.0, 3.0, 1.0, -INF]])
    target = torch.tensor([4, 7])
    # item 4 ties with 2 (rank 2 under pessimistic); item 7 is a filler: tied with the 7 unlisted items
    assert list_ranks(ids, scores, target, None, 10).tolist() == [2, 10]
    # the same with masking: seen items drop out, the target stays
    seen = torch.tensor([[0, 2], [1, 7]])
    assert list_ranks(ids, scores, target, seen, 10).tolist() == [1, 9]
    # NaN counts as unlisted; a repeated id keeps its best score; huge scores keep their order
    ids = torch.tensor([[5, 5, 6, 3]])
    scores = torch.tensor([[3e38, 1.0, float("nan"), -3e38]])
    assert list_ranks(ids, scores, torch.tensor([3]), None, 6).tolist() == [2]
    assert list_ranks(ids, scores, torch.tensor([6]), None, 6).tolist() == [6]


def test_metrics_without_cutoff_still_need_dense_scores():
    table = torch.zeros(1, 5)
    listing = Listing(table, metrics=["mrr@all"])
    with pytest.raises(ValueError, match="without a cutoff"):
        listing.rank(batch_of([1]))
