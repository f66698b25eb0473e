"""The item catalog: item rows, titles and popularity. Plain data: it knows nothing of plugins
or templates; :func:`recsys.llm.render_items` turns it into text."""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np
import pandas as pd

from recsys.data.vocab import Vocab

TITLE_FIELDS = ("title", "movie_title", "name")


class Catalog:
    """Every item the model can recommend, indexed 1..N like the item vocabulary (row 0 = PAD).

    Models read it in ``setup()``; item features never travel in batches.
    """

    def __init__(self, dataset: str, vocab: Vocab, fields: pd.DataFrame, popularity: np.ndarray,
                 num_users: int | None = None):
        if len(fields) != len(vocab) + 1 or len(popularity) != len(vocab) + 1:
            raise ValueError("catalog fields and popularity must have one row per item plus the PAD row")
        self.dataset = dataset
        self.vocab = vocab
        self.fields = fields  #: (N + 1) rows, columns = the .item file's fields except the id
        self.popularity = popularity  #: (N + 1,) int64 training interactions per item
        #: users of the data set (the denominator of an item's popularity share); None when unknown
        self.num_users = num_users

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def title_field(self) -> str | None:
        return next((f for f in TITLE_FIELDS if f in self.fields.columns), None)

    def item(self, index: int) -> dict:
        """One item's fields, plus ``item_id`` (the raw id)."""
        return {"item_id": self.vocab.token(index), **self.fields.iloc[index].to_dict()}

    def render(self, template: str = "default") -> list[str]:
        """Deprecated until API 2.0: use :func:`recsys.llm.render_items` ``(catalog, template)``."""
        warnings.warn("Catalog.render(template) is deprecated; use recsys.llm.render_items(catalog, template)",
                      DeprecationWarning, stacklevel=2)
        from recsys.llm.templates import render_items  # the one recsys.llm import under recsys.data (test_layering)

        return render_items(self, template)

    @cached_property
    def titles(self) -> list[str]:
        """Each item's title (the raw id when the catalog has no title field); ``titles[0] == ''``."""
        field = self.title_field
        if field is None:
            return [""] + self.vocab.tokens[1:]
        return [""] + [str(t) for t in self.fields[field].iloc[1:]]
