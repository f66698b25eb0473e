"""The pointwise LLM reranker: ask a causal LM, for each candidate on its own, whether the user
will like it next, and rank by how much more it says "Yes" than "No" (LLMRank's pointwise
setting; the zero-shot rows of a candidate-list table)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import recsys
import recsys.llm

PROMPT = ("A user has recently interacted with these items, oldest first:\n{history}\n"
          "Will the user like this item next: {candidate}\nAnswer Yes or No.\nAnswer:")


class PointwiseLLM(recsys.Reranker):
    """Score = log P(" Yes") - log P(" No") for the answer to :data:`PROMPT` (one prompt per candidate).

    Args:
        backbone: any name ``recsys.llm.load_backbone`` takes (SmolLM2-135M-Instruct offline; a hub id).
        template: the item template writing each item's text (``recsys.llm.render_items``).
        history_items: the user's most recent items in the prompt.
        prompt: the prompt, with ``{history}`` (one item per line) and ``{candidate}``.
        chunk: prompts per forward pass.

    The LM is frozen and loaded on first use; it is not part of checkpoints (the backbone name is).
    A candidate's score does not depend on the other candidates or on its place in the list.
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", template: str = "default", history_items: int = 10,
                 prompt: str = PROMPT, chunk: int = 32):
        super().__init__()
        if history_items < 1 or chunk < 1:
            raise ValueError("history_items and chunk must be >= 1")
        self.backbone, self.template, self.history_items, self.prompt, self.chunk = (
            backbone, template, history_items, prompt, chunk)
        self._loaded: dict[str, Any] = {}  # a dict, so the LM is not a registered submodule (not saved)

    def on_catalog(self, catalog: recsys.Catalog) -> None:
        super().on_catalog(catalog)
        self.texts = recsys.llm.render_items(catalog, self.template)

    def prompts(self, batch: recsys.Batch, candidates: Tensor) -> list[list[str]]:
        """The (B, C) prompts: the window's last ``history_items`` items (oldest first) and one candidate."""
        rows = []
        for history, listed in zip(batch.history.tolist(), candidates.tolist()):
            recent = "\n".join(self.texts[i] for i in [i for i in history if i > 0][-self.history_items:])
            rows.append([self.prompt.format(history=recent, candidate=self.texts[c]) for c in listed])
        return rows

    def _lm(self) -> tuple[Any, Any, int, int]:
        if not self._loaded:
            backbone = recsys.llm.load_backbone(self.backbone, head="causal-lm")
            tokenizer = backbone.tokenizer
            tokenizer.padding_side = "left"  # the answer position is the last one of every row
            yes, no = (tokenizer(word, add_special_tokens=False).input_ids[0] for word in (" Yes", " No"))
            self._loaded.update(model=backbone.model.eval().requires_grad_(False), tokenizer=tokenizer, yes=yes, no=no)
        return self._loaded["model"], self._loaded["tokenizer"], self._loaded["yes"], self._loaded["no"]

    @torch.no_grad()
    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        model, tokenizer, yes, no = self._lm()
        flat = [p for row in self.prompts(batch, candidates) for p in row]
        scores = []
        for start in range(0, len(flat), self.chunk):
            encoded = tokenizer(flat[start:start + self.chunk], return_tensors="pt", padding=True)
            # positions count real tokens only, so a left-padded prompt reads as if it stood alone
            # (transformers 5 derives this itself for Llama; explicit for every other architecture)
            positions = (encoded["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
            logits = model(**encoded, position_ids=positions).logits[:, -1].float().log_softmax(dim=-1)
            scores.append(logits[:, yes] - logits[:, no])
        out = torch.cat(scores).reshape(candidates.shape).to(candidates.device)
        return out.masked_fill(candidates == 0, float("-inf"))
