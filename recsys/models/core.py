"""CORE (Hou et al., SIGIR 2022): session and items in one representation space.

Paper: Y. Hou, B. Hu, Z. Zhang, W. X. Zhao, "CORE: Simple and Effective Session-based
Recommendation within Consistent Representation Space", SIGIR 2022.
Code read: RecBole 1.2.1 ``recbole/model/sequential_recommender/core.py`` and ``CORE.yaml``; the
authors' repository RUCAIBox/CORE (``core_trm.py``, ``props/core_trm.yaml``), which agree.

Representation-consistent encoder: the session vector is a weighted sum of the (session-dropped
out) item embeddings themselves, weights alpha = softmax over the window's real items of a
per-position logit, then L2-normalised; ``trm`` computes the logits with a causal transformer
(learned positions, position 0 = the window's oldest item, post-LN blocks, GELU) and a
Linear(D, 1); ``ave`` uses equal weights (the mean). Robust distance measuring: items are scored
by cosine (L2-normalised item embeddings, with ``item_dropout`` on the table in training)
divided by ``temperature``; full-item CE. Defaults as RecBole's (and the authors'): D = 64,
2 layers, 2 heads, inner 256, hidden and attention dropout 0.5, session and item dropout 0.2,
temperature 0.07, every parameter initialised uniform(-1/sqrt(D), 1/sqrt(D)) (LayerNorm weights
included: both codes re-initialise all parameters after the transformer's own init).

Differences from RecBole:

- Training windows are ``tiled`` (RecBole: every prefix, one target each): a position's logit
  depends only on the items up to it (causal attention), so the session vector of every prefix
  of a window comes out of one pass, alpha renormalised over that prefix; the loss covers every
  position ``batch.labels`` marks. A target is predicted from the same items, positions and
  weights as a prefix window of RecBole's would give it (its context may be shorter, as
  SASRec's: at least ``max_len - train_stride`` items).
- The training softmax leaves PAD out (RecBole's keeps it: it is not an item); the loss is the
  shared :class:`~recsys.models.losses.ItemLoss` with hidden = session / temperature and the
  item table = the normalised (dropped-out) embeddings, so sampled kinds score the same cosines.
- The PAD embedding row is zero (RecBole's uniform re-init fills it; it is never used there either).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.losses import NextItemModule, item_logits
from recsys.models.sasrec import CausalSelfAttentionBlock


class CORE(NextItemModule):
    """Consistent-representation session encoder with cosine scoring.

    Args:
        num_items: catalog size (linked from the data).
        max_len: longest history the positional embedding covers (>= data.max_len).
        d_model: embedding size (RecBole ``embedding_size``).
        dnn_type: ``trm`` (transformer-weighted sum) or ``ave`` (mean of the item embeddings).
        num_layers, num_heads, ffn_dim: the ``trm`` transformer's blocks, heads, inner size.
        dropout: ``trm``: dropout on its input embeddings, attention and feed-forward outputs.
        attn_dropout: ``trm``: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        sess_dropout: dropout on the session's item embeddings (both the sum and the weights read them).
        item_dropout: dropout on the item table the training loss scores against.
        temperature: cosine scores are divided by it.
        loss_type, num_negatives, negative_sampling, logq_correction, gbce_t: the next-item loss
            (:class:`~recsys.models.losses.ItemLoss`).
    """

    train_windows = "tiled"

    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        d_model: int = 64,
        dnn_type: Literal["trm", "ave"] = "trm",
        num_layers: int = 2,
        num_heads: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        sess_dropout: float = 0.2,
        item_dropout: float = 0.2,
        temperature: float = 0.07,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        if dnn_type not in ("trm", "ave"):
            raise ValueError(f"dnn_type must be 'trm' or 'ave', got {dnn_type!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.max_len = max_len
        self.dnn_type = dnn_type
        self.temperature = temperature
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.sess_dropout = nn.Dropout(sess_dropout)
        self.item_dropout = nn.Dropout(item_dropout)
        if dnn_type == "trm":
            self.position_embedding = nn.Embedding(max_len, d_model)
            self.embedding_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
            self.embedding_dropout = nn.Dropout(dropout)
            self.blocks = nn.ModuleList(
                CausalSelfAttentionBlock(d_model, num_heads, ffn_dim, dropout, attn_dropout, layer_norm_eps)
                for _ in range(num_layers)
            )
            self.weight_logit = nn.Linear(d_model, 1)
        bound = 1.0 / math.sqrt(d_model)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound)
            self.item_embedding.weight[0].zero_()

    def _logits(self, history: Tensor, x: Tensor) -> Tensor:
        """(B, L) ids and (B, L, D) their embeddings -> (B, L) weight logits; position t's depends
        on items <= t only."""
        if self.dnn_type == "ave":
            return torch.zeros_like(history, dtype=x.dtype)
        length = history.shape[1]
        real = history != 0
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # 0 = the window's oldest item
        h = self.embedding_dropout(self.embedding_norm(x + self.position_embedding(positions)))
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=history.device)
        allowed = ((causal & real[:, None, :]) | eye)[:, None]  # padding queries: themselves only
        for block in self.blocks:
            h = block(h, allowed)
        return self.weight_logit(h).squeeze(-1)

    def encode(self, history: Tensor, last_only: bool = False) -> Tensor:
        """(B, L) left-padded ids -> (B, L, D) L2-normalised session vectors, position t's over
        the window's items up to t (a padding position's is 0); ``last_only``: (B, 1, D)."""
        length = history.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"history length {length} exceeds the model's max_len {self.max_len}: "
                f"set model.init_args.max_len >= data.init_args.max_len"
            )
        x = self.sess_dropout(self.item_embedding(history))  # (B, L, D)
        logits = self._logits(history, x).float()  # (B, L)
        real = history != 0
        prefix = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()  # [t, j]: j <= t
        eye = torch.eye(length, dtype=torch.bool, device=history.device)
        if last_only:
            prefix, eye = prefix[-1:], eye[-1:]
        # Position t weighs the real items up to t. A padding position weighs itself only (no
        # empty softmax, hence no NaN): its embedding is PAD's, zero, so its session vector is 0.
        keep = (prefix[None] & real[:, None, :]) | eye[None]  # (B, T, L)
        alpha = logits[:, None, :].masked_fill(~keep, float("-inf")).softmax(dim=-1)
        session = alpha.to(x.dtype) @ x  # (B, T, D)
        return F.normalize(session, dim=-1)

    def _item_table(self) -> Tensor:
        """(N + 1, D) L2-normalised item embeddings (item dropout in training)."""
        return F.normalize(self.item_dropout(self.item_embedding.weight), dim=-1)

    def score(self, batch: Batch) -> Tensor:
        """(B, N + 1) cosine(session, item) / temperature."""
        session = self.encode(batch.history, last_only=True)[:, -1]
        return item_logits(session / self.temperature, self._item_table())

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss at every position ``batch.labels`` marks, or at the last position when
        the batch has no per-position labels (``every`` windows)."""
        if batch.labels is None:
            session, labels = self.encode(batch.history, last_only=True)[:, -1], batch.target  # (B, D), (B,)
        else:
            valid = batch.labels != 0
            session, labels = self.encode(batch.history)[valid], batch.labels[valid]  # (T, D), (T,)
        return self.item_loss(session / self.temperature, labels, self._item_table())
