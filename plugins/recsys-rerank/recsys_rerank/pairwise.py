"""PRP, pairwise ranking prompting (Qin et al., 2024, "Large Language Models are Effective Text
Rankers with Pairwise Ranking Prompting"): the LM is asked which of two candidates the user will
prefer, in both orders so that its preference for the first (or second) slot cancels out, and the
pairwise answers are turned into a ranking:

- ``allpair``: every pair, both orders; a candidate's score is its summed win probability
  (C(C-1) prompts per list; independent of the order the list comes in);
- ``sliding``: ``passes`` bubble-sort passes from the bottom of the list up (2 prompts per
  comparison, (C-1) + (C-2) + ... comparisons); it keeps the given order where the LM has no
  preference, so it inherits a retriever's order.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal

from recsys_rerank.ordering import Order, OrderedLLMReranker

PROMPT = ("A user has recently interacted with these items, oldest first:\n{history}\n\n"
          "Which item is the user more likely to interact with next?\nItem A: {first}\nItem B: {second}\n"
          "Answer with A or B.")


class PRP(OrderedLLMReranker):
    """Pairwise ranking prompting, scored from the log-probabilities of the answers "A" and "B".

    Args:
        method: ``allpair`` or ``sliding`` (see the module docstring).
        passes: bubble-sort passes of ``sliding`` (the top ``passes`` items are then final).
        prompt: with ``{history}``, ``{first}`` and ``{second}``.
        backbone, template, history_items, chat, chunk, order, bootstrap, seed, recency: as
            :class:`recsys_rerank.ordering.OrderedLLMReranker`.

    The preference of a for b is P(a | a first) averaged with P(a | a second), each the softmax
    of the two answers' log-probabilities.
    """

    def __init__(self, backbone: str = "smollm2-135m-instruct", template: str = "title", history_items: int = 10,
                 chat: bool = True, chunk: int = 16, order: Order = "given", bootstrap: int = 1, seed: int = 0,
                 method: Literal["allpair", "sliding"] = "sliding", passes: int = 10, prompt: str = PROMPT,
                 recency: bool = False):
        super().__init__(backbone, template, history_items, chat, chunk, order, bootstrap, seed, recency=recency)
        if method not in ("allpair", "sliding"):
            raise ValueError(f"method must be 'allpair' or 'sliding', got {method!r}")
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        self.method, self.passes, self.prompt = method, passes, prompt

    def pair_prompt(self, history: str, first: int, second: int) -> str:
        text = self.prompt.format(history=history, first=self.texts[first], second=self.texts[second])
        return self.as_prompt(text, "" if self.uses_chat else "\nAnswer:")

    def preferences(self, pairs: list[tuple[str, int, int]]) -> list[float]:
        """P(a preferred to b) for each (history, a, b), from both orders."""
        if not pairs:
            return []
        prompts = [self.pair_prompt(h, a, b) for h, a, b in pairs] + [self.pair_prompt(h, b, a) for h, a, b in pairs]
        logprobs = self.next_token_logprobs(prompts)
        space = "" if self.uses_chat else " "
        first, second = (self.answer_token(prompts[0], space + word) for word in ("A", "B"))
        picked = logprobs[:, [first, second]].softmax(dim=1)[:, 0]  # P("A") between the two answers
        n = len(pairs)
        return ((picked[:n] + (1 - picked[n:])) / 2).tolist()

    def rank_lists(self, histories: list[str], lists: list[list[int]]) -> list[list[int]]:
        if self.method == "allpair":
            return self._allpair(histories, lists)
        return self._sliding(histories, lists)

    def _allpair(self, histories: list[str], lists: list[list[int]]) -> list[list[int]]:
        pairs = [(k, a, b) for k, items in enumerate(lists) for a, b in combinations(sorted(items), 2)]
        wins = self.preferences([(histories[k], a, b) for k, a, b in pairs])
        points = [dict.fromkeys(items, 0.0) for items in lists]
        for (k, a, b), p in zip(pairs, wins):
            points[k][a] += p
            points[k][b] += 1 - p
        # stable: ties keep the order the list was shown in
        return [sorted(items, key=mine.__getitem__, reverse=True) for items, mine in zip(lists, points)]

    def _sliding(self, histories: list[str], lists: list[list[int]]) -> list[list[int]]:
        out = [list(items) for items in lists]
        longest = max((len(items) for items in out), default=0)
        for done in range(min(self.passes, max(longest - 1, 0))):
            # one pass: compare positions (j, j+1) from the bottom up to `done`, every list in step
            for j in range(longest - 2, done - 1, -1):
                active = [k for k, items in enumerate(out) if j + 1 < len(items)]
                if not active:
                    continue
                below_wins = self.preferences([(histories[k], out[k][j + 1], out[k][j]) for k in active])
                for k, p in zip(active, below_wins):
                    if p > 0.5:
                        out[k][j], out[k][j + 1] = out[k][j + 1], out[k][j]
        return out

