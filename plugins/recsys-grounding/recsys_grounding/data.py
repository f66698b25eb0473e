"""Few-shot training sets: the data module's training windows, N of them drawn with a seed.

BIGRec trains on 1,024 examples taken from the shuffled training samples ("few-shot"). Here
that is a :class:`recsys.SeqDataModule` whose training loader serves a fixed random subset of
its usual training windows; validation, test and prediction are untouched, and every other
option (protocol, history length, masking) is the parent's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch.utils.data import DataLoader, Subset

import recsys


def sample_indices(total: int, samples: int | None, seed: int) -> Sequence[int]:
    """``samples`` distinct indices of ``range(total)``, sorted, drawn with ``seed``; all of them when
    ``samples`` is None, 0 or at least ``total``."""
    if not samples or samples >= total:
        return range(total)
    return sorted(np.random.default_rng(seed).choice(total, size=samples, replace=False).tolist())


class FewShotSeqDataModule(recsys.SeqDataModule):
    """A :class:`recsys.SeqDataModule` that trains on ``train_samples`` of its training windows.

    Args (besides the parent's):
        train_samples: N windows (BIGRec: 1,024); None or 0 = all of them.
        sample_seed: seed of the draw (BIGRec: the run seed, 0/1/2).
        min_history: only windows with at least this many history items are drawn from
            (BIGRec's movie data: 10, every window has a full history).
    """

    def __init__(self, train_samples: int | None = 1024, sample_seed: int = 0, min_history: int = 1, **kwargs):
        super().__init__(**kwargs)
        if train_samples is not None and train_samples < 0:
            raise ValueError(f"data.train_samples must be >= 0 (0 or null = all), got {train_samples}")
        if min_history < 1:
            raise ValueError(f"data.min_history must be >= 1, got {min_history}")
        self.train_samples, self.sample_seed, self.min_history = train_samples, sample_seed, min_history

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        windows = loader.dataset
        candidates = np.arange(len(windows))
        if self.min_history > 1:
            history = windows.__getitems__(candidates.tolist()).history
            candidates = candidates[(history != 0).sum(dim=1).numpy() >= self.min_history]
        if len(candidates) == 0:
            raise recsys.DataFormatError(f"{self.path}: no training window has data.min_history={self.min_history} items")
        chosen = candidates[list(sample_indices(len(candidates), self.train_samples, self.sample_seed))]
        self.train_indices = chosen  #: the windows trained on (indices into the parent's training windows)
        return DataLoader(Subset(windows, chosen.tolist()), batch_size=loader.batch_size, shuffle=True,
                          collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                          persistent_workers=loader.persistent_workers)
