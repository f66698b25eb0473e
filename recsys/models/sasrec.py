"""SASRec (Kang & McAuley, 2018): a causal self-attention encoder over the item history.

Same architecture and defaults as RecBole's SASRec (post-LayerNorm blocks, GELU, dropout 0.5,
N(0, 0.02) init, output layer tied to the item embeddings) so the two can be compared, but
trained the efficient way: one forward pass over a window of L items computes the loss at each
of the window's target positions (``batch.labels``: with ``tiled`` windows ``stride`` apart,
the newest ``stride`` positions; when windows overlap, the older positions are context only,
their targets belong to an earlier window), so one pass covers up to ``stride`` targets, not one. Unlike RecBole, the padding id is left
out of the training softmax: it is not an item, and keeping it only adds a logit to push down.

The loss is the shared :class:`~recsys.models.losses.ItemLoss` (``loss_type`` ce |
sampled_softmax | bce | gbce): full softmax by default, sampled softmax with uniform or
in-batch negatives and logQ correction for large catalogs, SASRec's original BCE, or gSASRec's
gBCE (Petrov & Macdonald, RecSys 2023; gSASRec is this model with ``loss_type: gbce``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.losses import NextItemModule, item_logits


class CausalSelfAttentionBlock(nn.Module):
    """Post-LN transformer block: x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, d_model))
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, x: Tensor, allowed: Tensor, last_only: bool = False) -> Tensor:
        """x: (B, L, D); allowed: (B, 1, L, L) bool, True where query i may attend to key j.

        Returns (B, L, D), or (B, 1, D) for the last position only (``last_only``: scoring needs
        nothing else, and skipping the other queries halves the cost of the final block).
        """
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, allowed, x = q[:, :, -1:], allowed[:, :, -1:], x[:, -1:]
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = self.norm1(x + self.dropout(self.out(attended.transpose(1, 2).reshape(b, q.shape[2], d))))
        return self.norm2(x + self.dropout(self.ffn(x)))


class SASRec(NextItemModule):
    """Self-attentive sequential recommendation.

    Args:
        num_items: catalog size (linked from the data).
        max_len: longest history the positional embedding covers (>= data.max_len).
        d_model: embedding and hidden size.
        num_layers: transformer blocks.
        num_heads: attention heads per block.
        ffn_dim: inner size of the feed-forward layer.
        dropout: dropout on embeddings, attention output and feed-forward output.
        attn_dropout: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialisation.
        loss_type: ``ce`` = full softmax cross-entropy over all items; ``sampled_softmax`` =
            softmax over the target and ``num_negatives`` sampled items; ``bce`` = binary
            cross-entropy against ``num_negatives`` uniformly sampled negatives per target (the
            original SASRec); ``gbce`` = gSASRec's generalised BCE. See :mod:`recsys.models.losses`.
        num_negatives: negatives per batch (``sampled_softmax``) or per target (``bce``, ``gbce``).
        negative_sampling: ``uniform`` over items 1..N or ``in_batch`` (the batch's targets;
            ``sampled_softmax`` only).
        logq_correction: subtract the log sampling probability from sampled-softmax logits.
        gbce_t: gBCE's calibration parameter t in [0, 1].
        position_alignment: ``left``: position 0 is the oldest item in the window, so a target
            predicted mid-window during training looks exactly like a short history at
            evaluation (as RecBole); ``right``: the most recent item always has the last
            position (the original SASRec code).
    """

    train_windows = "tiled"

    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
        position_alignment: Literal["left", "right"] = "right",
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.max_len = max_len
        self.position_alignment = position_alignment
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.embedding_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(d_model, num_heads, ffn_dim, dropout, attn_dropout, layer_norm_eps)
            for _ in range(num_layers)
        )
        self.apply(lambda module: _init_normal(module, init_std))

    def encode(self, history: Tensor, last_only: bool = False) -> Tensor:
        """(B, L) left-padded item ids -> (B, L, D) hidden states; position t sees items <= t only.

        ``last_only``: return (B, 1, D), the most recent position only.
        """
        b, length = history.shape
        if length > self.max_len:
            raise ValueError(
                f"history length {length} exceeds the model's max_len {self.max_len}: "
                f"set model.init_args.max_len >= data.init_args.max_len"
            )
        if self.position_alignment == "left":
            # Position 0 = the window's oldest real item (as RecBole's right-padded sequences).
            positions = ((history != 0).long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L)
        else:
            # Right-aligned: the most recent item always has the last position (original SASRec).
            positions = torch.arange(self.max_len - length, self.max_len, device=history.device)[None]
        x = self.item_embedding(history) + self.position_embedding(positions)
        x = self.embedding_dropout(self.embedding_norm(x))
        real = history != 0
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        # Real queries attend to real, earlier keys. Padding queries attend to themselves only,
        # so no row is fully masked (which would give NaN); their outputs are never used.
        eye = torch.eye(length, dtype=torch.bool, device=history.device)
        allowed = (causal & real[:, None, :]) | eye
        for depth, block in enumerate(self.blocks, start=1):
            x = block(x, allowed[:, None], last_only=last_only and depth == len(self.blocks))
        return x

    def _logits(self, hidden: Tensor) -> Tensor:
        """(T, D) -> (T, N + 1) scores against every item, in float32 even under bf16/fp16
        autocast: rounding scores to half precision would create ties that change ranks."""
        return item_logits(hidden, self.item_embedding.weight)

    def score(self, batch: Batch) -> Tensor:
        return self._logits(self.encode(batch.history, last_only=True)[:, -1])  # (B, N + 1)

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss at every position the window marks as a target (``batch.labels``), or
        at the last position only when the batch has no per-position labels."""
        if batch.labels is None:
            hidden, labels = self.encode(batch.history, last_only=True)[:, -1], batch.target  # (B, D), (B,)
        else:
            hidden = self.encode(batch.history)  # (B, L, D)
            valid = batch.labels != 0
            hidden, labels = hidden[valid], batch.labels[valid]  # (T, D), (T,)
        return self.item_loss(hidden, labels, self.item_embedding.weight)  # (T, D), (T,), (N + 1, D)


def _init_normal(module: nn.Module, std: float) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(0.0, std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    if isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()
