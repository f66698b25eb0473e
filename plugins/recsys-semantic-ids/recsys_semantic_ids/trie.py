"""A prefix trie over the items' code-token tuples, and the beam-search constraint built on it.

Unlike LC-Rec's position-wise constraint (any token seen at level i), a step may only
extend a prefix that some real item has, so every finished beam is a real item. Items can
be excluded per prompt (the user's history, masked under the evaluation protocol).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import torch
from torch import Tensor
from transformers import LogitsProcessor


class CodeTrie:
    """tokens: (N + 1, L) int64 code-token ids of items 0..N (row 0 = PAD, ignored).

    ``count[prefix]`` = how many items start with ``prefix`` (a tuple of token ids)."""

    def __init__(self, tokens: Tensor):
        rows = tokens[1:].tolist()
        self.length = tokens.shape[1]
        self.item_of: dict[tuple[int, ...], int] = {}
        self.count: Counter = Counter()
        self.children: dict[tuple[int, ...], list[int]] = {}
        for item, row in enumerate(rows, start=1):
            key = tuple(row)
            if key in self.item_of:
                raise ValueError(f"items {self.item_of[key]} and {item} share the code tuple {key}: resolve collisions first")
            self.item_of[key] = item
            for depth in range(self.length + 1):
                self.count[key[:depth]] += 1
        for prefix in self.count:
            if len(prefix) < self.length:
                self.children.setdefault(prefix, [])
        for prefix in self.count:
            if prefix:
                self.children[prefix[:-1]].append(prefix[-1])
        for prefix in self.children:
            self.children[prefix] = sorted(set(self.children[prefix]))
        self._tokens = tokens

    def exclusion(self, items: Iterable[int]) -> Counter:
        """Prefix counts of ``items`` (to subtract: these items may not be generated)."""
        excluded: Counter = Counter()
        for item in set(int(i) for i in items if int(i) > 0):
            key = tuple(self._tokens[item].tolist())
            for depth in range(self.length + 1):
                excluded[key[:depth]] += 1
        return excluded

    def allowed(self, prefix: Sequence[int], excluded: Counter | None = None) -> list[int]:
        """Tokens that extend ``prefix`` towards a real (not excluded) item; [] when complete or dead."""
        prefix = tuple(prefix)
        out = []
        for token in self.children.get(prefix, []):
            key = prefix + (token,)
            if self.count[key] - (excluded[key] if excluded else 0) > 0:
                out.append(token)
        return out


class TrieConstraint(LogitsProcessor):
    """Beam-search constraint: scores of tokens outside the trie become -inf, and the rest are
    renormalised (log-softmax over the allowed tokens), so a beam's score is the log-probability
    of its item under the constrained model -- the same quantity exact ranking computes.

    prompt_length: columns of ``input_ids`` before the generated tokens (prompts left-padded).
    exclusions: one Counter per prompt (from :meth:`CodeTrie.exclusion`), or None.
    rows_per_prompt: beams per prompt (input_ids has B * rows_per_prompt rows).
    """

    def __init__(self, trie: CodeTrie, prompt_length: int, rows_per_prompt: int,
                 exclusions: list[Counter] | None = None):
        self.trie, self.prompt_length, self.rows_per_prompt = trie, prompt_length, rows_per_prompt
        self.exclusions = exclusions
        self._cache: dict[tuple, list[int]] = {}

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        mask = torch.full_like(scores, float("-inf"))
        generated = input_ids[:, self.prompt_length:].tolist()
        for row, prefix in enumerate(generated):
            prompt = row // self.rows_per_prompt
            key = (prompt if self.exclusions else -1, tuple(prefix))
            allowed = self._cache.get(key)
            if allowed is None:
                excluded = self.exclusions[prompt] if self.exclusions else None
                allowed = self._cache[key] = self.trie.allowed(prefix, excluded)
            if allowed:
                mask[row, allowed] = 0.0
        constrained = scores + mask
        alive = torch.isfinite(constrained).any(1)
        constrained[alive] = torch.log_softmax(constrained[alive], dim=-1)
        return constrained
