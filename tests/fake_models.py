"""Models with known answers, registered by the ``fake_plugin`` fixture (tests only)."""

from __future__ import annotations

import torch
from torch import nn

import recsys


class OracleRec(recsys.SeqRecModule):
    """Scores the target highest: every metric must be 1.0."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.weight = nn.Parameter(torch.zeros(1))

    def loss(self, batch):
        return (self.weight**2).sum() + 0 * self.weight.sum()

    def score(self, batch):
        scores = torch.zeros(len(batch.target), self.num_items + 1)
        scores[torch.arange(len(batch.target)), batch.target] = 1.0
        return scores + 0 * self.weight


class ConstantRec(OracleRec):
    """Gives every item the same score: hit@k must be about k / N, not 1.0."""

    def score(self, batch):
        return torch.zeros(len(batch.target), self.num_items + 1) + 0 * self.weight


class EchoLast(OracleRec):
    """A generative model: recommends the last history item, then items 1, 2, ... (via recommend())."""

    score = recsys.SeqRecModule.score  # not dense

    def recommend(self, batch, k):
        ids = torch.arange(1, k + 1).repeat(len(batch.target), 1)
        ids[:, 0] = batch.history[:, -1]
        return ids, torch.linspace(1, 0, k).repeat(len(batch.target), 1)


class WrapsCheckpoint(OracleRec):
    """Loads another trained model by its path inside ``__init__`` (as RecLoRA loads its CRM)."""

    def __init__(self, num_items: int, inner_checkpoint: str, **kwargs):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.inner = recsys.RecModule.load_from_checkpoint(inner_checkpoint)


class ItemBiasCTR(recsys.CTRModule):
    """A CTR model with one logit per item (for CLI round trips)."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.bias = nn.Embedding(num_items + 1, 1)

    def logits(self, batch):
        return self.bias(batch.item).squeeze(-1)


class FakePlugin:
    __name__ = "fake-plugin"

    @recsys.hookimpl
    def register_models(self, register):
        register(OracleRec)
        register(ConstantRec)
        register(EchoLast)
        register(ItemBiasCTR)
        register(WrapsCheckpoint)


class Wordy:
    """An ``item_to_text`` plugin that answers for the tiny dataset only (None elsewhere)."""

    __name__ = "wordy"

    @recsys.hookimpl
    def item_to_text(self, item, dataset):
        return f"[{dataset}] {item['movie_title']}" if dataset == "tiny" else None
