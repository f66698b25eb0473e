"""Retrieve then rerank: a trained model proposes each user's top candidates and a reranker
reorders them, as LLM rerankers are used (the LLM never scores 10^4 items).

:class:`Rerank` is a ranking model like any other, so it is evaluated by the engine's full
ranking: the reranked candidates come first, in the reranker's order, and every other item
keeps the retriever's order below them, so every metric stays defined and comparable. Under
candidate-list evaluation (``data.candidates``) it reranks the given lists and needs no
retriever.

A reranker with trainable parameters (the cross-encoder, FIRST with LoRA) is trained by
``recsys fit``: each training window gets a candidate list (the retriever's top unseen items,
or uniformly drawn items without a retriever) that holds its target at a random place, and the
reranker's ``loss`` on it is minimised.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

import recsys


class Rerank(recsys.TrainableOnlyCheckpoint, recsys.SeqRecModule):
    """Retriever's top-``top_n`` unseen items, reordered by ``reranker``.

    Args:
        num_items: catalog size N (linked from the data).
        reranker: a :class:`recsys.Reranker` (by ``class_path``; ``recsys.get_rerankers()`` lists them).
        retriever: a trained dense model's checkpoint (``.../checkpoints/best-*.ckpt``), frozen. Under
            candidate lists (``data.candidates``) it is optional and only orders each list before
            the reranker sees it (best first), as a first stage would.
        top_n: how many of the retriever's items the reranker reorders, and the length of each
            training window's list (named apart from ``data.candidates``, the candidate-list protocol).
        lr, weight_decay, metrics, ks, ties: as :class:`recsys.RecModule` (lr: the reranker's).

    A reranker without trainable parameters is zero-shot: ``recsys fit`` runs no optimizer step
    (``recsys test`` evaluates it as it is).
    """

    def __init__(
        self,
        num_items: int,
        reranker: recsys.Reranker,
        retriever: str | None = None,
        top_n: int = 20,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        metrics: Sequence[str] = ("hit", "ndcg", "mrr"),
        ks: Sequence[int] = (5, 10, 20, 50),
        ties: Literal["pessimistic", "random"] = "pessimistic",
    ):
        super().__init__(num_items, lr=lr, weight_decay=weight_decay, metrics=metrics, ks=ks, ties=ties)
        if top_n < 2:
            raise ValueError(f"model.top_n must be >= 2, got {top_n}")
        self.save_hyperparameters(ignore=["reranker"])
        self.reranker = reranker
        self.top_n = min(top_n, num_items)
        self.retriever: recsys.RecModule | None = None
        if retriever is not None:
            model = recsys.RecModule.load_from_checkpoint(retriever, map_location="cpu")
            if not getattr(model, "is_dense", False):
                raise ValueError(f"model.retriever {retriever}: {type(model).__name__} has no score(); "
                                 "a retriever must score every item")
            self.retriever = model.eval().requires_grad_(False)
        for prefix, source in getattr(reranker, "backbone_prefixes", {}).items():
            self.track_backbone(source, "reranker." + prefix)  # frozen pretrained weights stay out of checkpoints
        # zero-shot rerankers train nothing: no optimizer, no step (Lightning's manual mode)
        self.automatic_optimization = any(p.requires_grad for p in self.reranker.parameters())

    def train(self, mode: bool = True) -> "Rerank":
        super().train(mode)
        if self.retriever is not None:
            self.retriever.eval()  # frozen: no dropout while the reranker trains
        return self

    def on_catalog(self, catalog) -> None:
        self.reranker.on_catalog(catalog)
        if self.retriever is not None:
            self.retriever.set_catalog(catalog)

    def training_candidates(self, batch: recsys.Batch) -> Tensor:
        """(B, C) a list per training window holding its target once, at a random place: the
        retriever's top C unseen items (the history masked) with the target put in if missing,
        or without a retriever the target among C - 1 items drawn uniformly."""
        target = batch.target
        rows, size = len(target), self.top_n
        with torch.no_grad():
            if self.retriever is not None:
                scores = recsys.mask_seen(self.retriever.score(batch).float(), batch.history)
                # seen items stay possible, below every unseen one: a catalog with fewer unseen items
                # than the list needs fills it with them, never with PAD or a second target
                scores = scores.nan_to_num(neginf=torch.finfo(scores.dtype).min)
                scores[:, 0] = float("-inf")
                scores[torch.arange(rows), target] = float("-inf")  # put back below, at a random place
                listed = scores.topk(size - 1, dim=1).indices
            else:
                weights = torch.ones(rows, self.num_items + 1, device=target.device)
                weights[:, 0] = 0  # PAD
                weights[torch.arange(rows), target] = 0
                listed = torch.multinomial(weights, size - 1)  # distinct items, uniform, never the target
        full = torch.cat([listed, target[:, None]], dim=1)  # the target last, then moved to a random place
        place = torch.randint(0, size, (rows, 1), device=target.device)
        column = torch.arange(size, device=target.device).expand(rows, size)
        source = torch.where(column < place, column, torch.where(column == place, size - 1, column - 1))
        return full.gather(1, source)

    def training_step(self, batch: recsys.Batch, batch_idx: int) -> Tensor | None:
        if not self.automatic_optimization:
            return None
        loss = self.reranker.loss(batch, self.training_candidates(batch))
        if loss is None:
            raise ValueError(f"{type(self.reranker).__name__} has trainable parameters but its loss() returns None")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.target))
        return loss

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
        # the engine's evaluation rule for every model: seen items are masked except the target, so
        # a repeat target can reach the reranked list as it can reach a single model's top
        shown = recsys.mask_seen(base.clone(), batch.seen, batch.target)
        top = shown.topk(self.top_n, dim=1).indices  # (B, C): what the reranker sees
        allowed = shown.gather(1, top).isfinite()  # False only where a row has fewer than C items to show
        reranked = self.reranker.score(batch, top).float().masked_fill(~allowed, float("-inf"))
        # lift the candidates above every other item, keeping the reranker's order among them
        lowest = reranked.masked_fill(~reranked.isfinite(), float("inf")).amin(dim=1, keepdim=True)
        lift = base.masked_fill(~base.isfinite(), float("-inf")).amax(dim=1, keepdim=True) + 1
        lift = lift - torch.where(lowest.isfinite(), lowest, torch.zeros_like(lowest))
        return base.scatter_(1, top, reranked + lift)
