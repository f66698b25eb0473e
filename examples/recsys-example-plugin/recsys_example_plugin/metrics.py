"""A ranking metric: a function of each target's rank."""

from __future__ import annotations

from torch import Tensor


def precision(ranks: Tensor, k: int | None) -> Tensor:
    """precision@k with one relevant item per user: 1/k when the target is in the top k, else 0."""
    if k is None:
        raise ValueError("precision needs a cutoff: write 'precision@10', not 'precision@all'")
    return (ranks <= k).float() / k
