"""Token <-> index maps with index 0 reserved for padding."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

PAD = 0


def _natural_order(tokens: Iterable[str]) -> list[str]:
    """Numeric ids sort as numbers ("2" < "10"), anything else as strings."""
    unique = pd.unique(np.asarray(list(tokens), dtype=object))
    try:
        return [t for _, t in sorted((int(t), t) for t in unique)]
    except ValueError:
        return sorted(unique)


class Vocab:
    """Maps raw ids (strings) to indices 1..n; index 0 is PAD.

    Tokens are in natural order, so indices never depend on the order of rows in a file.
    """

    def __init__(self, tokens: Sequence[str]):
        self.tokens: list[str] = ["[PAD]", *tokens]
        self._index = pd.Index(self.tokens[1:])
        if not self._index.is_unique:
            raise ValueError("vocabulary tokens must be unique")

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> "Vocab":
        return cls(_natural_order(tokens))

    def __len__(self) -> int:
        """Number of real tokens (PAD excluded)."""
        return len(self.tokens) - 1

    def index(self, tokens: Sequence[str] | pd.Series, what: str = "id") -> np.ndarray:
        """Indices of ``tokens`` (int64); unknown tokens raise ``KeyError`` naming the first."""
        positions = self._index.get_indexer(pd.Index(tokens))
        if (positions < 0).any():
            unknown = pd.Index(tokens)[positions < 0][0]
            raise KeyError(f"unknown {what} {unknown!r}")
        return positions.astype(np.int64) + 1

    def token(self, index: int) -> str:
        if not 0 < index < len(self.tokens):
            raise IndexError(f"index {index} is outside 1..{len(self)}")
        return self.tokens[index]
