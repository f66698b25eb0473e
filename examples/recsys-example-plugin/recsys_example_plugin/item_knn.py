"""ItemKNN: items are similar when they occur close together in users' sequences."""

from __future__ import annotations

import torch
from torch import Tensor

import recsys


class ItemKNN(recsys.NoGradientModule):
    """Item-based nearest neighbours over the training sequences.

    Each training window adds ``decay ** (d - 1)`` to the co-occurrence of its target and the
    item ``d`` steps before it (``d <= window``), both ways. An item's score for a user is its
    cosine similarity with the user's last ``window`` items, weighted the same way; popularity
    breaks ties.

    Nothing is learned by gradient: the counts come from the training batches (never from the
    data module, which also holds the held-out targets) and live in a buffer, so checkpoints
    carry them. The (N + 1) x (N + 1) matrix suits catalogs up to tens of thousands of items.

    Args:
        num_items: catalog size N (linked from the data).
        window: how many of the most recent items co-occur with a target, and vote for the next.
        decay: weight of an item ``d`` steps back: ``decay ** (d - 1)``.
        shrink: added to the cosine's denominator, so pairs seen once or twice count less.
    """

    def __init__(self, num_items: int, window: int = 3, decay: float = 0.8, shrink: float = 1.0, **kwargs):
        super().__init__(num_items, **kwargs)  # metrics, ks, ties: the engine's arguments (no lr: no gradients)
        self.save_hyperparameters()  # so RecModule.load_from_checkpoint can rebuild the model
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window, self.decay, self.shrink = window, decay, shrink
        # No gradient steps (NoGradientModule): Lightning calls training_step and we count.
        self.register_buffer("counts", torch.zeros(num_items + 1, num_items + 1))

    def _recent(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) history -> its last ``window`` items (B, w) and their weights (0 for PAD)."""
        recent = history[:, -self.window:]
        steps_back = torch.arange(recent.shape[1] - 1, -1, -1, device=history.device, dtype=torch.float)
        return recent, self.decay**steps_back * (recent != 0)

    def on_train_epoch_start(self) -> None:
        self.counts.zero_()  # each epoch counts every training window once: more epochs change nothing

    def training_step(self, batch: recsys.Batch, batch_idx: int) -> None:
        recent, weights = self._recent(batch.history)
        targets = batch.target[:, None].expand_as(recent)
        self.counts.index_put_((recent, targets), weights, accumulate=True)
        self.counts.index_put_((targets, recent), weights, accumulate=True)

    def loss(self, batch: recsys.Batch) -> Tensor:
        raise NotImplementedError("ItemKNN counts co-occurrences in training_step; it has no loss")

    def score(self, batch: recsys.Batch) -> Tensor:
        recent, weights = self._recent(batch.history)
        occurrences = self.counts.sum(1)  # (N + 1,)
        norm = (occurrences[recent][..., None] * occurrences).sqrt() + self.shrink  # (B, w, N + 1)
        scores = (weights[..., None] * self.counts[recent] / norm).sum(1)  # (B, N + 1), a new tensor
        return scores + 1e-6 * occurrences / occurrences.max().clamp(min=1)
