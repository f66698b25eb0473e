"""The base of models with nothing to train by gradient: counts, neighbours, closed forms."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from recsys.data.batch import Batch
from recsys.metrics import DEFAULT_KS, DEFAULT_METRICS
from recsys.models.base import SeqRecModule


class _NothingToOptimize(torch.optim.Optimizer):
    """What ``configure_optimizers`` returns when there is nothing to optimise: Lightning needs
    an optimizer object (``None`` makes it warn on every run), and ``step`` is never called
    under manual optimization."""

    def __init__(self) -> None:
        super().__init__([torch.zeros(1)], {})

    def step(self, closure=None):
        return closure() if closure is not None else None


class NoGradientModule(SeqRecModule):
    """A model that learns without gradients (Pop's counts, SKNN's neighbours, EASE's closed
    form): no optimizer, no learning rate among its options (``--model.help`` does not offer
    ``lr``), no warning about either. Keep what it learns in buffers (``register_buffer``) so
    checkpoints carry it; read training data in ``training_step`` (the default does nothing)
    or in ``on_catalog``. Having no trainable parameters, it runs on one device (DDP refuses
    such modules).

    Args:
        num_items, metrics, ks, ties: as :class:`~recsys.RecModule`.
    """

    def __init__(
        self,
        num_items: int,
        metrics: Sequence[str] = DEFAULT_METRICS,
        ks: Sequence[int] = DEFAULT_KS,
        ties: Literal["pessimistic", "random"] = "pessimistic",
    ):
        super().__init__(num_items, metrics=metrics, ks=ks, ties=ties)
        self.automatic_optimization = False

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        return None

    def configure_optimizers(self):
        return _NothingToOptimize()
