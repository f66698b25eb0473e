"""Next-item losses shared by every model that scores items by a dot product with an item table.

A model produces one hidden state per training target, ``hidden`` (T, D), the targets ``labels``
(T,) in 1..N, and its output item table ``items`` (N + 1, D) (row 0 = PAD, never a target or a
negative). :class:`ItemLoss` turns them into a scalar loss, chosen by plain config values so a
checkpoint's hyper-parameters stay primitive (they load with ``weights_only=True``)::

    model:
      init_args:
        loss_type: sampled_softmax   # ce | sampled_softmax | bce | gbce
        num_negatives: 256

A model exposes the same four arguments (``loss_type``, ``num_negatives``, ``negative_sampling``,
``logq_correction``; plus ``gbce_t`` where gBCE applies) and builds ``ItemLoss(...)`` from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossType = Literal["ce", "sampled_softmax", "bce", "gbce"]
NegativeSampling = Literal["uniform", "in_batch"]
LOSS_TYPES: tuple[str, ...] = ("ce", "sampled_softmax", "bce", "gbce")


@dataclass(frozen=True)
class ItemLoss:
    """A next-item loss.

    Args:
        loss_type: ``ce`` = softmax cross-entropy over every item (exact; cost O(T·N·D));
            ``sampled_softmax`` = softmax over the target and ``num_negatives`` sampled items;
            ``bce`` = binary cross-entropy of the target against ``num_negatives`` sampled items;
            ``gbce`` = gSASRec's generalised BCE (Petrov & Macdonald, 2023), calibrated by ``gbce_t``.
        num_negatives: sampled negatives (not used by ``ce``).
        negative_sampling: ``uniform`` over items 1..N, or ``in_batch`` (the batch's other targets).
        logq_correction: subtract log Q(item) from sampled logits (the sampling probability),
            so sampled softmax estimates the full softmax without popularity bias.
        gbce_t: gBCE's calibration parameter t in [0, 1] (0 = plain BCE).
    """

    loss_type: LossType = "ce"
    num_negatives: int = 1
    negative_sampling: NegativeSampling = "uniform"
    logq_correction: bool = True
    gbce_t: float = 0.75

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.negative_sampling not in ("uniform", "in_batch"):
            raise ValueError(f"negative_sampling must be 'uniform' or 'in_batch', got {self.negative_sampling!r}")
        if self.loss_type != "ce" and self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1 for loss_type {self.loss_type!r}, got {self.num_negatives}")

    def __call__(self, hidden: Tensor, labels: Tensor, items: Tensor) -> Tensor:
        """hidden (T, D), labels (T,) in 1..N, items (N + 1, D) -> scalar loss (float32)."""
        if self.loss_type == "ce":
            return full_softmax_loss(hidden, labels, items)
        raise NotImplementedError(f"loss_type {self.loss_type!r}")


def item_logits(hidden: Tensor, items: Tensor) -> Tensor:
    """(T, D) x (N + 1, D) -> (T, N + 1) scores in float32 even under bf16/fp16 autocast:
    rounding scores to half precision would create ties that change ranks."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return hidden.float() @ items.float().T


def full_softmax_loss(hidden: Tensor, labels: Tensor, items: Tensor) -> Tensor:
    """Cross-entropy over every item; PAD (column 0) is not an item, so it is left out."""
    logits = item_logits(hidden, items)
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, labels)
