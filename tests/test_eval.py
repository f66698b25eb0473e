import math

import pytest
import torch

from recsys.metrics import MetricSet, dense_ranks, hit, list_ranks, mask_seen, mrr, ndcg, parse_metric, topk_ranks


def test_dense_ranks_count_ties_against_the_model():
    scores = torch.tensor([[float("-inf"), 0.9, 0.5, 0.5, 0.1],
                           [float("-inf"), 1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([2, 3])
    # row 0: items scoring >= 0.5 are 1, 2, 3 -> rank 3 (the tie with item 3 counts against)
    # row 1: all four items tie -> rank 4 (the worst), not 1
    assert dense_ranks(scores, target).tolist() == [3, 4]


def test_metrics_against_hand_computation():
    ranks = torch.tensor([1, 2, 5, 11])
    assert hit(ranks, 10).tolist() == [1, 1, 1, 0]
    assert ndcg(ranks, 10).tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0])
    assert mrr(ranks, 10).tolist() == pytest.approx([1.0, 0.5, 0.2, 0.0])
    assert mrr(ranks, None).tolist() == pytest.approx([1.0, 0.5, 0.2, 1 / 11])
    assert ndcg(ranks, 1).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_topk_ranks_position_or_k_plus_one():
    ids = torch.tensor([[4, 2, 9], [1, 2, 3], [7, 7, 5]])
    target = torch.tensor([2, 8, 7])
    assert topk_ranks(ids, target).tolist() == [2, 4, 1]


def test_list_ranks_are_dense_ranks_of_the_listed_scores():
    # a list is the dense matrix with its scores for listed items and one floor for the others
    inf = float("inf")
    ids = torch.tensor([[3, 1, 4, 2], [3, 1, 4, 2]])
    scores = torch.tensor([[2.0, 1.0, 1.0, -inf], [2.0, 1.0, 1.0, -inf]])
    dense = torch.tensor([[-inf, 1.0, -5.0, 2.0, 1.0, -5.0, -5.0]]).repeat(2, 1)
    for target in ([1, 4], [2, 6], [3, 5]):
        target = torch.tensor(target)
        for ties in ("pessimistic", "random"):
            expected = dense_ranks(mask_seen(dense.clone(), None), target, ties, torch.arange(2))
            assert torch.equal(list_ranks(ids, scores, target, None, 6, ties, torch.arange(2)), expected)


def test_mask_seen_masks_pad_and_history_but_not_the_target():
    scores = torch.arange(6, dtype=torch.float).repeat(2, 1)
    seen = torch.tensor([[0, 2, 5], [0, 0, 3]])
    target = torch.tensor([5, 1])  # user 0 repeats item 5
    masked = mask_seen(scores.clone(), seen, target)
    assert masked[0].tolist() == [float("-inf"), 1, float("-inf"), 3, 4, 5]
    assert masked[1].tolist() == [float("-inf"), 1, 2, float("-inf"), 4, 5]
    unknown = mask_seen(scores.clone(), seen, torch.tensor([0, 0]))  # predict runs: no target
    assert unknown[:, 0].isinf().all() and unknown[0, 5] == float("-inf")


def test_constant_scorer_ranks_every_target_last_under_pessimistic_ties():
    n = 200
    scores = mask_seen(torch.zeros(50, n + 1), None)
    ranks = dense_ranks(scores, torch.randint(1, n + 1, (50,)))
    assert (ranks == n).all()
    assert hit(ranks, 10).mean() == 0.0  # pessimistic: a constant model never ranks first


def test_metric_specs():
    assert parse_metric("ndcg", [5, 10]) == [("ndcg@5", "ndcg", 5), ("ndcg@10", "ndcg", 10)]
    assert parse_metric("mrr@all", [5]) == [("mrr@all", "mrr", None)]
    with pytest.raises(ValueError, match="positive integer"):
        parse_metric("hit@x", [5])
    metric_set = MetricSet(["hit", "mrr@all"], [3, 20], {"hit": hit, "mrr": mrr})
    values = metric_set(torch.tensor([1, 4]))
    assert list(values) == ["hit@3", "hit@20", "mrr@all"]
    assert metric_set.max_k == 20
    with pytest.raises(ValueError, match="unknown metric 'recal'"):
        MetricSet(["recal"], [10], {"hit": hit})


def test_nan_scores_never_win():
    nan = float("nan")
    scores = torch.tensor([[float("-inf"), nan, nan, nan], [float("-inf"), 0.5, nan, nan]])
    ranks = dense_ranks(scores, torch.tensor([1, 1]))
    assert ranks.tolist() == [4, 1]  # a NaN target ranks last; NaN items never beat a real score


def test_random_ties_give_a_constant_scorer_k_over_n():
    n, users = 100, 5000
    scores = mask_seen(torch.zeros(users, n + 1), None)
    target = torch.randint(1, n + 1, (users,))
    ranks = dense_ranks(scores, target, ties="random", user=torch.arange(users))
    assert ranks.min() >= 1 and ranks.max() <= n
    assert hit(ranks, 10).mean().item() == pytest.approx(10 / n, abs=0.015)
    assert torch.equal(ranks, dense_ranks(scores, target, ties="random", user=torch.arange(users)))  # deterministic
    strict = torch.tensor([[float("-inf"), 3.0, 1.0, 2.0]])
    assert dense_ranks(strict, torch.tensor([3]), ties="random").tolist() == [2]  # no ties: the true rank
