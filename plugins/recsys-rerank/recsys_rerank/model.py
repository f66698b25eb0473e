"""Retrieve then rerank: a trained model proposes each user's top candidates and a reranker
reorders them, as LLM rerankers are used (the LLM never scores 10^4 items).

:class:`Rerank` is a ranking model like any other, so it is evaluated by the engine's full
ranking: the reranked candidates come first, in the reranker's order, and every other item
keeps the retriever's order below them, so every metric stays defined and comparable. Under
candidate-list evaluation (``data.candidates``) it reranks the given lists and needs no
retriever.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

import recsys


class Rerank(recsys.NoGradientModule):
    """Retriever's top-``candidates`` unseen items, reordered by ``reranker``.

    Args:
        num_items: catalog size N (linked from the data).
        reranker: a :class:`recsys.Reranker` (by ``class_path``; ``recsys.get_rerankers()`` lists them).
        retriever: a trained dense model's checkpoint (``.../checkpoints/best-*.ckpt``), frozen. Under
            candidate lists (``data.candidates``) it is optional and only orders each list before
            the reranker sees it (best first), as a first stage would.
        candidates: how many of the retriever's items the reranker reorders (N of top-N).
        metrics, ks, ties: as :class:`recsys.RecModule`.

    Zero-shot: nothing is trained (``recsys test`` evaluates it; ``recsys fit`` runs no step).
    """

    def __init__(
        self,
        num_items: int,
        reranker: recsys.Reranker,
        retriever: str | None = None,
        candidates: int = 20,
        metrics: Sequence[str] = ("hit", "ndcg", "mrr"),
        ks: Sequence[int] = (5, 10, 20, 50),
        ties: Literal["pessimistic", "random"] = "pessimistic",
    ):
        super().__init__(num_items, metrics=metrics, ks=ks, ties=ties)
        if candidates < 1:
            raise ValueError(f"model.candidates must be >= 1, got {candidates}")
        self.save_hyperparameters(ignore=["reranker"])
        self.reranker = reranker
        self.candidates = min(candidates, num_items)
        self.retriever: recsys.RecModule | None = None
        if retriever is not None:
            model = recsys.RecModule.load_from_checkpoint(retriever, map_location="cpu")
            if not getattr(model, "is_dense", False):
                raise ValueError(f"model.retriever {retriever}: {type(model).__name__} has no score(); "
                                 "a retriever must score every item")
            self.retriever = model.eval().requires_grad_(False)

    def on_catalog(self, catalog) -> None:
        self.reranker.on_catalog(catalog)
        if self.retriever is not None:
            self.retriever.set_catalog(catalog)

    @torch.no_grad()
    def score(self, batch: recsys.Batch) -> Tensor:
        """(B, N + 1): the reranked candidates above every other item, in the reranker's order."""
        if batch.candidates is not None:  # candidate-list evaluation: rerank the given lists
            given = batch.candidates
            if self.retriever is not None:  # shown in the retriever's order, best first (padding last)
                base = self.retriever.score(batch).float().gather(1, given).masked_fill(given == 0, float("-inf"))
                given = given.gather(1, base.argsort(dim=1, descending=True, stable=True))
            scores = torch.full((len(batch.target), self.num_items + 1), float("-inf"), device=given.device)
            return scores.scatter_(1, given, self.reranker.score(batch, given).float())
        if self.retriever is None:
            raise ValueError("Rerank needs model.retriever (a trained model's checkpoint) unless the data gives "
                             "candidate lists (data.candidates)")
        base = self.retriever.score(batch).float()
        shown = recsys.mask_seen(base.clone(), batch.seen)
        top = shown.topk(self.candidates, dim=1).indices  # (B, C): what the reranker sees
        reranked = self.reranker.score(batch, top).float()
        # lift the candidates above every other item, keeping the reranker's order among them
        lift = base.masked_fill(~base.isfinite(), float("-inf")).amax(dim=1, keepdim=True) + 1
        lift = lift - reranked.amin(dim=1, keepdim=True)
        return base.scatter_(1, top, reranked + lift)
