"""Rerankers without a language model: the baselines LLM rerankers are compared with."""

from __future__ import annotations

import torch
from torch import Tensor

import recsys


class RandomReranker(recsys.Reranker):
    """A uniformly random order, fixed per (seed, user, item): the floor of a candidate-list table.

    Args:
        seed: the seed of the order.

    Each (seed, user, item) is hashed on its own, so every user's list gets an independent order
    (not a rotation of one order) and the same list gets the same order in every batch.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed

    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        mixed = _mix32(_mix32(torch.tensor(self.seed)) ^ batch.user[:, None].long())
        return _mix32(mixed ^ candidates.long()).double().div(2.0 ** 32).float()  # in [0, 1)


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (xor-shift-multiply rounds) of int64 values, elementwise, in [0, 2^32).

    Products stay below 2^63 because both factors are below 2^32, so int64 never overflows."""
    x = (x + 0x9E3779B9) & 0xFFFFFFFF
    for multiplier in (0x7FEB352D, 0x846CA68B):
        x = ((x ^ (x >> 16)) * multiplier) & 0xFFFFFFFF
    return x ^ (x >> 16)


class PopularityReranker(recsys.Reranker):
    """Candidates by training popularity (the catalog's counts): Pop as a reranker."""

    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        popularity = torch.as_tensor(self.catalog.popularity, dtype=torch.float, device=candidates.device)
        return popularity[candidates]
