"""FMLP-Rec (Zhou et al., WWW 2022): an all-MLP encoder whose token mixing is a learnable frequency filter.

Paper: K. Zhou, H. Yu, W. X. Zhao, J.-R. Wen, "Filter-enhanced MLP is All You Need for Sequential
Recommendation", WWW 2022. Not in RecBole 1.2.1; code read: the authors' Woeee/FMLP-Rec
(``models.py``, ``modules.py``, ``datasets.py``, ``trainers.py``, ``main.py``'s defaults).

Architecture as the authors': item + learned position embeddings over the window padded to
exactly ``max_len`` (positions 0..L-1 left to right, so the newest item has the last one;
padding positions are embedded too, as there), LayerNorm (eps 1e-12) and dropout, then
``num_layers`` filter-enhanced blocks, each

    x = LN(x + drop(irfft(rfft(x, dim=seq) * W, dim=seq)))     # W: (L//2 + 1, D) complex, learnable
    x = LN(x + drop(Linear(GELU(Linear(x)))))                   # inner size ``ffn_dim`` (4 D)

(FFTs ``ortho``-normalised, W initialised N(0, 0.02) in its real and imaginary parts, the rest
N(0, 0.02) with zero biases), and the newest position's output scored against the item
embeddings (tied). Defaults as ``main.py``: D = 64, 2 blocks, dropout 0.5, lr 1e-3, L = 50.

Training is at the last position only (``train_windows = "every"``: one window per target). The
filter is a circular convolution over the whole window, so every position's output reads every
other position, later ones included: a per-position (``tiled``) loss would let position t see
its own target. The authors' code does the same: ``FMLPRecDataset`` makes one sample per prefix
and ``cross_entropy`` reads ``seq_out[:, -1]`` only (the per-position mask is commented out), so
it does not leak. Differences: the authors keep only each user's last ``max_len`` training items
(here every training target makes a window), and train with BCE against one sampled negative;
here the loss is the shared :class:`~recsys.models.losses.ItemLoss`, ``ce`` by default (full
softmax over items, as the other baselines, so they compare one to one), ``bce`` with
``num_negatives: 1`` being the authors' loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.data.batch import Batch
from recsys.models.losses import NextItemModule, item_logits
from recsys.models.sasrec import _init_normal


class FilterLayer(nn.Module):
    """x (B, L, D) -> LN(x + drop(irfft(rfft(x) * W))): a learnable global filter along the sequence."""

    def __init__(self, length: int, d_model: int, dropout: float, eps: float, init_std: float):
        super().__init__()
        # (L//2 + 1, D, 2): real and imaginary parts of one complex gain per frequency and channel.
        self.filter = nn.Parameter(torch.randn(length // 2 + 1, d_model, 2) * init_std)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        # FFTs in float32: half-precision FFTs need power-of-two lengths.
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft(x.float(), dim=1, norm="ortho")  # (B, L//2 + 1, D)
            filtered = torch.fft.irfft(spectrum * torch.view_as_complex(self.filter), n=length, dim=1, norm="ortho")
        return self.norm(x + self.dropout(filtered.to(x.dtype)))


class FilterBlock(nn.Module):
    """A filter-enhanced block: the filter layer, then a post-LN point-wise feed-forward layer."""

    def __init__(self, length: int, d_model: int, ffn_dim: int, dropout: float, eps: float, init_std: float):
        super().__init__()
        self.filter = FilterLayer(length, d_model, dropout, eps, init_std)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, d_model))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.filter(x)
        return self.norm(x + self.dropout(self.ffn(x)))


class FMLPRec(NextItemModule):
    """Filter-enhanced MLP for sequential recommendation.

    Args:
        num_items: catalog size (linked from the data).
        max_len: the window length L the filters are sized for; shorter histories are left-padded
            to it (>= data.max_len).
        d_model: embedding and hidden size.
        num_layers: filter-enhanced blocks.
        ffn_dim: inner size of the feed-forward layer (the authors': 4 * d_model).
        dropout: dropout on embeddings, filter output and feed-forward output.
        layer_norm_eps: LayerNorm epsilon.
        init_std: standard deviation of the normal initialisation (filters included).
        loss_type, num_negatives, negative_sampling, logq_correction, gbce_t: the next-item loss
            (:class:`~recsys.models.losses.ItemLoss`); the authors': ``bce`` with 1 negative.
    """

    train_windows = "every"

    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        d_model: int = 64,
        num_layers: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.embedding_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            FilterBlock(max_len, d_model, ffn_dim, dropout, layer_norm_eps, init_std) for _ in range(num_layers)
        )
        self.apply(lambda module: _init_normal(module, init_std))

    def encode(self, history: Tensor) -> Tensor:
        """(B, l) left-padded ids, l <= max_len -> (B, max_len, D), the window left-padded to
        max_len first. Every output position reads every input position (circular filter)."""
        length = history.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"history length {length} exceeds the model's max_len {self.max_len}: "
                f"set model.init_args.max_len >= data.init_args.max_len"
            )
        history = F.pad(history, (self.max_len - length, 0))  # (B, L)
        positions = torch.arange(self.max_len, device=history.device)[None]
        x = self.embedding_dropout(self.embedding_norm(self.item_embedding(history) + self.position_embedding(positions)))
        for block in self.blocks:
            x = block(x)
        return x

    def score(self, batch: Batch) -> Tensor:
        return item_logits(self.encode(batch.history)[:, -1], self.item_embedding.weight)  # (B, N + 1)

    def loss(self, batch: Batch) -> Tensor:
        """Next-item loss of each window's target from its last position only (see the module
        docstring: the other positions see the future)."""
        if batch.labels is not None:
            raise ValueError(
                "FMLPRec trains at the last position only (its filter mixes every position, later ones "
                "included): use data.train_windows 'every' (or 'auto'), not 'tiled'"
            )
        return self.item_loss(self.encode(batch.history)[:, -1], batch.target, self.item_embedding.weight)
