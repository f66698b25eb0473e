"""Interaction filters shared by converters and data modules: rating threshold, history cap, k-core."""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)

USER, ITEM, RATING, TIME = "user_id", "item_id", "rating", "timestamp"


def sort_interactions(inter: pd.DataFrame, tie_break: str = "file") -> pd.DataFrame:
    """Stable sort by (user, timestamp); equal timestamps keep file order (``tie_break='file'``,
    as RecBole and most published pipelines) or are ordered by item id (``'item'``).

    File order is the default because item ids are not neutral: in MovieLens-100k, ids grow with
    the date a movie entered the catalog, so an item-id tie-break makes the held-out targets
    systematically the newer, less popular movies (Pop's test hit@10: 0.050 instead of 0.084).
    """
    if tie_break not in ("item", "file"):
        raise ValueError(f"tie_break must be 'item' or 'file', got {tie_break!r}")
    if TIME not in inter.columns:
        return inter.sort_values([USER], kind="stable").reset_index(drop=True)  # no time: file order is the order
    keys = [USER, TIME] + ([ITEM] if tie_break == "item" and ITEM in inter.columns else [])
    return inter.sort_values(keys, kind="stable").reset_index(drop=True)


def filter_interactions(
    inter: pd.DataFrame,
    min_rating: float | None = None,
    max_history: int | None = None,
    k_core: int | None = None,
    tie_break: str = "file",
) -> pd.DataFrame:
    """Apply, in this order: keep ratings >= ``min_rating``; keep each user's last ``max_history``
    interactions (by time); then drop users and items with fewer than ``k_core`` interactions,
    repeatedly, until none is left (k-core last, so its guarantee holds on the result)."""
    before = len(inter)
    if min_rating is not None:
        if RATING not in inter.columns:
            raise ValueError(f"min_rating={min_rating} needs a {RATING!r} column; the interactions have {list(inter.columns)}")
        inter = inter[inter[RATING] >= min_rating]
    if max_history is not None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        inter = sort_interactions(inter, tie_break)
        inter = inter.groupby(USER, sort=False).tail(max_history)
    if k_core is not None and k_core > 1:
        while True:
            users = inter[USER].map(inter[USER].value_counts())
            items = inter[ITEM].map(inter[ITEM].value_counts())
            keep = (users >= k_core) & (items >= k_core)
            if keep.all():
                break
            inter = inter[keep]
    if len(inter) != before:
        log.info("filters kept %d of %d interactions", len(inter), before)
    return inter.reset_index(drop=True)
