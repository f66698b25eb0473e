"""Beam ranking: top-k items from beam search constrained by the items' code trie.

``generate`` runs with a :class:`~recsys_semantic_ids.trie.TrieConstraint`, so every finished
beam is a real item outside the user's history, scored by its constrained log-probability
(the quantity :class:`~recsys_semantic_ids.exact_scorer.ExactScorer` computes for every item).
Shapes: B prompts, k items asked for, L levels, N items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from recsys_semantic_ids.prompts import collate
from recsys_semantic_ids.trie import CodeTrie, TrieConstraint

#: transformers' beam search scores slots that never held a live beam -1e9 (or -inf once masked)
UNFILLED = -1e8


@dataclass(frozen=True)
class BeamRanking:
    """items: (B, k) item ids, best first; scores: (B, k) their beam scores (-inf for fillers);
    valid: (V,) float 0/1, one per returned (non-empty) beam: a real item not excluded."""

    items: Tensor
    scores: Tensor
    valid: Tensor


class Generator(Protocol):
    """What the ranker needs of the LM: transformers' ``generate``."""

    def generate(self, *args: Any, **kwargs: Any) -> Any: ...


class TrieBeamRanker:
    """Constrained beam search over a causal LM.

    lm: a transformers model with ``generate`` (peft-wrapped or not).
    trie: the items' :class:`CodeTrie` (its tuples are code-token ids of length L).
    pad_id: the token prompts are left-padded with.
    num_beams: beams per prompt (at least k are used).
    """

    def __init__(self, lm: Generator, trie: CodeTrie, pad_id: int, num_beams: int):
        self.lm, self.trie, self.pad_id, self.num_beams = lm, trie, pad_id, num_beams

    @property
    def num_items(self) -> int:
        return len(self.trie.item_of)

    @torch.no_grad()
    def rank(self, prompts: list[list[int]], k: int, seen: Tensor | None = None,
             device: torch.device | str = "cpu") -> BeamRanking:
        """prompts: B token-id lists; seen: (B, S) item ids excluded per prompt (0 = padding).

        Returns (B, min(k, N)) items, de-duplicated and unseen, best first. Rows with fewer
        beams than that are filled (the ranking contract asks for k distinct items) with
        unlisted items scored -inf, unseen ones first: the engine ranks them as unlisted, all
        tied at the bottom, never hits by position."""
        from transformers import GenerationConfig, LogitsProcessorList

        encoded = collate([(p, []) for p in prompts], self.pad_id)
        length = self.trie.length
        beams = max(self.num_beams, k)
        exclusions = [self.trie.exclusion(row.tolist()) for row in seen.cpu()] if seen is not None else None
        constraint = TrieConstraint(self.trie, encoded["input_ids"].shape[1], beams, exclusions)
        config = GenerationConfig(num_beams=beams, num_return_sequences=beams, max_new_tokens=length,
                                  min_new_tokens=length, do_sample=False, early_stopping=True, length_penalty=0.0,
                                  pad_token_id=self.pad_id, eos_token_id=None, bos_token_id=None,
                                  return_dict_in_generate=True, output_scores=True)
        out = self.lm.generate(input_ids=encoded["input_ids"].to(device),
                               attention_mask=encoded["attention_mask"].to(device), generation_config=config,
                               logits_processor=LogitsProcessorList([constraint]))
        generated = out.sequences[:, -length:].reshape(len(prompts), beams, length).tolist()
        scores = out.sequences_scores.float().reshape(len(prompts), beams).tolist()
        k = min(k, self.num_items)
        valid: list[float] = []
        ids = torch.zeros(len(prompts), k, dtype=torch.long)
        top = torch.full((len(prompts), k), float("-inf"))
        for row in range(len(prompts)):
            excluded = set(seen[row].tolist()) if seen is not None else set()
            listed: list[int] = []
            for sequence, score in zip(generated[row], scores[row]):
                if not score > UNFILLED:
                    continue  # an empty beam slot: fewer continuations than beams existed
                item = self.trie.item_of.get(tuple(sequence))
                valid.append(float(item is not None and item not in excluded))
                if item is not None and valid[-1]:
                    if item not in listed and len(listed) < k:  # beams de-duplicated
                        top[row, len(listed)] = score
                        listed.append(item)
            if len(listed) < k:
                rest = [i for i in range(1, self.num_items + 1) if i not in listed]
                rest.sort(key=lambda i: i in excluded)
                listed += rest[:k - len(listed)]
            ids[row] = torch.tensor(listed)
        return BeamRanking(ids.to(device), top.to(device), torch.tensor(valid, device=device))
