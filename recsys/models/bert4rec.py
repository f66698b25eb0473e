"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained by cloze (masked-item) prediction.

Paper: F. Sun, J. Liu, J. Wu, C. Pei, X. Lin, W. Ou, P. Jiang, "BERT4Rec: Sequential
Recommendation with Bidirectional Encoder Representations from Transformer", CIKM 2019.
Code read: RecBole 1.2.1 ``recbole/model/sequential_recommender/bert4rec.py`` and its batch
transform ``MaskItemSequence`` (``recbole/data/transform.py``), and ``BERT4Rec.yaml``.

Architecture and defaults as RecBole's: item + learned position embeddings (position 0 = the
window's oldest item), LayerNorm and dropout, ``num_layers`` post-LN transformer blocks (GELU,
dropout 0.2 on hidden states and attention probabilities) attending in both directions (padding
keys masked), an output head Linear -> GELU -> LayerNorm, and scores = head output . item
embedding (tied) + a per-item output bias; N(0, 0.02) init; cloze ratio 0.2; full-item CE.

The mask token is its own id, N + 1, outside the catalog: the item table has N + 2 rows, but
:meth:`score` returns (B, N + 1) columns (PAD and items 1..N), so the mask token can never be
ranked or recommended, and the training softmax runs over items 1..N only (PAD excluded, unlike
RecBole, whose softmax keeps PAD: it is not an item).

Training windows (``train_windows = "tiled"``): each window holds ``data.max_len`` items of
history and its target; the cloze sequence of a window is the history with the target appended
(the oldest column dropped if that outgrows the model's ``max_len``), so the target is a cloze
position like any other and the sequence has exactly the shape of an evaluation input (the
history with the mask token appended, the same way). Tiles ``data.train_stride`` apart cover every
item but, when a window is full, its oldest one (dropped for the appended target); a stride below ``max_len`` makes them overlap, so each item is masked in several windows
per epoch, as the original code's ``dupe_factor`` copies (masks are redrawn every epoch anyway).
RecBole instead trains on every prefix of each sequence and masks only inside the item list
(the prefix's own target is never used), at ~``max_len`` times the compute per epoch.

Masking, per window (draws from torch's global generator, so ``seed_everything`` fixes them):
with probability ``ft_ratio`` only the last item (the target) is masked: a next-item sample,
exactly the evaluation task (RecBole's ``ft_ratio``, 0.5 by default, drawn there once per
batch, here per window); otherwise max(1, round(``mask_ratio`` * n)) of the window's n real
items, chosen uniformly without replacement, are replaced by the mask token (the authors'
count rule). RecBole draws each item independently with probability ``mask_ratio``, keeps at
most int(mask_ratio * L) targets, and drops a target at index 0 from its loss (its padding
value); windows here always have at least one target. The loss is the next-item loss
(:class:`~recsys.models.losses.ItemLoss`) at every masked position.

Inference: the mask token is appended after the history and its output is scored. When the
history already fills ``max_len`` the window is shifted left by one (its oldest item drops out;
a model ``max_len`` of ``data.max_len + 1`` keeps it); otherwise only a PAD goes. RecBole,
right-padding, always drops the first column, hence the oldest item even of a short history.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.losses import NextItemModule, item_logits
from recsys.models.sasrec import CausalSelfAttentionBlock, _init_normal


class BERT4Rec(NextItemModule):
    """Bidirectional transformer, cloze-trained.

    Args:
        num_items: catalog size N (linked from the data); the mask token is N + 1.
        max_len: longest window the positional embedding covers (>= data.max_len).
        d_model: embedding and hidden size (RecBole ``hidden_size``).
        num_layers: transformer blocks.
        num_heads: attention heads per block.
        ffn_dim: inner size of the feed-forward layer (RecBole ``inner_size``).
        dropout: dropout on embeddings, attention output and feed-forward output.
        attn_dropout: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialisation.
        mask_ratio: share of a window's items replaced by the mask token in a cloze sample.
        ft_ratio: probability that a training window is a next-item sample instead (only its
            last item, the target, masked).
        loss_type, num_negatives, negative_sampling, logq_correction, gbce_t: the next-item loss at the
            masked positions (:class:`~recsys.models.losses.ItemLoss`; the output bias is part of
            every item's score).
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
        dropout: float = 0.2,
        attn_dropout: float = 0.2,
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
        mask_ratio: float = 0.2,
        ft_ratio: float = 0.5,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        if not 0 < mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        if not 0 <= ft_ratio <= 1:
            raise ValueError(f"ft_ratio must be in [0, 1], got {ft_ratio}")
        self.max_len = max_len
        self.mask_ratio = mask_ratio
        self.ft_ratio = ft_ratio
        self.mask_id = num_items + 1
        self.item_embedding = nn.Embedding(num_items + 2, d_model, padding_idx=0)  # rows: PAD, 1..N, mask
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.embedding_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(d_model, num_heads, ffn_dim, dropout, attn_dropout, layer_norm_eps)
            for _ in range(num_layers)
        )
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.LayerNorm(d_model, eps=layer_norm_eps))
        self.apply(lambda module: _init_normal(module, init_std))
        self.output_bias = nn.Parameter(torch.zeros(num_items + 1))  # column 0 = PAD, never ranked

    def encode(self, sequence: Tensor, last_only: bool = False) -> Tensor:
        """(B, L) left-padded ids (items and mask tokens) -> (B, L, D) head outputs; every real
        position attends to every real position, before and after it.

        ``last_only``: return (B, 1, D), the newest position only.
        """
        length = sequence.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"history length {length} exceeds the model's max_len {self.max_len}: "
                f"set model.init_args.max_len >= data.init_args.max_len"
            )
        real = sequence != 0
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # 0 = the oldest real id
        x = self.embedding_dropout(self.embedding_norm(self.item_embedding(sequence) + self.position_embedding(positions)))
        # Real queries attend to every real key; padding queries to themselves only (no fully
        # masked row, hence no NaN); their outputs are never read.
        eye = torch.eye(length, dtype=torch.bool, device=sequence.device)
        allowed = (real[:, None, :] | eye)[:, None]  # (B, 1, L, L)
        for depth, block in enumerate(self.blocks, start=1):
            x = block(x, allowed, last_only=last_only and depth == len(self.blocks))
        return self.head(x)

    def _output_table(self) -> tuple[Tensor, Tensor]:
        """(N + 1, D) item vectors (PAD and items; the mask token's row left out) and (N + 1,) biases."""
        return self.item_embedding.weight[: self.num_items + 1], self.output_bias

    def _appended(self, history: Tensor, last: Tensor) -> Tensor:
        """(B, l) history, (B, 1) ids -> (B, min(l + 1, max_len)): ``last`` appended, the oldest
        column dropped when the window would outgrow ``max_len``."""
        sequence = torch.cat([history, last], dim=1)
        return sequence[:, 1:] if sequence.shape[1] > self.max_len else sequence

    def score(self, batch: Batch) -> Tensor:
        """(B, N + 1): the output at a mask token appended after the history."""
        mask = torch.full_like(batch.history[:, :1], self.mask_id)
        sequence = self._appended(batch.history, mask)
        hidden = self.encode(sequence, last_only=True)[:, -1]  # (B, D)
        items, bias = self._output_table()
        return item_logits(hidden, items) + bias.float()

    def cloze(self, sequence: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) left-padded item ids -> (inputs (B, L) with the mask token at the masked
        positions, masked (B, L) bool). See the module docstring for the rule."""
        real = sequence != 0
        count = (real.sum(dim=1).float() * self.mask_ratio).round().clamp(min=1).long()  # (B,)
        keys = torch.rand(sequence.shape, device=sequence.device).masked_fill(~real, 2.0)  # PAD never drawn
        order = keys.argsort(dim=1).argsort(dim=1)  # (B, L) rank of each position's key
        masked = order < count[:, None]
        next_item = torch.rand(len(sequence), device=sequence.device) < self.ft_ratio  # (B,)
        last = torch.zeros_like(masked)
        last[:, -1] = real[:, -1]
        masked = torch.where(next_item[:, None], last, masked)
        return sequence.masked_fill(masked, self.mask_id), masked

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss at the masked positions of each window's cloze sequence (target included)."""
        sequence = self._appended(batch.history, batch.target[:, None])
        inputs, masked = self.cloze(sequence)
        hidden = self.encode(inputs)[masked]  # (T, D)
        items, bias = self._output_table()
        # The bias joins the dot product as one more dimension (hidden . 1), so every ItemLoss
        # kind scores items exactly as score() does.
        ones = torch.ones_like(hidden[:, :1])
        return self.item_loss(torch.cat([hidden, ones], dim=1), sequence[masked], torch.cat([items, bias[:, None]], dim=1))
