"""Caser: horizontal and vertical convolutions over the "image" of the last L item embeddings.

Paper: J. Tang, K. Wang, "Personalized Top-N Sequential Recommendation via Convolutional
Sequence Embedding", WSDM 2018. Code read: RecBole 1.2.1,
``recbole/model/sequential_recommender/caser.py``, ``recbole/properties/model/Caser.yaml`` and
``recbole/model/loss.py`` (``RegLoss``); this is our own implementation of that architecture.

Architecture and defaults as RecBole's (embedding_size 64, n_h 8 horizontal filters per height,
n_v 4 vertical filters, dropout 0.4, reg_weight 1e-4, full cross-entropy, T = 1 target per
window): the L x d matrix E of the last L item embeddings goes through

- n_h horizontal filters of each height h = 1..L (width d), ReLU, max-pooled over the L - h + 1
  positions -> n_h * L features;
- n_v vertical filters (L x 1): each a weighted sum of the L rows -> n_v * d features;

concatenated, dropout, a fully-connected layer to d with ReLU (z), then [z; user embedding P_u]
through a second fully-connected layer to d with ReLU, scored by the dot product with the item
embedding table (RecBole's output layer; the paper and its code use a separate 2d-wide output
item table W' with a bias b' instead). The loss adds RecBole's regularisation:
reg_weight * (sum of the L2 norms, not squared, of the user and item tables, the vertical
filters, both fully-connected weights and every horizontal filter). Init as RecBole: embeddings
N(0, 1/d), Xavier-normal fully-connected weights with zero bias, PyTorch's default for the
convolutions.

L is the model's ``max_len`` and the data's ``max_len`` must not exceed it (configs set both to
the paper's L = 5 for MovieLens; RecBole's ``MAX_ITEM_LIST_LENGTH`` plays that role there, and its
docstring asks for a small value). A shorter history window is left-padded to L.

Users: Caser has one embedding per user, so it needs the number of users U (user indices are
1..U, 0 is unused). The data module has ``num_users``, but the CLI links only ``num_items``
into models, so ``num_users`` defaults to None: the user table is then built in ``setup()``
from the attached data module's ``num_users`` (before the optimizer is made) and the size is
recorded in the hyper-parameters, so a checkpoint restores it. Given explicitly, it is checked
against the data module's. A user index above it is an error, never a silent wrap.

Differences from RecBole, and why:

- Padding: our histories are left-padded (as the paper's own code), RecBole's right-padded. For
  histories of at least L items (most windows) the two agree; for shorter ones the vertical
  filters see the items at the newest positions here, at the oldest there. PAD rows of E are
  zero here (masked, whatever the PAD embedding row holds); RecBole's weight initialisation
  overwrites its padding row, so there PAD is a fixed random vector the filters do see.
- The PAD id is left out of the training softmax (:class:`~recsys.models.losses.ItemLoss`).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.losses import NextItemModule, item_logits


class Caser(NextItemModule):
    """Convolutional sequence embedding recommendation.

    Args:
        num_items: catalog size (linked from the data).
        num_users: number of users U (indices 1..U); None = the attached data module's
            ``num_users``, read at ``setup()``.
        max_len: L, the window of most recent items the convolutions see (>= data.max_len).
        embedding_size: d, the size of the user and item embeddings.
        n_h: horizontal filters per height (heights 1..L).
        n_v: vertical filters.
        dropout: dropout on the concatenated convolution features.
        reg_weight: weight of the L2-norm regularisation (RecBole's).
        loss_type, num_negatives, negative_sampling, logq_correction, gbce_t: the next-item
            loss (:class:`~recsys.models.losses.ItemLoss`); ``ce`` = full softmax, as RecBole.
    """

    train_windows = "every"

    def __init__(
        self,
        num_items: int,
        num_users: int | None = None,
        max_len: int = 5,
        embedding_size: int = 64,
        n_h: int = 8,
        n_v: int = 4,
        dropout: float = 0.4,
        reg_weight: float = 1e-4,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        if max_len < 1 or n_h < 1 or n_v < 1:
            raise ValueError(f"max_len, n_h and n_v must be >= 1, got {max_len}, {n_h}, {n_v}")
        if num_users is not None and num_users < 1:
            raise ValueError(f"num_users must be >= 1 (or null: read from the data), got {num_users}")
        self.save_hyperparameters()
        self.max_len, self.embedding_size, self.reg_weight = max_len, embedding_size, reg_weight
        self.item_embedding = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)
        self.vertical = nn.Conv2d(1, n_v, kernel_size=(max_len, 1))
        self.horizontal = nn.ModuleList(nn.Conv2d(1, n_h, kernel_size=(h, embedding_size)) for h in range(1, max_len + 1))
        self.features = nn.Linear(n_v * embedding_size + n_h * max_len, embedding_size)  # fc1
        self.output = nn.Linear(2 * embedding_size, embedding_size)  # fc2, over [z; P_u]
        self.dropout = nn.Dropout(dropout)
        for linear in (self.features, self.output):
            nn.init.xavier_normal_(linear.weight)
            nn.init.zeros_(linear.bias)
        self._init_embedding(self.item_embedding)
        self.user_embedding: nn.Embedding | None = None
        if num_users is not None:
            self._build_users(num_users)

    def _init_embedding(self, table: nn.Embedding) -> None:
        nn.init.normal_(table.weight, 0.0, 1.0 / self.embedding_size)
        with torch.no_grad():
            table.weight[0].zero_()

    def _build_users(self, num_users: int) -> None:
        self.user_embedding = nn.Embedding(num_users + 1, self.embedding_size, padding_idx=0)
        self._init_embedding(self.user_embedding)
        self.hparams["num_users"] = num_users  # saved with the checkpoint

    @property
    def num_users(self) -> int | None:
        """U, or None before the user table is built."""
        return None if self.user_embedding is None else self.user_embedding.num_embeddings - 1

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        users = getattr(datamodule, "num_users", None) if datamodule is not None else None
        if self.user_embedding is None:
            if users is None:
                raise ValueError("Caser needs num_users: attach a data module with num_users or set "
                                 "model.init_args.num_users")
            self._build_users(int(users))
        elif users is not None and int(users) != self.num_users:
            raise ValueError(f"Caser was built for num_users={self.num_users}, but the data has {users} users "
                             "(a checkpoint or config from another dataset or filter?)")

    def encode(self, history: Tensor, user: Tensor) -> Tensor:
        """(B, L') left-padded item ids (L' <= L) and (B,) user indices -> (B, d) output vectors."""
        if self.user_embedding is None:
            raise RuntimeError("Caser has no user table yet: give num_users, or run it under a Trainer with a data "
                               "module (setup() reads num_users from it)")
        if history.shape[1] > self.max_len:
            raise ValueError(f"history length {history.shape[1]} exceeds Caser's window L = max_len {self.max_len}: "
                             "set model.init_args.max_len >= data.init_args.max_len")
        if user.numel() and (int(user.max()) > self.num_users or int(user.min()) < 0):  # type: ignore[operator]
            bad = int(user.max()) if int(user.max()) > self.num_users else int(user.min())  # type: ignore[operator]
            raise ValueError(f"user index {bad} is outside 1..num_users = 1..{self.num_users}")
        history = F.pad(history, (self.max_len - history.shape[1], 0))  # (B, L), left-padded to L
        real = (history != 0).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        image = (self.item_embedding(history) * real).unsqueeze(1)  # (B, 1, L, d)
        vertical = self.vertical(image).flatten(1)  # (B, n_v * d)
        horizontal = [F.relu(conv(image)).squeeze(3).amax(dim=2) for conv in self.horizontal]  # L x (B, n_h)
        features = self.dropout(torch.cat([vertical, *horizontal], dim=1))
        z = F.relu(self.features(features))  # (B, d)
        return F.relu(self.output(torch.cat([z, self.user_embedding(user)], dim=1)))  # (B, d)

    def score(self, batch: Batch) -> Tensor:
        return item_logits(self.encode(batch.history, batch.user), self.item_embedding.weight)  # (B, N + 1)

    def loss(self, batch: Batch) -> Tensor:
        """Cross-entropy (or the configured item loss) of each window's target plus RecBole's
        L2-norm regularisation."""
        loss = self.item_loss(self.encode(batch.history, batch.user), batch.target, self.item_embedding.weight)
        if self.reg_weight:
            assert self.user_embedding is not None  # encode() checked
            weights = [self.user_embedding.weight, self.item_embedding.weight, self.vertical.weight,
                       self.features.weight, self.output.weight, *(cast(nn.Conv2d, conv).weight for conv in self.horizontal)]
            loss = loss + self.reg_weight * torch.stack([w.norm(2) for w in weights]).sum()
        return loss
