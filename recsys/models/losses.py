"""Next-item losses shared by every model that scores items by a dot product with an item table.

A model produces one hidden state per training target, ``hidden`` (T, D), the targets ``labels``
(T,) in 1..N, and its output item table ``items`` (N + 1, D) (row 0 = PAD, never a target or a
negative). :class:`ItemLoss` turns them into a scalar loss, chosen by plain config values so a
checkpoint's hyper-parameters stay primitive (they load with ``weights_only=True``)::

    model:
      init_args:
        loss_type: sampled_softmax   # ce | sampled_softmax | bce | gbce
        num_negatives: 256

A model gets these arguments (``loss_type``, ``num_negatives``, ``negative_sampling``,
``logq_correction``, ``gbce_t``) and its ``self.item_loss`` by subclassing :class:`NextItemModule`.

The kinds, for T targets, N items, K = ``num_negatives``, D the hidden size:

* ``ce``: softmax over all N items. Exact; time and memory O(T·N) for the (T, N + 1) logits.
* ``sampled_softmax``: softmax over the target and K negatives *shared by the whole batch*
  (one (T, D) x (D, K) product, as TensorFlow's ``sampled_softmax_loss``; memory O(T·K)).
  ``uniform`` draws the K items uniformly from 1..N with replacement; ``in_batch`` takes K of
  the batch's own T targets (a uniform subset of the positions without replacement, all of them
  when K >= T), so an item is drawn in proportion to its frequency among the targets, i.e. by
  popularity. A negative equal to the row's own target is not a negative and is masked out
  (accidental hit removal). ``logq_correction`` subtracts log Q(item) from every logit of the
  row, the target's included (Bengio & Senécal, 2008; Yi et al., RecSys 2019, "Sampling-bias-
  corrected neural modeling"), where Q is the item's probability under the sampler: 1/N for
  ``uniform`` (a constant: the loss is unchanged), count(item)/T for ``in_batch``. Without
  it, in-batch sampling pushes popular items down in proportion to their popularity. (With
  every position as a negative and no hit removal, the corrected in-batch loss would be full CE
  plus a constant; removing a popular target's own copies from its row while its logit stays
  corrected makes the correction overshoot somewhat on small skewed batches: see the gradients
  in ``tests/test_losses.py``.)
* ``bce``: per target, K items drawn uniformly from the N - 1 items other than the target;
  loss = -(mean over targets of log σ(s+) + mean over all T·K negatives of log σ(-s-)). This is
  SASRec's original loss as this project always computed it (same draws, same weighting), so
  its published numbers stay valid. Note the weighting: the K negatives of a target together
  weigh as much as its positive.
* ``gbce``: gSASRec's generalised BCE (Petrov & Macdonald, "gSASRec: Reducing Overconfidence in
  Sequential Recommendation Trained with Negative Sampling", RecSys 2023; read in the authors'
  PyTorch port, github.com/asash/gSASRec-pytorch, ``gbce.py`` and ``train_gsasrec.py``). Same
  negatives as ``bce``; with α = K / (N - 1) and β = α·(t·(1 - 1/α) + 1/α), the positive's
  probability is raised to β: per target, loss = -(β·log σ(s+) + Σ_k log σ(-s_k)) / (K + 1),
  then the mean over targets. This is the paper's weighting (each negative weighs as much as
  the positive; the mean over the K + 1 logits, as the authors' code), which its calibration
  argument needs: with t = 1 the optimum of σ(s) is the item's true probability. So ``gbce``
  with t = 0 is plain BCE in the paper's weighting (``binary_cross_entropy_with_logits`` over
  the K + 1 logits), which equals ``bce`` / 2 when K = 1 but not ``bce`` when K > 1. We use
  α = K / (N - 1) as the paper (negatives from the N - 1 other items); the port computes
  K / (pool - 1) with ``pool = num_items - 1`` and draws negatives that may equal the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from recsys.models.base import SeqRecModule

LossType = Literal["ce", "sampled_softmax", "bce", "gbce"]
NegativeSampling = Literal["uniform", "in_batch"]
LOSS_TYPES: tuple[str, ...] = ("ce", "sampled_softmax", "bce", "gbce")


@dataclass(frozen=True)
class ItemLoss:
    """A next-item loss (the kinds are described in the module docstring).

    Args:
        loss_type: ``ce`` = softmax cross-entropy over every item (exact; cost O(T·N·D));
            ``sampled_softmax`` = softmax over the target and ``num_negatives`` sampled items;
            ``bce`` = binary cross-entropy of the target against ``num_negatives`` sampled items;
            ``gbce`` = gSASRec's generalised BCE (Petrov & Macdonald, 2023), calibrated by ``gbce_t``.
        num_negatives: sampled negatives (not used by ``ce``): per batch for ``sampled_softmax``
            (shared by its targets), per target for ``bce`` and ``gbce``.
        negative_sampling: ``uniform`` over items 1..N, or ``in_batch`` (the batch's other
            targets; ``sampled_softmax`` only).
        logq_correction: subtract log Q(item) from sampled logits (the sampling probability),
            so sampled softmax estimates the full softmax without popularity bias
            (``sampled_softmax`` only; the other kinds ignore it).
        gbce_t: gBCE's calibration parameter t in [0, 1] (0 = plain BCE, 1 = fully calibrated).
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
        if self.loss_type in ("bce", "gbce") and self.negative_sampling != "uniform":
            raise ValueError(
                f"loss_type {self.loss_type!r} samples its negatives uniformly (its weighting assumes it); "
                f"negative_sampling {self.negative_sampling!r} is for sampled_softmax"
            )
        if not 0.0 <= self.gbce_t <= 1.0:
            raise ValueError(f"gbce_t must be in [0, 1], got {self.gbce_t}")

    def __call__(self, hidden: Tensor, labels: Tensor, items: Tensor) -> Tensor:
        """hidden (T, D), labels (T,) in 1..N, items (N + 1, D) -> scalar loss (float32)."""
        num_items = items.shape[0] - 1
        if self.loss_type == "ce":
            return full_softmax_loss(hidden, labels, items)
        if self.loss_type == "sampled_softmax":
            return self._sampled_softmax(hidden, labels, items).mean()
        if num_items < 2:
            raise ValueError(f"loss_type {self.loss_type!r} needs at least 2 items to draw a negative, got {num_items}")
        negatives = sample_other_items(labels, num_items, self.num_negatives)  # (T, K)
        positive, negative = pair_logits(hidden, labels, negatives, items)  # (T,), (T, K)
        if self.loss_type == "bce":
            return -(F.logsigmoid(positive).mean() + F.logsigmoid(-negative).mean())
        return gbce_loss(positive, negative, gbce_beta(self.num_negatives, num_items, self.gbce_t)).mean()

    def _sampled_softmax(self, hidden: Tensor, labels: Tensor, items: Tensor) -> Tensor:
        """hidden (T, D), labels (T,), items (N + 1, D) -> (T,) losses against K shared negatives."""
        num_items, device = items.shape[0] - 1, labels.device
        log_q_target: Tensor | None
        log_q_negatives: Tensor | None
        if self.negative_sampling == "uniform":
            negatives = torch.randint(1, num_items + 1, (self.num_negatives,), device=device)  # (K,)
            log_q_target = torch.full((len(labels),), -math.log(num_items), device=device)  # Q = 1/N
            log_q_negatives = torch.full((len(negatives),), -math.log(num_items), device=device)
        else:
            positions = in_batch_positions(len(labels), self.num_negatives, device)  # (K,)
            negatives = labels[positions]
            log_q_target = in_batch_log_q(labels)  # (T,): Q = count / T
            log_q_negatives = log_q_target[positions]
        if not self.logq_correction:
            log_q_target = log_q_negatives = None
        return sampled_softmax_loss(hidden, labels, items, negatives, log_q_target, log_q_negatives)


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


def sampled_softmax_loss(
    hidden: Tensor,
    labels: Tensor,
    items: Tensor,
    negatives: Tensor,
    log_q_target: Tensor | None = None,
    log_q_negatives: Tensor | None = None,
) -> Tensor:
    """Per-target softmax cross-entropy over the target and negatives shared by all targets.

    hidden (T, D), labels (T,) in 1..N, items (N + 1, D), negatives (K,) in 1..N;
    log_q_target (T,) and log_q_negatives (K,): log sampling probabilities subtracted from the
    logits (both or neither). A negative equal to the row's target is masked out. Returns (T,)
    float32 losses: row t's loss is logsumexp([s_t, s_k for k != labels[t]]) - s_t.
    """
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        h = hidden.float()
        positive = (h * items[labels].float()).sum(-1)  # (T,)
        negative = h @ items[negatives].float().T  # (T, K)
    if log_q_target is not None and log_q_negatives is not None:
        positive = positive - log_q_target
        negative = negative - log_q_negatives[None]
    negative = negative.masked_fill(negatives[None] == labels[:, None], float("-inf"))  # accidental hits
    logits = torch.cat([positive[:, None], negative], 1)  # (T, 1 + K); column 0 is the target
    return F.cross_entropy(logits, torch.zeros_like(labels), reduction="none")


def in_batch_positions(num_targets: int, num_negatives: int, device: torch.device) -> Tensor:
    """(K,) positions of the batch's targets used as negatives: a uniform random subset of
    ``min(K, T)`` of the T positions (all of them, in order, when K >= T)."""
    if num_negatives >= num_targets:
        return torch.arange(num_targets, device=device)
    return torch.randperm(num_targets, device=device)[:num_negatives]


def in_batch_log_q(labels: Tensor) -> Tensor:
    """(T,) targets -> (T,) log Q of each target under in-batch sampling: log(count / T), the
    share of the batch's targets that are that item."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return (counts[inverse].float() / len(labels)).log()


def sample_other_items(labels: Tensor, num_items: int, n: int) -> Tensor:
    """(T,) positives -> (T, n) items drawn uniformly from the N - 1 items in 1..N other than
    each row's positive (with replacement across the n draws)."""
    sample = torch.randint(1, num_items, (len(labels), n), device=labels.device)
    return sample + (sample >= labels[:, None]).long()  # skip the positive without bias


def pair_logits(hidden: Tensor, labels: Tensor, negatives: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """hidden (T, D), labels (T,), negatives (T, K), items (N + 1, D) -> positive scores (T,)
    and negative scores (T, K), each row against its own items (in the autocast dtype)."""
    positive = (hidden * items[labels]).sum(-1)  # (T,)
    negative = torch.einsum("td,tnd->tn", hidden, items[negatives])  # (T, K)
    return positive, negative


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's β = α·(t·(1 - 1/α) + 1/α) with α = K / (N - 1): 1 at t = 0 (plain BCE), α at t = 1."""
    if not 1 <= num_negatives <= num_items - 1:
        raise ValueError(
            f"gbce needs 1 <= num_negatives <= N - 1 = {num_items - 1} (its sampling rate α = K / (N - 1) "
            f"is at most 1), got {num_negatives}"
        )
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce_loss(positive: Tensor, negative: Tensor, beta: float) -> Tensor:
    """positive (T,), negative (T, K) scores -> (T,) gBCE losses
    -(β·log σ(s+) + Σ_k log σ(-s_k)) / (K + 1), in float32. log(σ(s)^β) = β·log σ(s) is
    computed as such, which is stable for any score (no σ(s)^β to clamp)."""
    positive, negative = positive.float(), negative.float()
    return -(beta * F.logsigmoid(positive) + F.logsigmoid(-negative).sum(-1)) / (negative.shape[1] + 1)


class NextItemModule(SeqRecModule):
    """A model that scores items by a dot product with an item table and trains with
    :class:`ItemLoss`: subclass it, pass ``**kwargs`` to ``super().__init__``, and compute the loss
    as ``self.item_loss(hidden, labels, items)``. Its loss arguments then appear in the model's
    config (``--model.loss_type sampled_softmax``) like the model's own; see :class:`ItemLoss`
    for what they mean.
    """

    def __init__(
        self,
        num_items: int,
        loss_type: LossType = "ce",
        num_negatives: int = 1,
        negative_sampling: NegativeSampling = "uniform",
        logq_correction: bool = True,
        gbce_t: float = 0.75,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.item_loss = ItemLoss(loss_type, num_negatives, negative_sampling, logq_correction, gbce_t)
        self.loss_type, self.num_negatives = loss_type, num_negatives
