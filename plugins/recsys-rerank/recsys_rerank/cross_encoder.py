"""A cross-encoder reranker: a small bidirectional encoder (MiniLM) reads the user's recent items and
one candidate together and a linear head scores the pair. It is the CPU-sized, non-generative
baseline LLM rerankers are compared with; it must be trained (``recsys fit`` with
``recsys_rerank.Rerank``), since a fresh head scores at random."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import recsys
import recsys.llm


class CrossEncoder(recsys.Reranker):
    """Score(user, candidate) = w · pool(encoder("recent items" [SEP] "candidate")) + b.

    Args:
        backbone: an encoder ``recsys.llm.load_backbone`` takes (``all-minilm-l6-v2`` offline).
        template: the item template writing each item's text.
        history_items: the user's most recent items in the first segment, newest first (the
            text is truncated from its end, so the oldest go first).
        max_length: tokens per (history, candidate) pair.
        trainable_layers: encoder blocks trained from the top (None: all, 0: only the head).
        chunk: pairs per forward pass when scoring.

    Trained with a softmax cross-entropy over each training list (the target against the other
    candidates), as listwise-trained cross-encoders are.
    """

    def __init__(self, backbone: str = "all-minilm-l6-v2", template: str = "title", history_items: int = 5,
                 max_length: int = 128, trainable_layers: int | None = None, chunk: int = 64):
        super().__init__()
        if history_items < 1 or max_length < 8 or chunk < 1:
            raise ValueError("history_items and chunk must be >= 1 and max_length >= 8")
        self.template, self.history_items, self.max_length, self.chunk = template, history_items, max_length, chunk
        self.encoder = recsys.llm.TextEncoder(backbone, pooling="cls", max_length=max_length, trainable_layers=trainable_layers)
        self.head = nn.Linear(self.encoder.dim, 1)
        #: frozen pretrained weights Rerank keeps out of checkpoints: {parameter prefix: backbone source}
        self.backbone_prefixes = {"encoder.transformer.": self.encoder.source}

    def on_catalog(self, catalog: recsys.Catalog) -> None:
        super().on_catalog(catalog)
        self.texts = recsys.llm.render_items(catalog, self.template)

    def pairs(self, batch: recsys.Batch, candidates: Tensor) -> tuple[list[str], list[str]]:
        """The (B * C) pairs, row-major: the window's recent items (newest first) and a candidate."""
        firsts, seconds = [], []
        for history, listed in zip(batch.history.tolist(), candidates.tolist()):
            recent = " ; ".join(self.texts[i] for i in [i for i in history if i > 0][-self.history_items:][::-1])
            firsts += [recent] * len(listed)
            seconds += [self.texts[c] for c in listed]
        return firsts, seconds

    def logits(self, firsts: list[str], seconds: list[str]) -> Tensor:
        encoded = self.encoder.tokenizer(firsts, seconds, padding=True, truncation="longest_first",
                                         max_length=self.max_length, return_tensors="pt")
        pooled = self.encoder(encoded["input_ids"], encoded["attention_mask"])
        return self.head(pooled).squeeze(-1)

    def _scores(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        firsts, seconds = self.pairs(batch, candidates)
        out = torch.cat([self.logits(firsts[i:i + self.chunk], seconds[i:i + self.chunk])
                         for i in range(0, len(firsts), self.chunk)])
        return out.reshape(candidates.shape).to(candidates.device)

    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        with torch.no_grad():
            return self._scores(batch, candidates).masked_fill(candidates == 0, float("-inf"))

    def loss(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        scores = self._scores(batch, candidates)
        return nn.functional.cross_entropy(scores, (candidates == batch.target[:, None]).float().argmax(dim=1))
