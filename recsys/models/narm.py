"""NARM: a GRU encoder with a global (last state) and a local (attention) summary of the history.

Paper: J. Li, P. Ren, Z. Chen, Z. Ren, T. Lian, J. Ma, "Neural Attentive Session-based
Recommendation", CIKM 2017. Code read: RecBole 1.2.1,
``recbole/model/sequential_recommender/narm.py`` and ``recbole/properties/model/NARM.yaml``;
this is our own implementation of that architecture.

Architecture and defaults as RecBole's (embedding_size 64, hidden_size 128, 1 GRU layer,
dropout 0.25 on the embeddings and 0.5 on the concatenated summary, full cross-entropy):
the item embeddings go through a bias-free GRU giving states h_1..h_t. The global encoder is the
last state, c_g = h_t. The local encoder attends over every state with h_t as the query,
alpha_j = v^T sigmoid(A_1 h_j + A_2 h_t) (unnormalised, as the paper and RecBole), zero on PAD
positions, and c_l = sum_j alpha_j h_j. The bilinear decoder is a linear map B of
[c_l; c_g] (2H) to the item embedding size, and items are scored by the dot product with the
(tied) item embedding table. Xavier-normal init of embeddings and linear layers, PyTorch's
default for the GRU, as RecBole.

Differences from RecBole, and why:

- Training. RecBole makes one training example per target (the prefix before it) and runs the
  GRU and the attention on each prefix. The GRU is causal, so here one forward pass over a
  ``tiled`` window gives h_1..h_L, and for every position t the window's ``labels`` mark as a
  target the summary is computed from them directly: c_g = h_t, c_l = sum_{j <= t} alpha_tj h_j
  with alpha_tj = v^T sigmoid(A_1 h_j + A_2 h_t), masked to j <= t and to real items (an
  (L, L) causal attention per window, no GRU re-run per prefix). Each target's loss is exactly
  the one the prefix ending at t gives (``tests/test_rnn_cnn_models.py`` checks it), and each
  target is still trained once per epoch; its history is the window's items up to t (the whole
  prefix when the window starts at the sequence's beginning, otherwise truncated as RecBole's
  ``MAX_ITEM_LIST_LENGTH`` does). The embedding dropout mask is drawn once per window (shared
  by its prefixes), the summary dropout once per target.
- Padding. RecBole right-pads and gathers h_t at the last real index; our histories are
  left-padded, so h_t is the last position's state, and the PAD prefix leaves the GRU state at
  exactly zero (zeroed PAD inputs, no biases: see :func:`recsys.models.gru4rec.gru_states`), so
  every state is the one the real items alone give. The attention's PAD mask is kept as in the
  paper; with zero PAD states it is redundant (a masked position contributes alpha_j * 0).
- The PAD id is left out of the training softmax (:class:`~recsys.models.losses.ItemLoss`) and
  its embedding row starts at zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.gru4rec import gru_states
from recsys.models.losses import NextItemModule, item_logits


class NARM(NextItemModule):
    """Neural attentive session-based recommendation.

    Args:
        num_items: catalog size (linked from the data).
        embedding_size: item embedding size d (also the size of the output vector).
        hidden_size: GRU state size H.
        num_layers: stacked GRU layers.
        dropout_probs: two dropout rates: on the item embeddings, and on [c_local; c_global].
        loss_type, num_negatives, negative_sampling, logq_correction, gbce_t: the next-item
            loss (:class:`~recsys.models.losses.ItemLoss`); ``ce`` = full softmax, as RecBole.
    """

    train_windows = "tiled"

    def __init__(
        self,
        num_items: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout_probs: Sequence[float] = (0.25, 0.5),
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        if len(dropout_probs) != 2:
            raise ValueError(f"dropout_probs must hold two rates (embeddings, summary), got {list(dropout_probs)}")
        self.save_hyperparameters()
        self.hparams["dropout_probs"] = [float(p) for p in dropout_probs]  # a plain list in the checkpoint
        self.item_embedding = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(dropout_probs[0])
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers=num_layers, bias=False, batch_first=True)
        self.attention_key = nn.Linear(hidden_size, hidden_size, bias=False)  # A_1, applied to each h_j
        self.attention_query = nn.Linear(hidden_size, hidden_size, bias=False)  # A_2, applied to h_t
        self.attention_weight = nn.Linear(hidden_size, 1, bias=False)  # v
        self.summary_dropout = nn.Dropout(dropout_probs[1])
        self.decoder = nn.Linear(2 * hidden_size, embedding_size, bias=False)  # B
        for module in self.modules():
            if isinstance(module, (nn.Embedding, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def _states(self, history: Tensor) -> Tensor:
        """(B, L) left-padded item ids -> (B, L, H) GRU states (exactly zero on the PAD prefix)."""
        return gru_states(self.gru, self.embedding_dropout(self.item_embedding(history)), history)

    def encode(self, history: Tensor) -> Tensor:
        """(B, L) left-padded item ids -> (B, d): the output vector after the newest item."""
        newest = torch.zeros_like(history, dtype=torch.bool)
        newest[:, -1] = True
        return self.encode_at(history, newest)  # (B, d)

    def encode_at(self, history: Tensor, at: Tensor) -> Tensor:
        """(B, L) left-padded item ids, (B, L) bool positions -> (T, d): the output vector after
        each chosen position t (row-major order, as ``tensor[at]``), from items <= t only.

        One GRU pass per window; the local encoder at t attends over h_1..h_t with query h_t.
        Queries run from the first column holding a chosen position (a tiled window's labels are
        its newest ``stride`` positions), so the (B, L', L, H) energies cover no more than needed.
        """
        states = self._states(history)  # (B, L, H)
        length = history.shape[1]
        first = int(at.any(dim=0).nonzero()[0]) if at.any() else length  # oldest queried position
        query = states[:, first:]  # (B, L', H): c_global at each t >= first, and the attention's query
        positions = torch.arange(length, device=history.device)
        earlier = positions[None] <= positions[first:, None]  # (L', L): j <= t
        allowed = (earlier[None] & (history != 0)[:, None]).to(states.dtype)  # (B, L', L): and j a real item
        energy = torch.sigmoid(self.attention_key(states)[:, None] + self.attention_query(query)[:, :, None])  # (B, L', L, H)
        alpha = self.attention_weight(energy).squeeze(-1) * allowed  # (B, L', L)
        local = alpha @ states  # (B, L', H): sum_j alpha_tj h_j
        summary = torch.cat([local, query], dim=-1)[at[:, first:]]  # (T, 2H)
        return self.decoder(self.summary_dropout(summary))  # (T, d)

    def score(self, batch: Batch) -> Tensor:
        return item_logits(self.encode(batch.history), self.item_embedding.weight)  # (B, N + 1)

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss at every position the window marks as a target (``batch.labels``), or
        at the last position when the batch has no per-position labels."""
        if batch.labels is None:
            hidden, labels = self.encode(batch.history), batch.target  # (B, d), (B,)
        else:
            valid = batch.labels != 0
            hidden, labels = self.encode_at(batch.history, valid), batch.labels[valid]  # (T, d), (T,)
        return self.item_loss(hidden, labels, self.item_embedding.weight)
