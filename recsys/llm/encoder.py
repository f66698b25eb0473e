"""Text encoders: texts -> one vector each, from any backbone, with an on-disk cache.

Pooling: ``mean`` over real tokens, ``cls`` (the first token), ``last`` (each row's last
real token) or ``item_slot`` (HLLM: a learnable vector appended after the text, whose
output is taken). Batches are right-padded with an explicit attention mask; ``last``
gathers each row's last real position, so it never reads a pad token (the BIGRec pitfall
of taking position -1 of a right-padded batch) and positions need no shifting.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from recsys.llm.backbones import Backbone, load_backbone

if TYPE_CHECKING:
    from recsys.llm.cache import EmbeddingCache

Pooling = Literal["mean", "cls", "last", "item_slot"]


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a (base) model: ``layers``, ``encoder.layer``, ``h``, ...

    Falls back to the longest ``ModuleList`` whose members share one class.
    """
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


def freeze_except_top(model: nn.Module, trainable_layers: int | None) -> None:
    """Freeze everything but the top ``trainable_layers`` blocks and what follows them
    (the final norm). None leaves everything trainable; 0 freezes all."""
    if trainable_layers is None:
        return
    layers = transformer_layers(model)
    if trainable_layers > len(layers):
        raise ValueError(f"trainable_layers={trainable_layers} but the backbone has {len(layers)} layers")
    model.requires_grad_(False)
    if trainable_layers == 0:
        return
    for layer in layers[len(layers) - trainable_layers:]:
        layer.requires_grad_(True)
    # Modules registered after the layer stack in the same parent (e.g. Llama's final norm).
    for parent in model.modules():
        names = list(parent._modules)
        for i, child in enumerate(parent._modules.values()):
            if child is layers:
                for later in names[i + 1:]:
                    following = parent._modules[later]
                    if following is not None and later != "rotary_emb":
                        following.requires_grad_(True)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` and every submodule in eval mode inside the block; each one's own mode
    (train or eval) is restored afterwards, so a mixed-mode model stays mixed."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


class _PassThrough(nn.Module):
    """Stands in for a transformer block whose output is already known."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _Replay(_PassThrough):
    """Stands in for the first block: returns precomputed states of the frozen blocks."""

    def __init__(self, states: Tensor):
        super().__init__()
        self.states = states

    def forward(self, hidden_states, *args, **kwargs):
        return self.states.to(hidden_states.dtype)


class TextEncoder(nn.Module):
    """Encodes texts with a backbone's transformer (no LM head).

    backbone: a loaded :class:`Backbone` or a name/hub id/directory for :func:`load_backbone`.
    trainable_layers: None = all trainable, 0 = frozen, n = only the top n blocks.
    """

    def __init__(
        self,
        backbone: Backbone | str,
        pooling: Pooling = "mean",
        max_length: int = 64,
        trainable_layers: int | None = 0,
        pretrained: bool = True,
        normalize: bool = False,
    ):
        super().__init__()
        if pooling not in ("mean", "cls", "last", "item_slot"):
            raise ValueError(f"pooling must be 'mean', 'cls', 'last' or 'item_slot', got {pooling!r}")
        if isinstance(backbone, str):
            backbone = load_backbone(backbone, head="base", pretrained=pretrained)
        self.source = backbone.source
        self.tokenizer = backbone.tokenizer
        # Train mode like any new nn.Module (from_pretrained returns eval mode); Lightning
        # keeps submodules' modes, and switches the whole model for validation itself.
        self.transformer = backbone.base_model.train()
        self.pooling, self.max_length, self.normalize = pooling, max_length, normalize
        self.trainable_layers = trainable_layers
        self.dim = backbone.hidden_size
        freeze_except_top(self.transformer, trainable_layers)
        if pooling == "item_slot":
            std = getattr(backbone.model.config, "initializer_range", 0.02)
            self.item_slot = nn.Parameter(torch.randn(self.dim) * std)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    @property
    def num_frozen_layers(self) -> int:
        """How many bottom blocks are frozen and see nothing trainable (their outputs can be cached)."""
        if self.trainable_layers is None or self.pooling == "item_slot":
            return 0  # the slot is an input: every block's output depends on it
        return len(transformer_layers(self.transformer)) - self.trainable_layers

    @torch.no_grad()
    def frozen_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) -> (B, T, d): the output of the frozen bottom blocks, to be cached and given
        back to :meth:`forward` as ``frozen_states`` (only the trainable blocks then run).

        Always computed in eval mode (the module's modes are restored afterwards): a cache
        built during a training step would otherwise keep that step's dropout draw forever.
        """
        k = self.num_frozen_layers
        if k == 0:
            raise ValueError("no frozen bottom layers to cache (trainable_layers is None, or item_slot pooling)")
        layers = transformer_layers(self.transformer)
        captured = []
        handle = layers[k - 1].register_forward_hook(lambda module, args, out: captured.append(
            out[0] if isinstance(out, tuple) else out))
        original = list(layers[k:])
        try:
            for i in range(k, len(layers)):
                layers[i] = _PassThrough()  # the blocks above are not needed here
            with eval_mode(self):
                self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            handle.remove()
            for i, layer in enumerate(original, start=k):
                layers[i] = layer
        return captured[0]

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Right-padded ids and attention mask, truncated to ``max_length`` tokens."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt", padding_side="right")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        empty = mask.sum(1) == 0
        if empty.any():
            # A text with no token at all (e.g. an empty generation, with a tokenizer that adds no
            # special tokens) becomes one pad token, so every row has something to attend to.
            if ids.shape[1] == 0:
                ids, mask = ids.new_zeros(len(ids), 1), mask.new_zeros(len(mask), 1)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids[empty, 0], mask[empty, 0] = pad, 1
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, input_ids: Tensor, attention_mask: Tensor, frozen_states: Tensor | None = None) -> Tensor:
        """(B, L) ids and mask -> (B, dim) pooled vectors.

        ``frozen_states``: (B, L, d) from :meth:`frozen_states` for the same ids; the frozen
        bottom blocks are then skipped (the embeddings still run: they are a cheap lookup).
        """
        device = next(self.transformer.parameters()).device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if frozen_states is not None:
            return self._forward_from_frozen(input_ids, attention_mask, frozen_states.to(device))
        lengths = attention_mask.sum(1)
        if self.pooling == "item_slot":
            embeds = self.transformer.get_input_embeddings()(input_ids)
            pad = embeds.new_zeros(embeds.shape[0], 1, embeds.shape[2])
            embeds = torch.cat([embeds, pad], 1)
            rows = torch.arange(len(lengths), device=device)
            embeds[rows, lengths] = self.item_slot.to(embeds.dtype)  # right after each row's text
            attention_mask = torch.cat([attention_mask, attention_mask.new_zeros(len(lengths), 1)], 1)
            attention_mask[rows, lengths] = 1
            hidden = self.transformer(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
            pooled = hidden[rows, lengths]
        else:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if self.pooling == "mean":
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
            elif self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = hidden[torch.arange(len(lengths), device=device), (lengths - 1).clamp_min(0)]
        pooled = pooled.float()
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def _forward_from_frozen(self, input_ids: Tensor, attention_mask: Tensor, states: Tensor) -> Tensor:
        layers = transformer_layers(self.transformer)
        k = self.num_frozen_layers
        original = list(layers[:k])
        try:
            layers[0] = _Replay(states)
            for i in range(1, k):
                layers[i] = _PassThrough()
            return self(input_ids, attention_mask)
        finally:
            for i, layer in enumerate(original):
                layers[i] = layer

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """(B,) texts -> (B, dim) vectors, with gradients when the encoder trains."""
        return self(**self.tokenize(texts))

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool | None = None,
               cache: bool = True) -> Tensor:
        """Encode many texts for inference: (N,) -> (N, dim) float32 on the CPU.

        Uses the embedding cache when the encoder is frozen and pretrained (the vector then
        depends only on the source, pooling, max length and the text); shows a progress bar
        for more than ``batch_size * 4`` texts unless ``progress`` says otherwise.
        """
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        store: EmbeddingCache | None = None
        namespace = ""
        if cache and (key := self.cache_namespace()) is not None:
            from recsys.llm.cache import EmbeddingCache

            store, namespace = EmbeddingCache(), key
        hits = store.get(namespace, texts) if store else {}
        for i, vector in hits.items():
            out[i] = vector
        todo = [i for i in range(len(texts)) if i not in hits]
        if todo:
            order = sorted(todo, key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
            device = next(self.parameters()).device
            autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext())
            show = progress if progress is not None else len(todo) > batch_size * 4
            from tqdm.auto import tqdm

            with autocast, eval_mode(self):
                for start in tqdm(range(0, len(order), batch_size), desc=f"encoding with {self.source.get('name')}",
                                  unit="batch", disable=not show):
                    rows = order[start:start + batch_size]
                    out[rows] = self.encode_texts([texts[i] for i in rows]).cpu().numpy()
            if store:
                store.put(namespace, [texts[i] for i in todo], out[todo])
        return torch.from_numpy(out)

    def cache_namespace(self) -> str | None:
        """The cache key of everything but the text, or None when vectors are not reproducible
        from the source alone (random init, trainable layers, a learned slot)."""
        if not self.source.get("pretrained") or not self.frozen or self.pooling == "item_slot":
            return None
        return _namespace(self.source, self.pooling, self.max_length, self.normalize,
                          str(next(self.parameters()).dtype))


def _namespace(source: dict, pooling: str, max_length: int, normalize: bool, dtype: str) -> str:
    from recsys.llm.cache import fingerprint

    return fingerprint({k: source.get(k) for k in ("name", "kind", "location", "revision")}
                       | {"pooling": pooling, "max_length": max_length, "normalize": normalize, "dtype": dtype})


def embed_texts(
    backbone: str,
    texts: Sequence[str],
    pooling: Pooling = "mean",
    max_length: int = 64,
    normalize: bool = False,
    batch_size: int = 64,
    progress: bool | None = None,
) -> Tensor:
    """Frozen pretrained embeddings of texts, (N,) -> (N, dim); the model is loaded only
    when some text is not in the cache, so a repeated call costs a database read."""
    from recsys.llm.backbones import resolve_backbone
    from recsys.llm.cache import EmbeddingCache

    source = resolve_backbone(backbone).source
    namespace = _namespace(source, pooling, max_length, normalize, "torch.float32")
    texts = [str(t) for t in texts]
    if source["kind"] != "random":
        hits = EmbeddingCache().get(namespace, texts)
        if len(hits) == len(texts) and texts:
            return torch.from_numpy(np.stack([hits[i] for i in range(len(texts))]))
    encoder = TextEncoder(backbone, pooling=pooling, max_length=max_length, trainable_layers=0, normalize=normalize)
    assert encoder.cache_namespace() in (namespace, None), "embed_texts and TextEncoder disagree on the cache key"
    return encoder.encode(texts, batch_size=batch_size, progress=progress)
