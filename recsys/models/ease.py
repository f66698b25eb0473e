"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): a closed-form
item-item linear model. Not sequential: a history is scored as a set of items, order ignored.

With X the (users x items) binary matrix of training interactions and G = XᵀX:

    P = (G + λI)⁻¹,   B = I - P · diag(1 / diag(P))   (so B_ij = -P_ij / P_jj, and diag(B) = 0),
    score(history) = x · B,  x the history's binary item vector.

Code read (not copied): RecBole 1.2.1 ``recbole/model/general_recommender/ease.py`` (the same
formula; ``reg_weight`` = λ, default 250, which is this class's default) and the paper's
listing. Differences from RecBole and why:

- X is binary (RecBole's ``inter_matrix`` adds up repeated interactions of a user with an item).
- The scored vector x is the batch's history window (the last ``data.max_len`` items before the
  target, which at test time includes the validation item), as every model of this engine
  scores; RecBole, a general recommender there, scores a user's training row of X. The configs
  use SASRec's window (ML-100k: the last 50 items), which on ML-100k validation beat scoring
  the whole history (NDCG@10 0.093 vs 0.082 at λ = 250): recent items predict the next one better.
- X comes from the first training epoch's batches (the training sequences only: for ``loo``,
  never a validation or test target); see :class:`~recsys.models.sknn.InteractionSetModule`.

B is an (N + 1, N + 1) buffer (row and column 0, PAD, are zero), so checkpoints carry it; the
inversion is O(N³) in float64 (seconds for a few thousand items). One device only, like Pop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recsys.data.batch import Batch
from recsys.models.sknn import InteractionSetModule


def ease_weights(gram: Tensor, reg: float) -> Tensor:
    """(M, M) Gram matrix XᵀX -> (M, M) EASE weights B (float64 inside, diagonal 0)."""
    p = torch.linalg.inv(gram.double() + reg * torch.eye(len(gram), dtype=torch.float64, device=gram.device))
    b = -p / p.diagonal()[None, :]
    b.fill_diagonal_(0.0)
    return b


class EASE(InteractionSetModule):
    """Embarrassingly shallow autoencoder.

    Args:
        num_items: catalog size (linked from the data).
        reg_weight: λ, the L2 regularisation added to the Gram matrix's diagonal (RecBole's
            default 250; Steck uses 500 on ML-20M and Netflix).
    """

    weights: Tensor  #: (N + 1, N + 1) float buffer: B, PAD row and column 0
    _CHUNK = 4096  #: users per dense block of X when computing XᵀX

    def __init__(self, num_items: int, reg_weight: float = 250.0, **kwargs):
        super().__init__(num_items, **kwargs)
        if reg_weight <= 0:
            raise ValueError(f"reg_weight must be > 0 (G + λI must be invertible), got {reg_weight}")
        self.save_hyperparameters()
        self.reg_weight = reg_weight
        self.register_buffer("weights", torch.zeros(num_items + 1, num_items + 1))

    def fit_interactions(self, users: Tensor, items: Tensor) -> None:
        rows = torch.unique(users, return_inverse=True)[1]  # 0..U-1
        gram = torch.zeros(self.num_items, self.num_items, dtype=torch.float64, device=items.device)
        for start in range(0, int(rows.max()) + 1, self._CHUNK):  # XᵀX, a block of users at a time
            block = (rows >= start) & (rows < start + self._CHUNK)
            x = torch.zeros(self._CHUNK, self.num_items, dtype=torch.float64, device=items.device)
            x[rows[block] - start, items[block] - 1] = 1.0
            gram += x.T @ x
        self.weights.zero_()
        self.weights[1:, 1:] = ease_weights(gram, self.reg_weight).to(self.weights.dtype)

    def score(self, batch: Batch) -> Tensor:
        x = torch.zeros(len(batch.history), self.num_items + 1, device=batch.history.device)
        if not self.require_fitted():
            return x
        x.scatter_(1, batch.history, 1.0)
        x[:, 0] = 0.0
        return x @ self.weights  # (B, N + 1)
