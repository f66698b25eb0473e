"""Most-popular items: the floor every model must beat."""

from __future__ import annotations

import torch
from torch import Tensor

from recsys.data.batch import Batch
from recsys.models.no_gradient import NoGradientModule


class Pop(NoGradientModule):
    """Scores every item by its number of training interactions (the same list for everyone).

    Nothing is learned by gradient: the counts are read from the data module's catalog in
    ``on_catalog`` (training split only, at every stage, so ``recsys test`` needs no ``fit``) and
    kept as a buffer, so checkpoints carry them.
    """

    popularity: Tensor  #: (N + 1,) float buffer: the catalog's item popularity

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.register_buffer("popularity", torch.zeros(num_items + 1))

    def on_catalog(self, catalog) -> None:
        # Read at setup of any stage, so `recsys test --model Pop` needs no fit (without a data
        # module, e.g. a checkpoint loaded for serving, the saved counts are used).
        self.popularity.copy_(torch.as_tensor(catalog.popularity, dtype=torch.float))

    def score(self, batch: Batch) -> Tensor:
        return self.popularity.expand(len(batch.target), -1).clone()
