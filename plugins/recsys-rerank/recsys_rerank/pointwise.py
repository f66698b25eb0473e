"""The pointwise LLM reranker: ask a causal LM, for each candidate on its own, whether the user
will like it next, and rank by how much more it says "Yes" than "No" (LLMRank's pointwise
setting; the zero-shot rows of a candidate-list table)."""

from __future__ import annotations

import torch
from torch import Tensor

import recsys
from recsys_rerank.llm import LLMReranker

PROMPT = ("A user has recently interacted with these items, oldest first:\n{history}\n\n"
          "Will the user like this item next: {candidate}\nAnswer Yes or No.")


class PointwiseLLM(LLMReranker):
    """Score = log P("Yes") - log P("No") as the answer to :data:`PROMPT` (one prompt per candidate).

    Args:
        prompt: the question, with ``{history}`` (one item per line) and ``{candidate}``.
        backbone, template, history_items, chat, chunk, recency: as :class:`recsys_rerank.llm.LLMReranker`.

    A candidate's score depends neither on the other candidates nor on its place in the list.
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", template: str = "title", history_items: int = 10,
                 prompt: str = PROMPT, chat: bool = True, chunk: int = 16, recency: bool = False):
        super().__init__(backbone, template, history_items, chat, chunk, recency=recency)
        self.prompt = prompt

    def prompts(self, batch: recsys.Batch, candidates: Tensor) -> list[list[str]]:
        """The (B, C) prompts: the window's last ``history_items`` items (oldest first) and one candidate."""
        # without a chat template the answer follows "Answer:", so the words carry their space
        answer = "" if self.uses_chat else "\nAnswer:"
        return [[self.as_prompt(self.prompt.format(history=self.recent(history), candidate=self.texts[c]), answer)
                 for c in listed] for history, listed in zip(batch.history.tolist(), candidates.tolist())]

    @torch.no_grad()
    def score(self, batch: recsys.Batch, candidates: Tensor) -> Tensor:
        rows = self.prompts(batch, candidates)
        flat = [p for row in rows for p in row]
        space = "" if self.uses_chat else " "
        yes, no = (self.answer_token(flat[0], space + word) for word in ("Yes", "No"))
        logprobs = self.next_token_logprobs(flat)
        self.counts["rows"] += len(rows)
        out = (logprobs[:, yes] - logprobs[:, no]).reshape(candidates.shape).to(candidates.device)
        return out.masked_fill(candidates == 0, float("-inf"))
