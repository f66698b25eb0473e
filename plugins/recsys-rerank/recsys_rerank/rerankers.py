"""Rerankers without a language model: the baselines LLM rerankers are compared with."""

from __future__ import annotations

import torch
from torch import Tensor

import recsys


class RandomReranker(recsys.Reranker):
    """A uniformly random order, fixed per (seed, user, item): the floor of a candidate-list table.

    Args:
        seed: the seed of the order.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed

    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        # a hash of (seed, user, item) in [0, 1): the same list gets the same order in every batch
        mixed = (batch.user[:, None].long() * 1_000_003 + candidates.long() * 7_919 + self.seed * 104_729) % 2_147_483_647
        return ((mixed * 48_271) % 2_147_483_647).float() / 2_147_483_647.0


class PopularityReranker(recsys.Reranker):
    """Candidates by training popularity (the catalog's counts): Pop as a reranker."""

    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        popularity = torch.as_tensor(self.catalog.popularity, dtype=torch.float, device=candidates.device)
        return popularity[candidates]
