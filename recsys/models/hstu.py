"""HSTU (Zhai et al., ICML 2024, "Actions Speak Louder than Words: Trillion-Parameter Sequential
Transducers for Generative Recommendations", https://arxiv.org/abs/2402.17152): a causal stack
of Hierarchical Sequential Transduction Units over the item history.

Read to understand (not copied): meta-recsys/generative-recommenders, the research code the
paper's MovieLens numbers come from (``generative_recommenders/research/modeling/sequential/
hstu.py``: ``SequentialTransductionUnitJagged``, ``RelativeBucketedTimeAndPositionBasedBias``,
``HSTU``; ``input_features_preprocessors.py``, ``output_postprocessors.py``,
``losses/sampled_softmax.py``, ``configs/ml-1m/hstu-sampled-softmax-n128-final.gin``).
RecBole 1.2.1 has no HSTU, so the reference here is that code. One unit, on x (B, L, D)::

    U, V, Q, K = split(SiLU(LayerNorm(x) @ W_uvqk))        # W_uvqk has no bias
    A_ij       = SiLU(Q_i . K_j + rab(i - j)) / n * [j <= i, j real]   # pointwise, no softmax
    x          = x + Linear(Dropout(LayerNorm(A @ V) * U))  # no feed-forward layer

(the LayerNorms have no affine parameters; no 1/sqrt(d) scaling, as the reference.) Before the
first unit: ``item_emb * sqrt(D) + absolute position embedding``, dropout, padding zeroed. After
the last: the hidden state of each position is scored by dot product with the item table (tied
to the input embeddings), divided by ``temperature``; with ``l2_norm`` both sides are
L2-normalised first (cosine scores), as the reference does.

Differences from the reference, and why:

* Time bias: the reference adds to the bias a learned weight per bucket of the time gap
  ``floor(ln(max(|ts(i+1) - ts(j)|, 1)) / 0.301)`` (129 buckets). Our :class:`~recsys.Batch` carries
  no timestamps, so only the relative *position* bias is implemented; the time part needs
  timestamps in the batch (a follow-up to the data pipeline). Without timestamps the reference
  adds no relative bias at all; we keep the position part.
* Position bias: the reference's position part is not bucketed: one weight per offset j - i
  of the padded length (2N - 1 weights, the half with j > i always masked). We keep one weight
  per causal offset i - j in 0..max_len - 1 (the same function, without the dead half).
* ``n``: the reference divides by its fixed padded length (max_sequence_len + outputs = 211 on
  ML-1M); we divide by the model's ``max_len``, also fixed, so a position's output does not
  depend on how much padding its window has. Padding here is on the left (the reference's
  jagged sequences are padded on the right, after the causal part), so padded keys are masked
  explicitly; absolute positions count from the window's oldest real item, as the reference's.
* Loss: the shared :class:`~recsys.models.losses.ItemLoss`, default full softmax
  cross-entropy (``ce``) over every item, as our other models, instead of the reference's
  sampled softmax with 128 uniform negatives (``loss_type: sampled_softmax, num_negatives:
  128, logq_correction: false`` selects that). Scores default to the plain dot product
  (``l2_norm: false, temperature: 1``), the scoring SASRec uses here, so the two compare with
  only the encoder changed; it also trained faster on ML-100k with full CE (3 epochs, seed 42:
  test NDCG@10 0.084, against 0.076 with the reference's cosine / 0.05). ``l2_norm: true,
  temperature: 0.05`` gives the reference's scoring.
* Optimiser: the engine's Adam (betas 0.9, 0.999) instead of AdamW with betas (0.9, 0.98)
  (weight decay 0 in both); the reference's attention-dropout argument is never applied by it
  and is not exposed here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.losses import NextItemModule, item_logits


class RelativePositionBias(nn.Module):
    """A learned scalar per causal offset: ``bias[i, j] = w[i - j]`` for ``j <= i``, 0 above
    the diagonal (those pairs are masked anyway). Offsets range over 0..max_len - 1."""

    def __init__(self, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len).normal_(0.0, 0.02))

    def forward(self, length: int) -> Tensor:
        """-> (L, L) bias for a window of ``length`` <= max_len positions."""
        positions = torch.arange(length, device=self.weight.device)
        offset = positions[:, None] - positions[None, :]  # (L, L): i - j
        return torch.where(offset >= 0, self.weight[offset.clamp(min=0)], torch.zeros((), device=offset.device))


class HSTUBlock(nn.Module):
    """One sequential transduction unit (pointwise-attention block), see the module docstring."""

    def __init__(self, d_model: int, num_heads: int, attention_dim: int, linear_dim: int, dropout: float,
                 max_len: int, relative_bias: bool, eps: float):
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.attention_dim, self.linear_dim = attention_dim, linear_dim
        self.max_len, self.eps = max_len, eps
        self.uvqk = nn.Parameter(torch.empty(d_model, num_heads * (2 * linear_dim + 2 * attention_dim)).normal_(0.0, 0.02))
        self.out = nn.Linear(num_heads * linear_dim, d_model)
        nn.init.xavier_uniform_(self.out.weight)
        self.dropout = nn.Dropout(dropout)
        self.bias = RelativePositionBias(max_len) if relative_bias else None

    def forward(self, x: Tensor, allowed: Tensor, last_only: bool = False) -> Tensor:
        """x: (B, L, D); allowed: (B, L, L) bool, True where query i may attend to key j.

        Returns (B, L, D), or (B, 1, D) for the last position only (``last_only``).
        """
        b, length, _ = x.shape
        h, dqk, dv = self.num_heads, self.attention_dim, self.linear_dim
        projected = F.silu(F.layer_norm(x, (self.d_model,), eps=self.eps) @ self.uvqk)
        u, v, q, k = projected.split([h * dv, h * dv, h * dqk, h * dqk], dim=-1)
        weights = torch.einsum("bihd,bjhd->bhij", q.view(b, length, h, dqk), k.view(b, length, h, dqk))  # (B, H, L, L)
        if self.bias is not None:
            weights = weights + self.bias(length)
        if last_only:
            weights, allowed, u, x = weights[:, :, -1:], allowed[:, -1:], u[:, -1:], x[:, -1:]
        # Pointwise: each weight on its own, normalised by the fixed max_len, not by a softmax.
        weights = F.silu(weights) / self.max_len * allowed[:, None]
        attended = torch.einsum("bhij,bjhd->bihd", weights, v.view(b, length, h, dv)).reshape(b, -1, h * dv)
        gated = F.layer_norm(attended, (h * dv,), eps=self.eps) * u
        return x + self.out(self.dropout(gated))


class HSTU(NextItemModule):
    """Hierarchical Sequential Transduction Units, causal, trained at every labelled position.

    Args:
        num_items: catalog size (linked from the data).
        max_len: longest history (>= data.max_len): size of the position tables and the fixed
            attention normaliser n.
        d_model: item embedding and hidden size (50 in the reference's MovieLens configs).
        num_layers: HSTU blocks (2; 8 in the reference's "large").
        num_heads: attention heads (1; 2 in "large").
        attention_dim: size of Q and K per head (default d_model // num_heads).
        linear_dim: size of U and V per head (default d_model // num_heads).
        dropout: dropout on the input embeddings (the reference's ``dropout_rate``).
        linear_dropout: dropout before each block's output projection (``linear_dropout_rate``).
        relative_bias: add the learned relative position bias inside the attention SiLU.
        l2_norm: score with cosine similarity: L2-normalise the hidden state and the item
            embeddings (the reference's ``l2_norm`` user embedding and ``item_l2_norm``).
        temperature: scores are divided by it (0.05 in the reference, with ``l2_norm``;
            1.0 with plain dot products).
        layer_norm_eps: LayerNorm and L2-normalisation epsilon.
        loss_type, num_negatives, negative_sampling, logq_correction, gbce_t: the shared
            :class:`~recsys.models.losses.ItemLoss`.
    """

    train_windows = "tiled"

    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        d_model: int = 50,
        num_layers: int = 2,
        num_heads: int = 1,
        attention_dim: int | None = None,
        linear_dim: int | None = None,
        dropout: float = 0.2,
        linear_dropout: float = 0.2,
        relative_bias: bool = True,
        l2_norm: bool = False,
        temperature: float = 1.0,
        layer_norm_eps: float = 1e-6,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if attention_dim is None or linear_dim is None:
            if d_model % num_heads:
                raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads}), "
                                 "or give attention_dim and linear_dim")
        self.max_len, self.d_model = max_len, d_model
        self.l2_norm, self.temperature, self.eps = l2_norm, temperature, layer_norm_eps
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        nn.init.trunc_normal_(self.item_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.position_embedding = nn.Embedding(max_len, d_model)
        nn.init.xavier_normal_(self.position_embedding.weight)  # as the reference's reset_params
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            HSTUBlock(d_model, num_heads, attention_dim or d_model // num_heads, linear_dim or d_model // num_heads,
                      linear_dropout, max_len, relative_bias, layer_norm_eps)
            for _ in range(num_layers)
        )

    def encode(self, history: Tensor, last_only: bool = False) -> Tensor:
        """(B, L) left-padded item ids -> (B, L, D) hidden states (not yet L2-normalised);
        position t sees the real items at positions <= t only. ``last_only``: (B, 1, D)."""
        b, length = history.shape
        if length > self.max_len:
            raise ValueError(
                f"history length {length} exceeds the model's max_len {self.max_len}: "
                f"set model.init_args.max_len >= data.init_args.max_len"
            )
        real = history != 0  # (B, L)
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # 0 = the window's oldest real item
        x = self.item_embedding(history) * math.sqrt(self.d_model) + self.position_embedding(positions)
        x = self.embedding_dropout(x) * real[..., None]
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        allowed = causal & real[:, None, :]  # (B, L, L): earlier-or-same, real keys
        for depth, block in enumerate(self.blocks, start=1):
            x = block(x, allowed, last_only=last_only and depth == len(self.blocks))
        return x

    def _query(self, hidden: Tensor) -> Tensor:
        """(..., D) hidden states -> the query vectors scores are dot products with."""
        if self.l2_norm:
            hidden = F.normalize(hidden, dim=-1, eps=self.eps)
        return hidden / self.temperature

    def _items(self) -> Tensor:
        """(N + 1, D) the item table scores use (row 0 = PAD)."""
        items = self.item_embedding.weight
        return F.normalize(items, dim=-1, eps=self.eps) if self.l2_norm else items

    def score(self, batch: Batch) -> Tensor:
        hidden = self.encode(batch.history, last_only=True)[:, -1]  # (B, D)
        return item_logits(self._query(hidden), self._items())  # (B, N + 1)

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss at every position the window marks as a target (``batch.labels``), or
        at the last position only when the batch has no per-position labels."""
        if batch.labels is None:
            hidden, labels = self.encode(batch.history, last_only=True)[:, -1], batch.target  # (B, D), (B,)
        else:
            valid = batch.labels != 0
            hidden, labels = self.encode(batch.history)[valid], batch.labels[valid]  # (T, D), (T,)
        return self.item_loss(self._query(hidden), labels, self._items())
