"""Generic CSV pair converter (``csv``): interactions with a user, an item and a time or order
column, and optionally an item table with any text columns."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.atomic import DataFormatError
from recsys.data.converters.common import (
    ITEM, READ_ERRORS, RATING, TIME, USER, Converted, complete_items, converter, drop_duplicate_interactions,
    read_error, require_columns, to_number, to_token,
)

log = logging.getLogger(__name__)

#: Seconds per unit of a numeric time column.
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _read_csv(path: Path, sep: str, encoding: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        return pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
            encoding="utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding,
        )
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: empty file, expected a header line") from None
    except READ_ERRORS as exc:  # malformed rows, bytes not in ``encoding``, a truncated .gz
        raise read_error(path, exc, encoding) from None


def _to_seconds(series: pd.Series, path: Path, column: str, time_unit: str) -> pd.Series:
    """Numeric times are scaled by ``time_unit``; otherwise ISO 8601 strings (naive = UTC)."""
    numbers = pd.to_numeric(series.replace("", np.nan), errors="coerce")
    if numbers.notna().all() and np.isfinite(numbers).all():
        return numbers.astype("float64") * TIME_UNITS[time_unit]
    dates = pd.to_datetime(series.replace("", np.nan), utc=True, format="ISO8601", errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{path}:{row + 2}: field {column!r} is neither a number nor an ISO 8601 date: {series.iloc[row]!r}"
        )
    return ((dates - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).astype("float64")


@converter
def convert(
    raw: Path,
    *,
    interactions: str = "interactions.csv",
    items: str | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = None,
    order_col: str | None = None,
    rating_col: str | None = None,
    time_unit: str = "s",
    item_id_col: str | None = None,
    text_cols: list[str] | None = None,
    sep: str = ",",
    encoding: str = "utf-8",
) -> Converted:
    """Convert a CSV pair (interactions: user, item, a time or per-user order column, optional rating; optional items with text) to atomic files.

    Args:
        raw: A directory holding the files, or the interactions file itself.
        interactions: Interactions file name (relative to ``raw``) or path.
        items: Items file name or path; by default ``items.csv`` if present.
        user_col: User id column of the interactions file.
        item_col: Item id column of the interactions file.
        time_col: Timestamp column, numbers (see time_unit) or ISO 8601 dates (naive = UTC), written
            as Unix seconds; by default ``timestamp`` when neither it nor ``order_col`` is given.
            Other interaction columns (e.g. a precomputed split) are dropped.
        order_col: Per-user position column, used as the order when there is no timestamp.
        rating_col: Rating column, if any.
        time_unit: Unit of a numeric ``time_col``: s, ms, us or ns.
        item_id_col: Item id column of the items file (default: ``item_col``).
        text_cols: Item columns to keep (default: all but the id).
        sep: Field separator of both files.
        encoding: Encoding of both files.
    """
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {sorted(TIME_UNITS)}, got {time_unit!r}")
    if time_col is not None and order_col is not None:
        raise ValueError(f"give time_col or order_col, not both (got {time_col!r} and {order_col!r})")
    if raw.is_file():
        inter_path, base = raw, raw.parent
    else:
        if not raw.is_dir():
            raise DataFormatError(f"{raw}: no such directory or file")
        inter_path, base = raw / interactions, raw
        if Path(interactions).is_absolute():
            inter_path = Path(interactions)

    frame = _read_csv(inter_path, sep, encoding)
    if time_col is None and order_col is None:
        if TIME not in frame.columns:
            raise DataFormatError(
                f"{inter_path}: no column {TIME!r}; name the time column (time_col) or the per-user "
                f"order column (order_col) (columns present: {list(frame.columns)})"
            )
        time_col = TIME
    order = time_col if time_col is not None else order_col
    require_columns(frame, [user_col, item_col, order] + ([rating_col] if rating_col else []), inter_path)
    inter = pd.DataFrame({
        USER: to_token(frame[user_col], inter_path, user_col),
        ITEM: to_token(frame[item_col], inter_path, item_col),
    })
    if rating_col:
        inter[RATING] = to_number(frame[rating_col], inter_path, rating_col)
    if time_col is not None:
        inter[TIME] = _to_seconds(frame[time_col], inter_path, time_col, time_unit)
    else:
        assert order_col is not None  # time_col is set to TIME above when neither is given
        inter[TIME] = to_number(frame[order_col], inter_path, order_col)
    del frame
    inter = drop_duplicate_interactions(inter, inter_path)

    item = None
    items_path: Path | None
    if items is None:
        items_path = base / "items.csv"
        items_path = items_path if items_path.is_file() else None
    else:
        items_path = Path(items) if Path(items).is_absolute() else base / items
    if items_path is not None:
        table = _read_csv(items_path, sep, encoding)
        id_col = item_id_col or item_col
        columns = [c for c in table.columns if c != id_col] if text_cols is None else list(text_cols)
        require_columns(table, [id_col, *columns], items_path)
        if ITEM in columns:
            raise ValueError(f"{items_path}: text column {ITEM!r} would clash with the item id; leave it out of text_cols")
        item = pd.DataFrame({ITEM: to_token(table[id_col], items_path, id_col)})
        for column in columns:
            item[column] = table[column].astype("str")
        item = complete_items(item, inter, items_path)
    log.info("%s: %d interactions, %d users, %d items", inter_path, len(inter), inter[USER].nunique(), inter[ITEM].nunique())
    types = {c: "token" for c in (item.columns if item is not None else [])}
    types.update({RATING: "float", TIME: "float"} if rating_col else {TIME: "float"})
    return Converted(inter, item, types=types, source=inter_path)
