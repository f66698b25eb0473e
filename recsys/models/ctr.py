"""CTR models: predict P(like) per sample; trained with binary cross-entropy, evaluated with
AUC and LogLoss (the CTR protocol, :mod:`recsys.data.ctr`)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from recsys.data.ctr import CTRBatch
from recsys.models.base import RecModule

#: What CTR models log at validation and test (``{stage}/{name}``); select on ``val/auc``.
CTR_METRICS = ("auc", "logloss")
CTR_MONITOR = "val/auc"


class CTRModule(RecModule):
    """Base class of CTR models: implement ``logits(batch) -> (B,)``.

    Training minimises the mean binary cross-entropy (``loss``; override to add terms).
    Validation and test log ``{stage}/auc`` (exact ROC AUC, torchmetrics ``BinaryAUROC``) and
    ``{stage}/logloss`` (mean BCE of the predicted probabilities), both accumulated over the
    whole epoch and synchronised across processes, so they are exact under DDP. ``predict``
    returns each sample's user, item and probability.
    """

    monitor: ClassVar[tuple[str, str]] = ("val/auc", "max")

    def __init__(self, num_items: int, lr: float = 1e-3, weight_decay: float = 0.0):
        # Ranking metrics (register_metrics) are functions of a target's rank, which pointwise
        # CTR samples do not have: CTR models log AUC and LogLoss instead.
        super().__init__(num_items, lr=lr, weight_decay=weight_decay, metrics=())
        self.val_auc, self.test_auc = BinaryAUROC(), BinaryAUROC()
        self.val_logloss, self.test_logloss = MeanMetric(), MeanMetric()

    def logged_metrics(self, stage: str) -> set[str]:
        names = super().logged_metrics(stage)  # train/loss; no ranking metrics (metrics=())
        if stage != "train":
            names |= {f"{stage}/{name}" for name in CTR_METRICS}
        return names

    def logits(self, batch: CTRBatch) -> Tensor:
        """(B,) logit of P(label = 1)."""
        raise NotImplementedError

    def loss(self, batch: CTRBatch) -> Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(batch).float(), batch.label.float())

    def training_step(self, batch: CTRBatch, batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.label))
        return loss

    def _evaluate(self, batch: CTRBatch, stage: str) -> None:
        logits = self.logits(batch).float()
        labels = batch.label.float()
        auc, logloss = (self.val_auc, self.val_logloss) if stage == "val" else (self.test_auc, self.test_logloss)
        auc.update(torch.sigmoid(logits), labels.long())
        logloss.update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))
        self.log(f"{stage}/auc", auc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log(f"{stage}/logloss", logloss, on_step=False, on_epoch=True, batch_size=len(labels))

    def validation_step(self, batch: CTRBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: CTRBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: CTRBatch, batch_idx: int) -> dict[str, Tensor]:
        return {"user": batch.user, "item": batch.item, "prob": torch.sigmoid(self.logits(batch).float())}
