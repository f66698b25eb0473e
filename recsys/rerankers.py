"""Rerankers: reorder a short list of candidate items per window (the second stage of
retrieve-then-rerank, or the whole model under candidate-list evaluation).

A reranker is a :class:`torch.nn.Module`, so one that is fine-tuned (FIRST with LoRA) trains
inside the model that holds it, and a zero-shot one simply has no trainable parameters. Plugins
register their classes through the ``register_rerankers`` hook (``recsys.get_rerankers()``
lists them); configs choose one by ``class_path`` like any nested class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recsys.data.batch import Batch
from recsys.data.catalog import Catalog


class Reranker(torch.nn.Module):
    """Scores each window's candidates: :meth:`score` ``(batch, candidates (B, C)) -> (B, C)``,
    higher = better, for item indices 1..N (0 = padding, scored anything: it is never ranked).

    :meth:`on_catalog` is called once with the item catalog before any scoring (item text for
    prompts: ``recsys.llm.render_items(catalog, template)``). :meth:`loss` trains a reranker that
    learns (``None``, the default: zero-shot). Read only ``batch.history``, ``batch.user`` and
    ``candidates`` when scoring, never ``batch.target``.
    """

    def on_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def score(self, batch: Batch, candidates: Tensor) -> Tensor:
        """(B, C) scores of ``candidates`` (B, C) int64 item indices, 0-padded."""
        raise NotImplementedError

    def loss(self, batch: Batch, candidates: Tensor) -> Tensor | None:
        """Scalar training loss on training windows whose ``candidates`` hold ``batch.target``;
        None: nothing to train."""
        return None
