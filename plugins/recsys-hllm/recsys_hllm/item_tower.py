"""The item LLM: every catalog item's text -> one vector, for training and for scoring."""

from __future__ import annotations


import torch
from torch import Tensor, nn

import recsys
import recsys.llm


def _invalidate_after_load(module: "ItemTower", incompatible_keys) -> None:
    module.invalidate()  # a module-level function, so the module still pickles


class ItemTower(nn.Module):
    """Wraps a :class:`recsys.TextEncoder` with the catalog's tokenised texts.

    Items in a call are de-duplicated before encoding. When the encoder is frozen, the whole
    catalog is encoded once (through the embedding cache when the weights are pretrained) and
    looked up afterwards. Otherwise the needed items are re-encoded at every training step,
    and in evaluation (eval mode, no gradients) the full catalog is encoded once
    (:meth:`catalog_vectors`, always in eval mode) and every batch, history and scoring alike,
    looks its vectors up. That table is dropped by :meth:`invalidate` (the model calls it at
    the start of every validation, test and predict epoch), by a training forward (the
    weights are about to change), by loading a state dict, and whenever an encoder
    parameter changed in place since it was built (its version counter).
    """

    def __init__(self, backbone: str, pooling: str, max_length: int, trainable_layers: int | None,
                 pretrained: bool, lora_r: int = 0, cache_frozen_layers: bool = True):
        super().__init__()
        # With LoRA every layer adapts, so no layer's output is fixed and none can be cached.
        self.cache_frozen_layers = cache_frozen_layers and not lora_r
        self.encoder = recsys.TextEncoder(backbone, pooling=pooling, max_length=max_length,
                                          trainable_layers=trainable_layers, pretrained=pretrained)
        if lora_r:
            # LoRA on the attention of every layer; the adapters train, the base stays frozen.
            self.encoder.transformer = recsys.llm.add_lora(self.encoder.transformer, r=lora_r, alpha=2 * lora_r)
        self.dim = self.encoder.dim
        self.texts: list[str] | None = None
        self._table: Tensor | None = None  # (N + 1, d) vectors of every item, when valid
        self._table_key: tuple | None = None  # the weights' state the table was built from
        self._states: Tensor | None = None  # (N + 1, T, d) outputs of the frozen bottom layers
        self.catalog_encodes = 0  # how many times the full catalog was encoded (for tests, benchmarks)
        #: evaluation looks the history's vectors up in the catalog's table (HLLM needs the table
        #: to score anyway); False encodes each batch's items instead (Lite-LLM4Rec scores with a head)
        self.eval_lookup = True
        self.register_load_state_dict_post_hook(_invalidate_after_load)

    @property
    def frozen(self) -> bool:
        return self.encoder.frozen

    def set_catalog(self, texts: list[str]) -> None:
        """``texts[i]`` is item i's text; ``texts[0]`` (PAD) is ignored."""
        self.texts = texts
        ids = self.encoder.tokenize(texts[1:])
        pad = lambda t: torch.cat([t.new_zeros(1, t.shape[1]), t])  # noqa: E731 - row 0 = PAD
        self.input_ids, self.attention_mask = pad(ids["input_ids"]), pad(ids["attention_mask"])
        self.attention_mask[0, 0] = 1  # PAD encodes one token, so no row is empty
        self._table = self._states = None

    def invalidate(self) -> None:
        """Forget the catalog's vectors (the next :meth:`catalog_vectors` recomputes them).
        A frozen encoder's table is kept: its weights cannot train."""
        if not self.frozen:
            self._table = None

    def _weights_key(self) -> tuple:
        """Changes when any encoder parameter is modified in place or moved (cheap: no data read)."""
        params = list(self.encoder.parameters())
        return (params[0].device, tuple(p._version for p in params))

    def _frozen_states(self) -> Tensor | None:
        """The frozen bottom layers' outputs for every item, computed once (HLLM caches them too:
        with the top 2 of 6 MiniLM layers trainable, a step then runs 2 layers instead of 6)."""
        if not self.cache_frozen_layers or self.encoder.num_frozen_layers == 0 or self.encoder.frozen:
            return None
        if self._states is None:
            from tqdm.auto import tqdm

            chunks = []
            for start in tqdm(range(0, len(self.input_ids), 256), desc="caching frozen item layers",
                              disable=len(self.input_ids) < 2048):
                chunks.append(self.encoder.frozen_states(self.input_ids[start:start + 256],
                                                         self.attention_mask[start:start + 256]).cpu())
            self._states = torch.cat(chunks)
        return self._states

    def _encode(self, items: Tensor) -> Tensor:
        """(K,) unique item indices (CPU) -> (K, d), through the trainable layers only when possible."""
        mask = self.attention_mask[items]
        length = int(mask.sum(1).max())
        states = self._frozen_states()
        return self.encoder(self.input_ids[items, :length], mask[:, :length],
                            frozen_states=None if states is None else states[items, :length])

    def _require_catalog(self) -> None:
        if self.texts is None:
            raise RuntimeError("ItemTower.set_catalog(texts) must be called (the model does it in setup())")

    def forward(self, items: Tensor) -> Tensor:
        """(...,) item indices -> (..., d) vectors (gradients flow when the encoder trains).

        Frozen encoder, or evaluation (eval mode without gradients): a lookup in the catalog's
        table, computed at most once per weight state. Training: every distinct item is
        encoded once (with this step's dropout), whatever its positions in ``items``.
        """
        self._require_catalog()
        if self.frozen or (self.eval_lookup and not self.encoder.training and not torch.is_grad_enabled()):
            return self.catalog_vectors()[items]
        if torch.is_grad_enabled():
            self._table = None  # weights are about to change
        unique, inverse = items.unique(return_inverse=True)
        return self._encode(unique.cpu())[inverse]

    @torch.no_grad()
    def catalog_vectors(self) -> Tensor:
        """(N + 1, d) eval-mode vectors of every item (row 0 = PAD's), computed once per weight
        state (see the class docstring for what invalidates them)."""
        self._require_catalog()
        key = self._weights_key()
        if self._table is None or self._table_key != key:
            device = key[0]
            if self.frozen:
                vectors = self.encoder.encode(self.texts, progress=None)  # cached on disk when pretrained
            else:
                everything = torch.arange(len(self.input_ids))
                with recsys.llm.eval_mode(self.encoder):
                    vectors = torch.cat([self._encode(everything[s:s + 256]).float()
                                         for s in range(0, len(everything), 256)])
            self._table, self._table_key = vectors.to(device), key
            self.catalog_encodes += 1
        return self._table
