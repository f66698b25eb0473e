"""Rerankers that read the whole list at once, so their answer depends on the order they are
shown the candidates in (LLMRank measured that position bias). They share the remedies:

- ``order``: show the candidates as given (a retriever's order, best first), reversed, or shuffled;
- ``bootstrap``: rank B shuffled copies of the list and add up Borda points (LLMRank's remedy);
- sliding windows (RankGPT): a list longer than ``window`` is ranked window by window from its
  end to its start, ``step`` apart, so the best items bubble up to the top.

A subclass says how to rank a batch of short lists (:meth:`rank_lists`); this module turns the
orders into scores.
"""

from __future__ import annotations

import random
from typing import Callable, Literal

import torch
from torch import Tensor

import recsys
from recsys_rerank.llm import LLMReranker

Order = Literal["given", "reversed", "shuffled"]
#: one letter per candidate: one token each after "[" in GPT-2-style vocabularies (checked at use)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class OrderedLLMReranker(LLMReranker):
    """Base of the list-aware LLM rerankers (listwise generation, FIRST, PRP's sliding variant).

    Args:
        order: how the candidates are shown: ``given`` (as they come: the retriever's order,
            best first), ``reversed`` or ``shuffled`` (seeded per user).
        bootstrap: how many orders are ranked and Borda-aggregated (1: just ``order``; each further
            round is a seeded shuffle).
        seed: the seed of the shuffles.
        backbone, template, history_items, chat, chunk, recency: as :class:`recsys_rerank.llm.LLMReranker`.
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", template: str = "title", history_items: int = 10,
                 chat: bool = True, chunk: int = 16, order: Order = "given", bootstrap: int = 1, seed: int = 0,
                 recency: bool = False):
        super().__init__(backbone, template, history_items, chat, chunk, recency=recency)
        if order not in ("given", "reversed", "shuffled"):
            raise ValueError(f"order must be 'given', 'reversed' or 'shuffled', got {order!r}")
        if bootstrap < 1:
            raise ValueError(f"bootstrap must be >= 1, got {bootstrap}")
        self.order, self.bootstrap, self.seed = order, bootstrap, seed

    def rank_lists(self, histories: list[str], lists: list[list[int]]) -> list[list[int]]:
        """Each list of item indices reordered best first (a permutation of it); ``histories[i]``
        is list i's user's recent items as prompt text."""
        raise NotImplementedError

    def shown(self, items: list[int], user: int, round: int) -> list[int]:
        """The order list ``items`` is shown in, in bootstrap ``round``."""
        if round == 0 and self.order != "shuffled":
            return items[::-1] if self.order == "reversed" else list(items)
        shuffled = list(items)
        random.Random(f"{self.seed}-{user}-{round}").shuffle(shuffled)
        return shuffled

    @torch.no_grad()
    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        """Borda points averaged over the bootstrap rounds: C - position, so the first of a ranked
        list of C scores C; padding (0) scores -inf."""
        rows = candidates.tolist()
        users = batch.user.tolist()
        texts = [self.recent(h) for h in batch.history.tolist()]
        histories, lists, owners = [], [], []
        for row, (items, user) in enumerate(zip(rows, users)):
            items = [i for i in items if i > 0]
            for round in range(self.bootstrap):
                histories.append(texts[row])
                lists.append(self.shown(items, user, round))
                owners.append(row)
        points = torch.zeros(candidates.shape, dtype=torch.float)
        for row, ranked in zip(owners, self.rank_lists(histories, lists)):
            place = {item: len(ranked) - k for k, item in enumerate(ranked)}
            points[row] += torch.tensor([float(place.get(i, 0)) for i in rows[row]])
        self.counts["rows"] += len(rows)
        points = (points / self.bootstrap).to(candidates.device)
        return points.masked_fill(candidates == 0, float("-inf"))


def slide(lists: list[list[int]], window: int, step: int,
          rank_windows: Callable[[list[int], list[list[int]]], list[list[int]]]) -> list[list[int]]:
    """RankGPT's sliding windows over every list at once: windows of ``window`` items from the end
    of each list to its start, ``step`` apart, each replaced by its ranking. ``rank_windows(owners,
    windows)`` ranks a batch of windows (``owners[k]``: the list window k comes from), so each
    sliding step of every list is one batched call.

    A list of at most ``window`` items is ranked in one call; a longer one in
    ``ceil((len - window) / step) + 1`` calls, after which its top ``window - step`` items have
    met every other item's window."""
    if window < 2 or not 1 <= step <= window:
        raise ValueError(f"window must be >= 2 and 1 <= step <= window, got window={window}, step={step}")
    out = [list(items) for items in lists]
    ends: dict[int, int] = {k: len(items) for k, items in enumerate(out) if items}  # each list's next window end
    while ends:
        active = list(ends)
        spans = [(max(0, ends[k] - window), ends[k]) for k in active]
        ranked = rank_windows(active, [out[k][a:b] for k, (a, b) in zip(active, spans)])
        for k, (a, b), order in zip(active, spans, ranked):
            if sorted(order) != sorted(out[k][a:b]):
                raise AssertionError(f"a window's ranking is not a permutation of it: {order} vs {out[k][a:b]}")
            out[k][a:b] = order
            if a == 0:
                del ends[k]
            else:
                ends[k] = b - step
    return out


def identifiers(count: int) -> str:
    """The identifiers of ``count`` candidates in a prompt: A, B, C, ..."""
    if count > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} candidates per window (one letter each), got {count}; "
                         "lower `window`")
    return LETTERS[:count]
