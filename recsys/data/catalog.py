"""The item catalog: item rows, their text (through the ``item_to_text`` hook) and popularity."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from recsys.data.vocab import Vocab

TITLE_FIELDS = ("title", "movie_title", "name")


class Catalog:
    """Every item the model can recommend, indexed 1..N like the item vocabulary (row 0 = PAD).

    Models read it in ``setup()``; item features never travel in batches.
    """

    def __init__(self, dataset: str, vocab: Vocab, fields: pd.DataFrame, popularity: np.ndarray):
        if len(fields) != len(vocab) + 1 or len(popularity) != len(vocab) + 1:
            raise ValueError("catalog fields and popularity must have one row per item plus the PAD row")
        self.dataset = dataset
        self.vocab = vocab
        self.fields = fields  #: (N + 1) rows, columns = the .item file's fields except the id
        self.popularity = popularity  #: (N + 1,) int64 training interactions per item

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def title_field(self) -> str | None:
        return next((f for f in TITLE_FIELDS if f in self.fields.columns), None)

    def item(self, index: int) -> dict:
        """One item's fields, plus ``item_id`` (the raw id)."""
        return {"item_id": self.vocab.token(index), **self.fields.iloc[index].to_dict()}

    def text(self, index: int) -> str:
        from recsys.registry import item_to_text

        return item_to_text(self.item(index), self.dataset)

    @cached_property
    def texts(self) -> list[str]:
        """Text of every item; ``texts[0]`` is the PAD item's empty string."""
        return [""] + [self.text(i) for i in range(1, len(self) + 1)]

    def render(self, template: str = "default") -> list[str]:
        """Every item's text under a named template (``recsys.llm.templates``); ``[0] == ''``."""
        from recsys.llm.templates import get_template

        fn = get_template(template, self.dataset)
        return [""] + [fn(self.item(i), self.dataset) for i in range(1, len(self) + 1)]

    @cached_property
    def titles(self) -> list[str]:
        """Each item's title (the raw id when the catalog has no title field); ``titles[0] == ''``."""
        field = self.title_field
        if field is None:
            return [""] + self.vocab.tokens[1:]
        return [""] + [str(t) for t in self.fields[field].iloc[1:]]
