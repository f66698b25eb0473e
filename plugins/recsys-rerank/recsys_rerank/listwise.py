"""Listwise LLM rerankers: the LM reads every candidate of a window in one prompt.

- :class:`ListwiseLLM` (RankGPT; LLMRank's listwise setting) generates a permutation of the
  candidates' identifiers, "[C] > [A] > [B]", and parses it forgivingly.
- :class:`FIRST` (Reddy et al., 2024, "FIRST: Faster Improved Listwise Reranking with Single Token
  Decoding") reads the same prompt but generates nothing: the logits of the first identifier token
  it would generate rank the candidates, one forward pass per window.

Both show a window of at most 26 candidates as [A]..[Z] and slide over longer lists.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

import recsys
import recsys.llm
from recsys_rerank.ordering import Order, OrderedLLMReranker, identifiers, slide

PROMPT = ("A user has recently interacted with these items, oldest first:\n{history}\n\n"
          "Candidate items:\n{candidates}\n\n"
          "Rank the {count} candidates by how likely the user is to interact with each one next, most likely "
          "first. Answer with the identifiers only, e.g. {example}.")


class WindowedLLMReranker(OrderedLLMReranker):
    """A list-aware LLM reranker that ranks windows of at most ``window`` candidates shown as
    [A], [B], ...: the prompt and the sliding windows shared by :class:`ListwiseLLM` and :class:`FIRST`.

    Args:
        window: candidates per prompt (at most 26).
        step: how far the window moves up a longer list (default: half the window, as RankGPT's 20 and 10).
        prompt: with ``{history}``, ``{candidates}`` (one "[A] text" line each), ``{count}``, ``{example}``.
        backbone, template, history_items, chat, chunk, order, bootstrap, seed, recency: as
            :class:`recsys_rerank.ordering.OrderedLLMReranker`.
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", template: str = "title", history_items: int = 10,
                 chat: bool = True, chunk: int = 8, order: Order = "given", bootstrap: int = 1, seed: int = 0,
                 window: int = 20, step: int | None = None, prompt: str = PROMPT, recency: bool = False):
        super().__init__(backbone, template, history_items, chat, chunk, order, bootstrap, seed, recency=recency)
        identifiers(window)  # fails early on a window wider than the identifiers
        if window < 2:
            raise ValueError(f"window must be >= 2 (one item has no order to rank), got {window}")
        step = window // 2 if step is None else step
        if not 1 <= step <= window:
            raise ValueError(f"step must be in 1..window ({window}), got {step}")
        self.window, self.step, self.prompt = window, step, prompt

    def list_prompt(self, history: str, items: list[int]) -> str:
        """The prompt of one window, ending where the answer's first identifier comes."""
        ids = identifiers(len(items))
        lines = "\n".join(f"[{i}] {self.texts[item]}" for i, item in zip(ids, items))
        example = " > ".join(f"[{i}]" for i in (ids[1:3] + ids[:1] if len(ids) >= 3 else ids[::-1]))
        text = self.prompt.format(history=history, candidates=lines, count=len(items), example=example)
        return self.as_prompt(text, "[" if self.uses_chat else "\nAnswer: [")

    def rank_lists(self, histories: list[str], lists: list[list[int]]) -> list[list[int]]:
        def rank_windows(owners: list[int], windows: list[list[int]]) -> list[list[int]]:
            return self.rank_windows([self.list_prompt(histories[k], w) for k, w in zip(owners, windows)], windows)

        return slide(lists, self.window, self.step, rank_windows)

    def rank_windows(self, prompts: list[str], windows: list[list[int]]) -> list[list[int]]:
        """Each window best first, from its prompt."""
        raise NotImplementedError


class FIRST(WindowedLLMReranker):
    """FIRST: rank a window by the LM's logits for the first identifier of its answer (no generation).

    One forward pass per window; the window's order is the identifiers' logits at the answer's
    first position, highest first (the paper's single-token decoding).

    Args:
        lora_r: 0 = zero-shot (the LM frozen, loaded on first use, not saved); > 0 = LoRA adapters
            of this rank, trained inside :class:`recsys_rerank.Rerank` by ``recsys fit`` (only
            they are saved in checkpoints).
        lora_alpha, lora_dropout: the adapters' scale and dropout.
        rank_weight: λ of FIRST's loss, L = L_LM + λ L_rank (10, castorini's FirstMistral with
            weighted RankNet).
        backbone, template, history_items, chat, chunk, order, bootstrap, seed, window, step,
            prompt, recency: as :class:`WindowedLLMReranker`.

    Training differs from the paper's, which learns a teacher's (GPT-4's) full permutation: a
    recommendation list has one known relevant item, the target. L_LM is the cross-entropy of its
    identifier as the answer's first token (over the whole vocabulary), and L_rank is RankNet on
    the identifier logits over the pairs (target, other candidate), all weighted alike (the
    paper's 1/(r_i + r_j) weights need ranks the other candidates do not have).
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", template: str = "title", history_items: int = 10,
                 chat: bool = True, chunk: int = 8, order: Order = "given", bootstrap: int = 1, seed: int = 0,
                 window: int = 20, step: int | None = None, prompt: str = PROMPT, lora_r: int = 0, lora_alpha: int = 16,
                 lora_dropout: float = 0.05, rank_weight: float = 10.0, recency: bool = False):
        super().__init__(backbone, template, history_items, chat, chunk, order, bootstrap, seed, window, step, prompt,
                         recency=recency)
        if lora_r < 0 or rank_weight < 0:
            raise ValueError(f"lora_r and rank_weight must be >= 0, got {lora_r} and {rank_weight}")
        self.lora_r, self.rank_weight = lora_r, rank_weight
        #: frozen pretrained weights Rerank keeps out of checkpoints: {parameter prefix: backbone source}
        self.backbone_prefixes: dict[str, dict] = {}
        if lora_r:
            loaded = recsys.llm.load_backbone(backbone, head="causal-lm")
            loaded.tokenizer.padding_side = "left"
            self.lm_model = recsys.llm.add_lora(loaded.model, r=lora_r, alpha=lora_alpha, dropout=lora_dropout)
            self._loaded.update(model=self.lm_model, tokenizer=loaded.tokenizer)
            self.backbone_prefixes["lm_model."] = loaded.source

    def letter_tokens(self, prompt: str, count: int) -> list[int]:
        return [self.answer_token(prompt, letter) for letter in identifiers(count)]

    def rank_windows(self, prompts: list[str], windows: list[list[int]]) -> list[list[int]]:
        logprobs = self.next_token_logprobs(prompts)
        out = []
        for row, (prompt, items) in enumerate(zip(prompts, windows)):
            order = logprobs[row, self.letter_tokens(prompt, len(items))].argsort(descending=True, stable=True)
            out.append([items[k] for k in order.tolist()])
        return out

    def loss(self, batch: recsys.Batch, candidates: Tensor) -> Tensor | None:
        """L_LM + λ L_rank on training lists (each holding its target once; no padding)."""
        if not self.lora_r:
            return None
        if candidates.shape[1] > self.window:
            raise ValueError(f"training lists of {candidates.shape[1]} candidates exceed window {self.window}: "
                             "lower model.top_n")
        prompts = [self.list_prompt(self.recent(h), items)
                   for h, items in zip(batch.history.tolist(), candidates.tolist())]
        logits = self.answer_logits(prompts).float()  # (B, V)
        tokens = torch.tensor(self.letter_tokens(prompts[0], candidates.shape[1]), device=logits.device)
        where = (candidates == batch.target[:, None]).float().argmax(dim=1).to(logits.device)  # (B,)
        lm_loss = nn.functional.cross_entropy(logits, tokens[where])
        letters = logits[:, tokens]  # (B, C)
        above = letters - letters.gather(1, where[:, None])  # > 0 where a candidate outscores the target
        others = torch.ones_like(letters, dtype=torch.bool).scatter_(1, where[:, None], False)
        rank_loss = nn.functional.softplus(above)[others].mean()  # RankNet: BCE of (target > other)
        return lm_loss + self.rank_weight * rank_loss


class ListwiseLLM(WindowedLLMReranker):
    """Listwise reranking by generation: the LM writes "[C] > [A] > ..." and the window takes that order.

    The answer is parsed forgivingly, as RankGPT does: identifiers outside the window and repeats
    are dropped, and the candidates it never names follow in the order they were shown. ``counts``
    adds ``unknown_ids``, ``repeated_ids`` and ``missing_ids`` so a table can say how often.
    """

    def rank_windows(self, prompts: list[str], windows: list[list[int]]) -> list[list[int]]:
        longest = max(len(w) for w in windows)
        answers = self.generate(prompts, max_new_tokens=4 * longest + 2)  # "[X] > " is at most 4 tokens
        return [self.parse("[" + answer, items) for answer, items in zip(answers, windows)]

    def parse(self, answer: str, items: list[int]) -> list[int]:
        """The window's order from a generated answer (see the class docstring)."""
        ids = identifiers(len(items))
        named: list[int] = []
        for letter in re.findall(r"\[\s*([A-Za-z])\s*\]", answer):
            k = ids.find(letter.upper())
            if k < 0:
                self.counts["unknown_ids"] += 1
            elif items[k] in named:
                self.counts["repeated_ids"] += 1
            else:
                named.append(items[k])
        missing = [item for item in items if item not in named]
        self.counts["missing_ids"] += len(missing)
        return named + missing
