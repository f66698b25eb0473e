"""HLLM (Chen et al., 2024) and Lite-LLM4Rec (Wang et al., 2024): an item LLM turns each
item's text into a vector; a user LLM reads the history of item vectors and predicts the next.

HLLM scores items by similarity with their text-derived vectors (so items never seen in
training can be recommended) and trains with InfoNCE against shared random negatives.
Lite-LLM4Rec replaces the similarity with a linear projection over all item ids, trained
with full cross-entropy.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import recsys
import recsys.llm
from recsys_hllm.item_tower import ItemTower
from recsys_hllm.user_llm import UserLLM


class HierarchicalRec(recsys.TrainableOnlyCheckpoint, recsys.SeqRecModule):
    """The shared hierarchy; subclasses say how a user vector scores items.

    Args:
        num_items: catalog size (linked from the data).
        item_llm: the item LLM: a backbone name (``recsys backbones``), hub id or directory.
        item_template: item text template (``hllm``, ``default``, ``title``, ...).
        item_pooling: ``mean``, ``cls``, ``last`` or ``item_slot`` (HLLM's learnable [ITEM] vector).
        item_max_length: tokens per item text.
        item_trainable_layers: None = the whole item LLM trains, 0 = frozen, n = its top n layers.
        item_pretrained: False = the same item LLM with random weights (the "no prior" ablation).
        item_lora_r: > 0 adds LoRA adapters of this rank to the item LLM (its base then stays frozen).
        item_cache_frozen_layers: keep the frozen bottom layers' outputs for every item in memory
            ((N + 1) x tokens x d floats), so training steps run only the trainable top layers.
        user_llm: ``random-llama`` (sized by the next arguments) or a backbone name/hub id.
        user_layers, user_heads, user_intermediate: size of the random user LLM.
        max_len: longest history.
        attn_implementation: the random user LLM's attention kernel (``sdpa`` or ``eager``).
    """

    train_windows = "tiled"

    def __init__(
        self,
        num_items: int,
        item_llm: str = "all-minilm-l6-v2",
        item_template: str = "hllm",
        item_pooling: Literal["mean", "cls", "last", "item_slot"] = "mean",
        item_max_length: int = 32,
        item_trainable_layers: int | None = 2,
        item_pretrained: bool = True,
        item_lora_r: int = 0,
        item_cache_frozen_layers: bool = True,
        user_llm: str = "random-llama",
        user_layers: int = 2,
        user_heads: int = 6,
        user_intermediate: int = 1536,
        max_len: int = 50,
        attn_implementation: str = "sdpa",
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.item_template = item_template
        self.items = ItemTower(item_llm, item_pooling, item_max_length, item_trainable_layers, item_pretrained,
                               item_lora_r, item_cache_frozen_layers)
        self.track_backbone(self.items.encoder.source, "items.encoder.transformer.")
        self.user = UserLLM(self.items.dim, user_llm, user_layers, user_heads, user_intermediate, max_len,
                            attn_implementation)
        if self.user.source.get("pretrained"):
            self.track_backbone(self.user.source, "user.decoder.")

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None and self.catalog is None:
            raise RuntimeError(f"{type(self).__name__} reads item text from the data module's catalog: "
                               "run it with a recsys data module (or call set_catalog(catalog) first)")
        super().setup(stage)  # takes the data module's catalog: see on_catalog

    def on_catalog(self, catalog: recsys.Catalog) -> None:
        self.items.set_catalog(recsys.llm.render_items(catalog, self.item_template))

    # The catalog's item vectors are computed once per evaluation epoch (the first batch builds
    # them, the others look them up); a new epoch recomputes them, since training or a loaded
    # checkpoint (e.g. the best one, for test) may have changed the weights in between.

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.items.invalidate()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.items.invalidate()

    def on_predict_epoch_start(self) -> None:
        super().on_predict_epoch_start()
        self.items.invalidate()

    def user_states(self, history: Tensor, item_vectors: Tensor | None = None) -> Tensor:
        """(B, L) left-padded item ids -> (B, L, d) user vectors; position t sees items <= t.
        ``item_vectors``: (B, L, d) the history's item vectors, when already encoded."""
        real = history != 0
        return self.user(self.items(history) if item_vectors is None else item_vectors, real)

    @staticmethod
    def _targets(batch: recsys.Batch) -> tuple[Tensor | None, Tensor]:
        """Where the training targets are and which: (B, L) bool or None (the last position), (T,)."""
        if batch.labels is None:
            return None, batch.target
        valid = batch.labels != 0
        return valid, batch.labels[valid]

    def _positions(self, batch: recsys.Batch, item_vectors: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """User vectors at every training target and the targets: (T, d), (T,)."""
        where, targets = self._targets(batch)
        states = self.user_states(batch.history, item_vectors)
        return (states[:, -1] if where is None else states[where]), targets


class HLLM(HierarchicalRec):
    """HLLM: similarity of the user vector with every item's text vector, InfoNCE training.

    Args (besides :class:`HierarchicalRec`'s):
        num_negatives: shared uniform negatives per batch; 0 = every item (only sensible when
            the item LLM is frozen, so the catalog's vectors are a lookup).
        temperature: initial InfoNCE temperature (learnable; never below ``min_temperature``).
        min_temperature: its floor (0.01, as HLLM).
        index_above: catalogs at least this large serve ``recommend`` through a faiss index.
    """

    def __init__(self, num_items: int, num_negatives: int = 256, temperature: float = 0.07,
                 min_temperature: float = 0.01, index_above: int = 100_000, **kwargs):
        super().__init__(num_items, **kwargs)  # saves this class's arguments too (Lightning walks the __init__ frames)
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0 (0 = all items), got {num_negatives}")
        self.num_negatives = num_negatives
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.max_log_scale = math.log(1 / min_temperature)
        self.index_above = index_above

    def _scale(self) -> Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def negatives(self, device: torch.device) -> Tensor:
        """(n,) this step's shared negative item ids (every item when ``num_negatives`` is 0)."""
        if self.num_negatives == 0:
            return torch.arange(1, self.num_items + 1, device=device)
        return torch.randint(1, self.num_items + 1, (self.num_negatives,), device=device)

    def loss(self, batch: recsys.Batch) -> Tensor:
        history = batch.history
        targets = self._targets(batch)[1]
        candidates = self.negatives(targets.device)
        # One encoding pass for the history, the targets and the negatives: the item tower
        # encodes each distinct item once, so an item that is both history and target (with
        # tiled windows, nearly every target) gets one vector, with one dropout draw.
        vectors = self.items(torch.cat([history.reshape(-1), targets, candidates]))
        history_vectors = vectors[: history.numel()].view(*history.shape, -1)
        user, _ = self._positions(batch, history_vectors)  # (T, d)
        user = F.normalize(user.float(), dim=-1)
        vectors = F.normalize(vectors[history.numel():].float(), dim=-1)
        positive, negative = vectors[: len(targets)], vectors[len(targets):]  # (T, d), (n, d)
        scale = self._scale()
        pos_logit = (user * positive).sum(-1, keepdim=True) * scale  # (T, 1)
        neg_logits = user @ negative.T * scale  # (T, n)
        same = candidates[None, :] == targets[:, None]  # a "negative" that is the target is not one
        neg_logits = neg_logits.masked_fill(same, float("-inf"))
        logits = torch.cat([pos_logit, neg_logits], 1)
        self.log("train/effective_negatives", (~same).sum(1).float().mean(), batch_size=len(targets))
        self.log("train/temperature", 1 / scale.detach(), batch_size=len(targets))
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))

    def score(self, batch: recsys.Batch) -> Tensor:
        user = F.normalize(self.user_states(batch.history)[:, -1].float(), dim=-1)  # (B, d)
        table = F.normalize(self.items.catalog_vectors().float(), dim=-1)  # (N + 1, d)
        scores = user @ table.T
        scores[:, 0] = float("-inf")
        return scores

    def recommend(self, batch: recsys.Batch, k: int) -> tuple[Tensor, Tensor]:
        if self.num_items < self.index_above:
            return super().recommend(batch, k)
        user = F.normalize(self.user_states(batch.history)[:, -1].float(), dim=-1)
        table = F.normalize(self.items.catalog_vectors().float(), dim=-1)[1:]
        scores, ids = recsys.ItemIndex(table, metric="ip").search(user, k, exclude=batch.seen)
        return ids.to(user.device), scores.to(user.device)


class LiteLLM4Rec(HierarchicalRec):
    """Lite-LLM4Rec: the same hierarchy with an item-projection head (a linear layer over all
    item ids) trained with full cross-entropy. Items never seen in training keep their
    initial head rows, so unlike HLLM it cannot recommend cold items."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.head = nn.Linear(self.items.dim, num_items + 1)
        self.items.eval_lookup = False  # scoring needs no item vectors: evaluation encodes only histories

    def _logits(self, user: Tensor) -> Tensor:
        with torch.autocast(device_type=user.device.type, enabled=False):
            logits = self.head(user.float())
        logits[:, 0] = float("-inf")
        return logits

    def loss(self, batch: recsys.Batch) -> Tensor:
        user, targets = self._positions(batch)
        return F.cross_entropy(self._logits(user), targets)

    def score(self, batch: recsys.Batch) -> Tensor:
        return self._logits(self.user_states(batch.history)[:, -1])
