"""Grounding: map what a generative model produced (text, code tuples) to real catalog items."""

from __future__ import annotations

import abc
import re
import unicodedata
from collections import defaultdict
from typing import Sequence

import torch
from torch import Tensor

from recsys.data.catalog import Catalog


class Grounder(abc.ABC):
    """Turns B generated outputs into ranked catalog items.

    Call ``fit(catalog)`` once, then ``ground(outputs, k)`` per batch.
    """

    def fit(self, catalog: Catalog) -> "Grounder":
        self.catalog = catalog
        return self

    @abc.abstractmethod
    def ground(self, outputs: Sequence[str] | Tensor, k: int) -> tuple[Tensor, Tensor]:
        """B outputs -> ((B, k) int64 item indices, 0 = ungrounded; (B, k) float scores, higher = better)."""


# "Shining, The (1980)" (MovieLens, library catalogues) is "The Shining (1980)" as people and LLMs
# write it: a trailing article moves to the front, before any parenthesised parts (year, alias).
_TRAILING_ARTICLE = re.compile(
    r"^(?P<name>.+?),\s*(?P<article>the|a|an|les|la|le|l'|il|el|los|las|das|der|die|den|det)"
    r"(?P<rest>(?:\s*\([^()]*\))*)\s*$", re.IGNORECASE)


def normalize_title(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form of a title, with a trailing
    article moved to the front: ``"Shining, The (1980)"`` and ``"the shining 1980"`` are equal."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().strip()
    if match := _TRAILING_ARTICLE.match(text):
        text = f"{match['article']} {match['name']}{match['rest']}"
    text = re.sub(r"[^0-9a-z]+", " ", text.lower())
    return " ".join(text.split())


class ExactTitleGrounder(Grounder):
    """An output grounds to the items whose normalised title equals it exactly.

    Titles are not unique (MovieLens-100k repeats 18 title/year pairs), so one output may
    ground to several items: they fill the list in catalog order, with score 1.0; the rest of
    the row is 0 (ungrounded) with score 0.0. A cheap first pass before embedding grounders.
    """

    def fit(self, catalog: Catalog) -> "ExactTitleGrounder":
        super().fit(catalog)
        self.by_title: dict[str, list[int]] = defaultdict(list)
        for index, title in enumerate(catalog.titles[1:], start=1):
            self.by_title[normalize_title(title)].append(index)
        return self

    def ground(self, outputs: Sequence[str] | Tensor, k: int) -> tuple[Tensor, Tensor]:
        ids = torch.zeros(len(outputs), k, dtype=torch.long)
        for row, text in enumerate(outputs):
            matches = self.by_title.get(normalize_title(str(text)), [])[:k]
            ids[row, : len(matches)] = torch.tensor(matches, dtype=torch.long)
        return ids, (ids > 0).float()
