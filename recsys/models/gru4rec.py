"""GRU4Rec: a GRU over the item history, scored against the item embedding table.

Paper: B. Hidasi, A. Karatzoglou, L. Baltrunas, D. Tikk, "Session-based Recommendations with
Recurrent Neural Networks", ICLR 2016 (and Y. K. Tan et al., "Improved Recurrent Neural Networks
for Session-based Recommendations", DLRS 2016, which RecBole cites for its version).
Code read: RecBole 1.2.1, ``recbole/model/sequential_recommender/gru4rec.py`` and
``recbole/properties/model/GRU4Rec.yaml``; this is our own implementation of that architecture.

Architecture and defaults as RecBole's: item embedding (d = 64) -> dropout (0.3) -> a GRU stack
without biases (hidden 128, 1 layer) -> a dense layer back to d -> dot product with the item
embedding table (tied input/output), full softmax cross-entropy. Initialisation as RecBole's:
Xavier-normal embeddings, Xavier-uniform GRU weights, PyTorch's default for the dense layer.

Differences from RecBole, and why:

- Training. RecBole makes one training example per target (the prefix before it) and reads the
  GRU output at the last real item only. A GRU is causal, so here one forward pass over a
  ``tiled`` window computes the loss at every position the window's ``labels`` mark as a target
  (as our SASRec): each target is still trained once per epoch, with the same history the
  prefix would give when the window starts at the sequence's beginning (otherwise with the
  window's items as context, as RecBole's ``MAX_ITEM_LIST_LENGTH`` truncation does).
- Padding. RecBole right-pads and gathers the output at the last real index. Our histories are
  left-padded, so the last position is always the newest item; the PAD prefix must then leave
  the GRU state untouched. It does, exactly: PAD inputs are zeroed (whatever the PAD embedding
  row holds) and the GRU has no biases, so from the zero initial state every gate sees 0, the
  candidate state is tanh(0) = 0 and the state stays 0 until the first real item
  (``tests/test_rnn_cnn_models.py`` checks a padded history scores as the unpadded one).
- The PAD id is left out of the training softmax (the shared :class:`~recsys.models.losses.ItemLoss`),
  and its embedding row starts at zero; RecBole keeps it as a class.
- With ``num_layers > 1`` every layer's GRU weights get the Xavier-uniform init (RecBole only
  initialises the first layer's; the default has one layer, where the two agree).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.losses import NextItemModule, item_logits


class GRU4Rec(NextItemModule):
    """Recurrent next-item recommender.

    Args:
        num_items: catalog size (linked from the data).
        embedding_size: item embedding size d (also the size of the output vector).
        hidden_size: GRU state size.
        num_layers: stacked GRU layers.
        dropout: dropout on the item embeddings.
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
        dropout: float = 0.3,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.item_embedding = nn.Embedding(num_items + 1, embedding_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embedding_size, hidden_size, num_layers=num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(hidden_size, embedding_size)
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for name, weight in self.gru.named_parameters():
            if name.startswith("weight_"):
                nn.init.xavier_uniform_(weight)

    def encode(self, history: Tensor, last_only: bool = False) -> Tensor:
        """(B, L) left-padded item ids -> (B, L, d) output vectors; position t sees items <= t only.

        ``last_only``: (B, d), the newest position's only.
        """
        states = gru_states(self.gru, self.embedding_dropout(self.item_embedding(history)), history)  # (B, L, H)
        return self.dense(states[:, -1] if last_only else states)

    def score(self, batch: Batch) -> Tensor:
        return item_logits(self.encode(batch.history, last_only=True), self.item_embedding.weight)  # (B, N + 1)

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss at every position the window marks as a target (``batch.labels``), or
        at the last position when the batch has no per-position labels."""
        if batch.labels is None:
            hidden, labels = self.encode(batch.history, last_only=True), batch.target  # (B, d), (B,)
        else:
            valid = batch.labels != 0
            hidden, labels = self.encode(batch.history)[valid], batch.labels[valid]  # (T, d), (T,)
        return self.item_loss(hidden, labels, self.item_embedding.weight)


def gru_states(gru: nn.GRU, inputs: Tensor, history: Tensor) -> Tensor:
    """Run a bias-free batch-first ``gru`` over left-padded ``inputs`` (B, L, d) -> (B, L, H).

    PAD positions (``history == 0``) get zero inputs, so with no biases the state stays exactly
    zero through the PAD prefix: the state at each real position is the one the real items alone
    give (what packing the sequences would compute, without the packing).
    """
    if gru.bias:
        raise ValueError("gru_states needs a GRU without biases (bias=False) to skip the PAD prefix exactly")
    real = (history != 0).unsqueeze(-1).to(inputs.dtype)  # (B, L, 1)
    states, _ = gru(inputs * real)
    return states
