"""recsys.index.ItemIndex: exact search matches brute force, exclusions hold, approximate recall is high."""

import numpy as np
import pytest
import torch

from recsys.index import ItemIndex


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(500, 16, generator=g), torch.randn(20, 16, generator=g)


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_flat_index_matches_brute_force(data, metric):
    items, queries = data
    scores, ids = ItemIndex(items, metric=metric).search(queries, k=10)
    if metric == "ip":
        brute = queries @ items.T
    elif metric == "l2":
        brute = -torch.cdist(queries, items).pow(2)
    else:
        brute = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(items, dim=1).T
    expected_scores, expected = brute.topk(10, dim=1)
    assert torch.equal(ids, expected + 1)  # ids default to item indices 1..N
    torch.testing.assert_close(scores, expected_scores, atol=1e-3, rtol=1e-4)


def test_excluded_ids_are_never_returned(data):
    items, queries = data
    index = ItemIndex(items)
    _, top = index.search(queries, k=5)
    exclude = torch.zeros(len(queries), 7, dtype=torch.long)
    exclude[:, :5] = top  # exclude each query's own top 5; 0 pads
    _, ids = index.search(queries, k=5, exclude=exclude)
    for row in range(len(queries)):
        assert not set(ids[row].tolist()) & set(top[row].tolist())
    _, next5 = index.search(queries, k=10)
    assert torch.equal(ids, next5[:, 5:])


def test_custom_ids_and_short_rows():
    index = ItemIndex(np.eye(3, dtype=np.float32), ids=[10, 20, 30])
    scores, ids = index.search(np.array([[1.0, 0.5, 0.0]]), k=5, exclude=[[20]])
    assert ids.tolist() == [[10, 30, 0, 0, 0]]
    assert torch.isinf(scores[0, 2:]).all() and scores[0, 0] == 1.0


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_have_high_recall(kind):
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(50, 32, generator=g)
    items = centers[torch.randint(0, 50, (5000,), generator=g)] + 0.3 * torch.randn(5000, 32, generator=g)
    queries = items[:200] + 0.05 * torch.randn(200, 32, generator=g)
    _, exact = ItemIndex(items, kind="flat").search(queries, 10)
    approx_index = ItemIndex(items, kind=kind, nprobe=8)
    assert approx_index.kind == kind
    _, approx = approx_index.search(queries, 10)
    recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


def test_auto_switches_to_approximate_above_the_threshold(data):
    items, _ = data
    assert ItemIndex(items).kind == "flat"
    assert ItemIndex(items, exact_below=100).kind == "ivf"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="vectors must be 2-D"):
        ItemIndex(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        ItemIndex(np.array([[np.nan, 1.0]]))
    index = ItemIndex(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension 3, the index has 4"):
        index.search(np.zeros((1, 3)), 2)
    with pytest.raises(ValueError, match="exclude has 2 rows"):
        index.search(np.zeros((1, 4)), 2, exclude=[[1], [2]])
    with pytest.raises(ValueError, match="metric must be"):
        ItemIndex(np.eye(2), metric="dot")
