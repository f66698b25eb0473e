"""The conventional recommendation model (CRM): a DIN-style CTR model over IDs.

Trained on its own (``recsys fit --config plugins/recsys-plora/configs/ml-100k/ctr-din.yaml``) on every training
sample (Few2Many: the LLM later trains on N of them); RecLoRA loads its checkpoint, frozen,
and reads :meth:`DIN.user_representation` as the gate input, through :class:`CRMGate`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

import recsys
from recsys import CTRBatch


class DIN(recsys.CTRModule):
    """Deep Interest Network (Zhou et al., 2018), as RecLoRA's CRM.

    A history entry is its item embedding plus an embedding of its rating (rounded, 0..10);
    attention over the history is an MLP of [e_t, e_h, e_t - e_h, e_t * e_h] (unnormalised
    weights, as DIN), masked at padding. The MLP input is [user fields, target item, attended
    history, mean history].

    Args:
        num_items: linked from the data module.
        dim: embedding size.
        hidden: MLP widths; the last one is the size of the target-aware user representation.
        attention_hidden: width of the attention MLP.
        dropout: dropout in the MLP.
        field_sizes: rows of each user field's embedding; None = read from the data module at
            setup (``CTRDataModule.field_sizes``) and then saved with the hyper-parameters.
    """

    def __init__(
        self,
        num_items: int,
        dim: int = 32,
        hidden: Sequence[int] = (128, 64),
        attention_hidden: int = 64,
        dropout: float = 0.1,
        field_sizes: list[int] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__(num_items, lr=lr, weight_decay=weight_decay)
        if not hidden:
            raise ValueError("model.hidden must name at least one MLP width")
        self.save_hyperparameters()
        self.dim = dim
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.rating_embedding = nn.Embedding(11, dim)
        self.attention = nn.Sequential(nn.Linear(4 * dim, attention_hidden), nn.Sigmoid(),
                                       nn.Linear(attention_hidden, 1))
        self.fields: nn.ModuleList | None = None
        self.mlp: nn.Sequential | None = None
        self.out: nn.Linear | None = None
        if field_sizes is not None:
            self._build(list(field_sizes))

    def _build(self, field_sizes: list[int]) -> None:
        """The parts whose shape depends on the data's user fields."""
        self.fields = nn.ModuleList([nn.Embedding(size, self.dim) for size in field_sizes])
        widths = [(len(field_sizes) + 3) * self.dim, *self.hparams.hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(self.hparams.dropout)]
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(widths[-1], 1)

    def setup(self, stage: str) -> None:
        sizes = getattr(getattr(self.trainer, "datamodule", None), "field_sizes", None)
        if sizes is None:
            if self.fields is None:
                raise ValueError("DIN needs model.field_sizes or a data module with field_sizes (CTRDataModule)")
            return
        if self.fields is None:
            self._build(list(sizes))
            self.hparams["field_sizes"] = list(sizes)  # saved in checkpoints: they rebuild the same shapes
        elif [e.num_embeddings for e in self.fields] != list(sizes):
            raise ValueError(f"DIN was built for user fields of sizes {[e.num_embeddings for e in self.fields]} "
                             f"but the data module has {list(sizes)}: train and evaluate on the same dataset")

    @property
    def representation_dim(self) -> int:
        """Size of the target-aware representation (the last MLP width)."""
        return int(self.hparams.hidden[-1])

    @property
    def agnostic_dim(self) -> int:
        """Size of the target-agnostic representation (user fields + mean history)."""
        return (len(self.built()[0]) + 1) * self.dim

    def built(self) -> tuple[nn.ModuleList, nn.Sequential, nn.Linear]:
        """The layers sized by the data (user fields, MLP, output); an error before they exist."""
        if self.fields is None or self.mlp is None or self.out is None:
            raise RuntimeError("DIN is not built: run it through a Trainer with a CTRDataModule, or pass field_sizes")
        return self.fields, self.mlp, self.out

    def _parts(self, batch: CTRBatch) -> tuple[Tensor, Tensor, Tensor]:
        """-> user field embeddings (B, F*d), history entries (B, L, d), mask (B, L, 1)."""
        fields = [emb(batch.user_fields[:, f]) for f, emb in enumerate(self.built()[0])]
        user = torch.cat(fields, -1) if fields else batch.item.new_zeros(len(batch.item), 0).float()
        ratings = batch.history_rating.round().clamp(0, 10).long()
        history = self.item_embedding(batch.history) + self.rating_embedding(ratings)
        mask = batch.history_mask.unsqueeze(-1).to(history.dtype)
        return user, history * mask, mask

    def _mean(self, history: Tensor, mask: Tensor) -> Tensor:
        return history.sum(1) / mask.sum(1).clamp_min(1)

    def hidden(self, batch: CTRBatch) -> Tensor:
        """(B, hidden[-1]) the target-aware representation: the MLP's last hidden layer (RecLoRA's
        ``out_layer='final'``). It depends on the target item through the attention."""
        user, history, mask = self._parts(batch)
        target = self.item_embedding(batch.item)  # (B, d)
        query = target.unsqueeze(1).expand_as(history)
        weights = self.attention(torch.cat([query, history, query - history, query * history], -1)) * mask
        attended = (weights * history).sum(1)
        return self.built()[1](torch.cat([user, target, attended, self._mean(history, mask)], -1))

    def user_representation(self, batch: CTRBatch, target_aware: bool = True) -> Tensor:
        """The vector RecLoRA's gate reads: :meth:`hidden` (target-aware), or the user fields'
        embeddings with the mean history (target-agnostic: one vector per user and time)."""
        if target_aware:
            return self.hidden(batch)
        user, history, mask = self._parts(batch)
        return torch.cat([user, self._mean(history, mask)], -1)

    def logits(self, batch: CTRBatch) -> Tensor:
        return self.built()[2](self.hidden(batch)).squeeze(-1)


#: Data settings a CRM checkpoint must share with the data RecLoRA trains on (pitfall 6:
#: the CRM must have seen the same split, or it has seen the test period).
PROTOCOL_FIELDS = ("path", "threshold", "min_history", "split", "tie_break", "user_fields")


def load_frozen_crm(checkpoint: str, num_items: int) -> DIN:
    """The CRM of a checkpoint, frozen (no gradients, eval mode); it must offer
    ``user_representation`` (a DIN) and know the same ``num_items``."""
    crm = recsys.RecModule.load_from_checkpoint(checkpoint)
    if not hasattr(crm, "user_representation"):
        raise TypeError(f"model.crm_checkpoint {checkpoint!r} holds a {type(crm).__name__}, which has no "
                        "user_representation(batch, target_aware); train a DIN first")
    if crm.num_items != num_items:
        raise ValueError(f"model.crm_checkpoint was trained on {crm.num_items} items, this data has {num_items}")
    # duck-typed: any CRM offering DIN's user_representation and sizes will do
    return cast(DIN, crm.requires_grad_(False).eval())


def check_same_protocol(checkpoint: str, datamodule_hparams: Mapping) -> None:
    """Raise when the CRM checkpoint's data settings (:data:`PROTOCOL_FIELDS`) differ from
    ``datamodule_hparams``; checkpoints saved without them are accepted."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get("datamodule_hyper_parameters")
    if not saved:
        return
    ours = dict(datamodule_hparams)
    # a list saved as a tuple (or the reverse) is the same setting
    differ = {k: (saved.get(k), ours.get(k)) for k in PROTOCOL_FIELDS
              if k in ours and json.dumps(saved.get(k), default=str) != json.dumps(ours.get(k), default=str)
              and not (isinstance(saved.get(k), (list, tuple)) and list(saved.get(k)) == list(ours.get(k) or []))}
    if differ:
        raise ValueError(f"model.crm_checkpoint was trained on other data settings (CRM vs here): {differ}; "
                         "the CRM must see the same split, or it has seen the evaluation period")


class CRMGate:
    """The gate input of the personalized LoRAs: the frozen CRM's user representation (B, H).

    Holds a reference to the CRM module; the model registers that same module as ``model.crm``
    (so its checkpoint keys stay ``crm.*``) and keeps it in eval mode.

    Args:
        crm: a frozen CRM with ``user_representation`` (:func:`load_frozen_crm`).
        checkpoint: where it came from (its data settings are checked by :meth:`check_protocol`).
        target_aware: the target-aware representation (:meth:`DIN.hidden`) or the target-agnostic one.
    """

    def __init__(self, crm: DIN, checkpoint: str, target_aware: bool = True):
        self.crm, self.checkpoint, self.target_aware = crm, checkpoint, target_aware

    @property
    def dim(self) -> int:
        """H, the size of the representation the gate reads."""
        return self.crm.representation_dim if self.target_aware else self.crm.agnostic_dim

    def check_protocol(self, datamodule_hparams: Mapping) -> None:
        """The CRM must have been trained on the same split as the data (:func:`check_same_protocol`)."""
        check_same_protocol(self.checkpoint, datamodule_hparams)

    def __call__(self, batch: CTRBatch) -> Tensor:
        """(B, H) the user representation, without gradients (the CRM is frozen)."""
        with torch.no_grad():
            return self.crm.user_representation(batch, target_aware=self.target_aware)
