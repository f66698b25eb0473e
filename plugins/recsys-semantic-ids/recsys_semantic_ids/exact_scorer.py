"""Exact ranking: every item scored by the teacher-forced log-probability of its code tuple.

At each level the model's next-token distribution is renormalised over the tokens the trie
allows (the code tokens that extend the item's prefix towards a live item), so an item's score
is the log-probability a trie-constrained beam would carry for it, without beam-search noise:

    log P(item) = sum_l [ logit_l(c_l) - logsumexp_{c live under c_<l} logit_l(c) ]

Shapes: N items (item 0 = PAD is not a row here unless said), L levels, P distinct
(L - 1)-prefixes, d hidden size, B prompts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LevelGroups:
    """Items grouped by prefix at one level l (ids are dense, from ``torch.unique``).

    group: (N,) id of each item's l-prefix (the softmax it is normalised in).
    pair: (N,) id of each item's (l + 1)-prefix (the token it takes at level l, in context).
    pair_group: (U,) the group of each pair.
    """

    group: Tensor
    pair: Tensor
    pair_group: Tensor


@dataclass(frozen=True)
class PrefixStructure:
    """What exact scoring needs from the code table, computed once (on CPU).

    levels: one :class:`LevelGroups` per level.
    prefixes: (P, L - 1) distinct code-token prefixes of length L - 1 (the LM inputs whose
        hidden states predict levels 1 .. L - 1).
    row_of: (N,) each item's row in ``prefixes``.
    """

    levels: list[LevelGroups]
    prefixes: Tensor
    row_of: Tensor

    @classmethod
    def from_codes(cls, codes: Tensor, item_tokens: Tensor) -> "PrefixStructure":
        """codes: (N, L) code indices; item_tokens: (N, L) their code-token ids (no PAD row)."""
        codes, item_tokens = codes.cpu(), item_tokens.cpu()
        levels = []
        for level in range(codes.shape[1]):
            group = (torch.unique(codes[:, :level], dim=0, return_inverse=True)[1] if level
                     else torch.zeros(len(codes), dtype=torch.long))
            pair = torch.unique(codes[:, :level + 1], dim=0, return_inverse=True)[1]
            pair_group = torch.zeros(int(pair.max()) + 1, dtype=torch.long).scatter_(0, pair, group)
            levels.append(LevelGroups(group, pair, pair_group))
        prefixes, row_of = torch.unique(item_tokens[:, :-1], dim=0, return_inverse=True)
        return cls(levels, prefixes, row_of)


def group_log_normaliser(logits: Tensor, groups: LevelGroups, live: Tensor) -> Tensor:
    """logits: (N,) each item's logit for its own token at this level; live: (N,) bool.

    Returns (G,) the log-sum-exp of each group's distinct live tokens (a token shared by
    several items counts once; a token whose items are all dead is left out; a group with
    no live token gives -inf).
    """
    device = logits.device
    pairs = len(groups.pair_group)
    pair_logit = torch.zeros(pairs, device=device).scatter_(0, groups.pair, logits)
    pair_alive = torch.zeros(pairs, dtype=torch.bool, device=device).scatter_(0, groups.pair[live], True)
    masked = pair_logit.masked_fill(~pair_alive, float("-inf"))
    num_groups = int(groups.pair_group.max()) + 1
    top = torch.full((num_groups,), float("-inf"), device=device).scatter_reduce(0, groups.pair_group, masked, "amax")
    safe_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # an all-dead group: no NaN
    sums = torch.zeros(num_groups, device=device).scatter_add_(0, groups.pair_group,
                                                               (masked - safe_top[groups.pair_group]).exp())
    return safe_top + sums.log()


def token_logits(output_layer: nn.Module, hidden: Tensor, tokens: Tensor) -> Tensor:
    """hidden (M, d), tokens (M,) -> (M,) the logit of one token per row.

    A plain linear head is applied to the chosen rows only: the whole vocabulary (a pretrained
    LM's is ~50k) is never materialised for every item."""
    if type(output_layer) is nn.Linear:
        logits = (hidden * output_layer.weight[tokens]).sum(-1)
        return logits + output_layer.bias[tokens] if output_layer.bias is not None else logits
    return output_layer(hidden).gather(1, tokens[:, None])[:, 0]


class ExactScorer:
    """Full-catalog constrained log-probabilities from a causal LM.

    trunk: the LM body (a transformers base model: ``input_ids``, ``cache``, ``position_ids``,
        ``attention_mask``, ``use_cache`` -> ``last_hidden_state`` (B, T, d) and ``cache``).
    output_layer: the LM head, hidden (M, d) -> (M, vocab).
    item_tokens: (N + 1, L) code-token ids of items 0..N (row 0 = PAD), on the LM's device.
    structure: the :class:`PrefixStructure` of the same items.
    chunk: (L - 1)-prefixes per forward pass.
    """

    def __init__(self, trunk: nn.Module, output_layer: nn.Module, item_tokens: Tensor,
                 structure: PrefixStructure, chunk: int):
        self.trunk, self.output_layer = trunk, output_layer
        self.item_tokens, self.structure, self.chunk = item_tokens, structure, chunk

    @property
    def num_items(self) -> int:
        return len(self.item_tokens) - 1

    @torch.no_grad()
    def score(self, prompts: list[list[int]], seen: Tensor | None = None) -> Tensor:
        """prompts: B token-id lists; seen: (B, S) item ids to exclude (0 = padding) or None.

        Returns (B, N + 1) log-probabilities; PAD and seen items are -inf and take no share of
        any renormalisation (as in beam search, where they are excluded from the trie)."""
        device = self.item_tokens.device
        out = torch.full((len(prompts), self.num_items + 1), float("-inf"), device=device)
        seen = seen.cpu() if seen is not None else None
        for row, prompt in enumerate(prompts):
            alive = torch.ones(self.num_items + 1, dtype=torch.bool)
            alive[0] = False
            if seen is not None:
                alive[seen[row][seen[row] != 0]] = False
            out[row] = self.item_log_probs(prompt, alive.to(device))
        return out

    def _prefix_states(self, cache, prompt_length: int) -> Tensor:
        """(P, L - 1, d) hidden states after each distinct (L - 1)-prefix, the prompt's KV cache
        copied per chunk (the prompt is encoded once)."""
        device = self.item_tokens.device
        prefixes = self.structure.prefixes.to(device)
        length = prefixes.shape[1]
        states = []
        for start in range(0, len(prefixes), self.chunk):
            chunk = prefixes[start:start + self.chunk]
            chunk_cache = copy.deepcopy(cache)
            chunk_cache.batch_repeat_interleave(len(chunk))
            positions = torch.arange(prompt_length, prompt_length + length, device=device).expand(len(chunk), -1)
            mask = torch.ones(len(chunk), prompt_length + length, dtype=torch.long, device=device)
            states.append(self.trunk(input_ids=chunk, cache=chunk_cache, position_ids=positions,
                                     attention_mask=mask, use_cache=True).last_hidden_state)
        return torch.cat(states)

    def item_log_probs(self, prompt: list[int], alive: Tensor) -> Tensor:
        """prompt: token ids; alive: (N + 1,) bool, the items that may be generated.

        Returns (N + 1,) each item's constrained log-probability (-inf where not alive)."""
        device = self.item_tokens.device
        first = self.trunk(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        tokens = self.item_tokens[1:]  # (N, L)
        n, length = tokens.shape
        # level 0 is predicted by the prompt's last state, level l > 0 by the state after the l-prefix
        states = self._prefix_states(first.cache, len(prompt)) if length > 1 else None
        row_of = self.structure.row_of.to(device)
        live = alive[1:]
        total = torch.zeros(n, device=device)
        for level, groups in enumerate(self.structure.levels):
            if level == 0:
                hidden = first.last_hidden_state[0, -1].expand(n, -1)
            else:
                assert states is not None  # computed whenever there is a level > 0
                hidden = states[row_of, level - 1]
            logits = token_logits(self.output_layer, hidden, tokens[:, level]).float()  # (N,)
            groups = LevelGroups(groups.group.to(device), groups.pair.to(device), groups.pair_group.to(device))
            total = total + logits - group_log_normaliser(logits, groups, live)[groups.group]
        total = total.masked_fill(~live, float("-inf"))
        return torch.cat([torch.tensor([float("-inf")], device=device), total])
