"""Raw-data converters: each turns one raw format into RecBole atomic files.

A converter is ``convert(raw: Path, out: Path, **options) -> Path`` and is registered by name
through the ``register_datasets`` hook; ``recsys convert NAME RAW OUT --option ...`` builds its
command line from the signature and docstring. Converters never download anything.

The built-in ones are format readers, ``read(raw, *, <format options>) -> Converted``, made
converters by :func:`~recsys.data.converters.common.converter`, which owns the options every
converter shares (``out``, ``overwrite``, ``min_rating``, ``max_history``, ``k_core``) and ends
in :func:`save_converted`: the shared filters, then an atomic write. A third party's converter
may do the same, or be any function with the contract above.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsys.data.atomic import DataFormatError, write_dataset
from recsys.data.filters import filter_interactions, sort_interactions


def save_converted(
    out: str | Path,
    inter: pd.DataFrame,
    item: pd.DataFrame | None = None,
    user: pd.DataFrame | None = None,
    *,
    types: dict[str, str] | None = None,
    overwrite: bool = False,
    min_rating: float | None = None,
    max_history: int | None = None,
    k_core: int | None = None,
    source: str | Path | None = None,
) -> Path:
    """Filter, sort and write one converted dataset.

    ``inter`` has columns ``user_id``, ``item_id``, ``timestamp`` (the order value: a Unix time
    or a per-user position) and optionally ``rating``. ``item`` has ``item_id`` plus any text
    columns; ``user`` has ``user_id`` plus any features. Items and users no longer present after
    filtering are dropped from ``item``/``user``. No interactions at all, or none left after the
    filters, is a :class:`~recsys.data.atomic.DataFormatError` naming ``source`` (the raw
    interactions file): an empty dataset is never written.
    """
    where = source or "the raw data"
    if len(inter) == 0:
        raise DataFormatError(f"{where}: no interactions")
    inter = sort_interactions(filter_interactions(inter, min_rating=min_rating, max_history=max_history, k_core=k_core))
    if len(inter) == 0:
        raise DataFormatError(
            f"{where}: no interactions left after the filters (min_rating={min_rating}, max_history={max_history}, "
            f"k_core={k_core})"
        )
    # Ids are compared as text, so int ids on one side and str ids on the other still match.
    inter = inter.assign(user_id=inter["user_id"].astype(str), item_id=inter["item_id"].astype(str))
    if item is not None:
        item = item.assign(item_id=item["item_id"].astype(str))
        item = item[item["item_id"].isin(set(inter["item_id"]))].reset_index(drop=True)
    if user is not None:
        user = user.assign(user_id=user["user_id"].astype(str))
        user = user[user["user_id"].isin(set(inter["user_id"]))].reset_index(drop=True)
    types = {"user_id": "token", "item_id": "token", **(types or {})}
    return write_dataset(out, inter, item, user, types=types, overwrite=overwrite)
