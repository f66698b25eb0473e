"""Item code tuples: collision rate, collision resolution, random codes, the codes file.

A code table is (N + 1, L) int64, row i = item i's codes, row 0 = PAD (all zeros, unused).
``levels`` lists each level's size K_l (the last may be a disambiguation level).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

import recsys

FORMAT = "recsys-semantic-ids/codes-v1"


def collision_rate(codes: Tensor) -> float:
    """Fraction of items whose tuple another item also has: 1 - distinct / N (LC-Rec's measure).
    codes: (N, L) (no PAD row)."""
    if len(codes) == 0:
        return 0.0
    return 1.0 - len(torch.unique(codes, dim=0)) / len(codes)


def colliding_groups(codes: Tensor) -> list[Tensor]:
    """Index groups (into ``codes``' rows) sharing one tuple, for every tuple held by 2+ rows."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    groups = torch.split(order, torch.bincount(inverse, minlength=len(counts)).tolist())
    return [g for g in groups if len(g) > 1]


def resolve_collisions(codes: Tensor, requantise: Callable[[Tensor], Tensor], rounds: int = 20) -> Tensor:
    """LC-Rec's resolution: for up to ``rounds`` rounds, re-quantise every colliding group
    alone (``requantise(rows) -> (len(rows), L)``, Sinkhorn on the last level spreads a group
    over distinct last codes), until no tuple is shared. Returns new (N, L) codes."""
    codes = codes.clone()
    for _ in range(rounds):
        groups = colliding_groups(codes)
        if not groups:
            break
        for group in groups:
            codes[group] = requantise(group)
    return codes


def add_disambiguation_level(codes: Tensor) -> tuple[Tensor, int]:
    """Append a level that numbers the items sharing a tuple 0, 1, ... (in item order), 0 for
    items with a unique tuple. Returns ((N, L + 1) unique codes, size of the new level).
    Callers add it only when collisions remain (identical texts give identical vectors)."""
    extra = torch.zeros(len(codes), 1, dtype=codes.dtype)
    for group in colliding_groups(codes):
        extra[group, 0] = torch.arange(len(group), dtype=codes.dtype)
    return torch.cat([codes, extra], 1), int(extra.max()) + 1


def random_codes(num_items: int, levels: list[int], seed: int) -> Tensor:
    """(N, L) distinct tuples drawn uniformly from the product of ``levels`` (the random-ID
    ablation: the same shape as the semantic codes, no meaning)."""
    total = int(np.prod([int(k) for k in levels], dtype=object))
    if total < num_items:
        raise ValueError(f"levels {levels} hold {total} tuples, fewer than the {num_items} items")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < num_items:  # rejection sampling: the product space may be huge
        for value in rng.integers(0, total, size=2 * (num_items - len(chosen))).tolist():
            if value not in seen and len(chosen) < num_items:
                seen.add(value)
                chosen.append(value)
    out = np.zeros((num_items, len(levels)), dtype=np.int64)
    flat = np.array(chosen, dtype=object)
    for level in reversed(range(len(levels))):
        out[:, level] = (flat % levels[level]).astype(np.int64)
        flat = flat // levels[level]
    return torch.from_numpy(out)


@dataclass
class CodeTable:
    """What the tokenizer writes and the generators read."""

    item_ids: list[str]  #: raw item ids, in item-index order 1..N
    codes: Tensor  #: (N, L) int64
    levels: list[int]  #: size of each level
    stats: dict = field(default_factory=dict)  #: collision rates, method, ...

    def __post_init__(self):
        if self.codes.dim() != 2 or len(self.codes) != len(self.item_ids):
            raise ValueError(f"codes must be (N, L) with N = {len(self.item_ids)} items, got {tuple(self.codes.shape)}")
        if self.codes.shape[1] != len(self.levels):
            raise ValueError(f"codes have {self.codes.shape[1]} levels but levels lists {len(self.levels)}")
        if len(self.codes) and ((self.codes < 0).any() or (self.codes >= torch.tensor(self.levels)).any()):
            raise ValueError("a code is outside its level's range")

    def padded(self) -> Tensor:
        """(N + 1, L): row 0 is PAD."""
        return torch.cat([torch.zeros(1, self.codes.shape[1], dtype=torch.long), self.codes.long()])

    def write(self, path: str | os.PathLike) -> Path:
        """Write as JSON atomically (a temporary file in the same directory, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "levels": self.levels, "stats": self.stats,
                   "items": dict(zip(self.item_ids, self.codes.tolist()))}
        with recsys.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "CodeTable":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"codes file {path} does not exist: write it with `recsys predict` on a "
                                    "trained RQVAE (model.codes_path)")
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a codes file (format {payload.get('format')!r}, expected {FORMAT!r})")
        items = payload["items"]
        codes = torch.tensor(list(items.values()), dtype=torch.long).reshape(len(items), len(payload["levels"]))
        return cls(list(items), codes, [int(k) for k in payload["levels"]], payload.get("stats", {}))
