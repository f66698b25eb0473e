"""Pieces every converter uses: the options they share (:func:`converter`), output checks, read
errors, column checks, typed columns, de-duplication."""

from __future__ import annotations

import functools
import inspect
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, cast

import numpy as np
import pandas as pd

from recsys.data.atomic import READ_ERRORS, DataFormatError, read_error  # noqa: F401 - re-exported to the converters
from recsys.data.converters import save_converted
from recsys.data.filters import ITEM, RATING, TIME, USER  # noqa: F401 - re-exported to the converters

log = logging.getLogger(__name__)


@dataclass
class Converted:
    """What a format reader returns: the frames :func:`~recsys.data.converters.save_converted`
    takes (``inter``, ``item``, ``user``), the atomic ``types`` of their columns, and ``source``,
    the raw interactions file that errors name."""

    inter: pd.DataFrame
    item: pd.DataFrame | None = None
    user: pd.DataFrame | None = None
    types: dict[str, str] = field(default_factory=dict)
    source: Path | None = None


def _shared_options(
    out: Path,
    *,
    overwrite: bool = False,
    min_rating: float | None = None,
    max_history: int | None = None,
    k_core: int | None = None,
) -> None:
    """The options every converter takes, owned here (signature and help) and nowhere else."""


#: Their help, as ``recsys convert NAME --help`` shows it (Google-style ``Args`` entries).
SHARED_OPTION_DOCS = (
    "out: The dataset directory to write (its name is the dataset name).",
    "overwrite: Replace an existing ``out``.",
    "min_rating: Keep interactions rated at least this (needs a rating).",
    "max_history: Keep each user's last N interactions.",
    "k_core: Repeatedly drop users and items with fewer than K interactions.",
)


def _with_shared_docs(doc: str) -> str:
    """``doc`` (a Google-style docstring whose first ``Args`` entry is ``raw``) with the shared
    options' entries inserted after ``raw``'s."""
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    if start is None or start + 1 >= len(lines):
        return "\n".join([*lines, "", "    Args:", *("        " + entry for entry in SHARED_OPTION_DOCS)])
    start += 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1  # past raw's entry and its continuation lines
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    return "\n".join(lines[:end] + [" " * indent + entry for entry in SHARED_OPTION_DOCS] + lines[end:])


def _resolved(parameter: inspect.Parameter, fn: Callable) -> inspect.Parameter:
    """``parameter`` of ``fn`` with a postponed (string) annotation resolved in ``fn``'s module."""
    if not isinstance(parameter.annotation, str):
        return parameter
    holder = types.SimpleNamespace(__annotations__={parameter.name: parameter.annotation})
    try:
        return parameter.replace(annotation=typing.get_type_hints(holder, getattr(fn, "__globals__", {}))[parameter.name])
    except Exception:  # a name local to where ``fn`` was defined: leave the string to jsonargparse
        return parameter


class Converter(Protocol):
    """What :func:`converter` returns: the converter, with the reader as ``read``."""

    __signature__: inspect.Signature
    read: Callable[..., Converted]

    def __call__(self, *args: Any, **kwargs: Any) -> Path: ...


def converter(read: Callable[..., Converted]) -> Converter:
    """Make a format reader into a registered converter.

    ``read(raw, *, <its format options>) -> Converted`` becomes ``convert(raw, out, *,
    overwrite=False, min_rating=None, max_history=None, k_core=None, <its format options>) ->
    Path``, the ``register_datasets`` contract: it fails fast when ``out`` exists (before
    parsing anything), reads, then filters, sorts and writes atomically with
    :func:`~recsys.data.converters.save_converted`. Its signature and docstring, which
    ``recsys convert NAME --help`` shows, are the reader's with the shared options added after
    ``raw``; ``convert.read`` is the reader.
    """

    @functools.wraps(read)
    def wrapper(*args, **kwargs) -> Path:
        given = convert.__signature__.bind(*args, **kwargs)  # an unknown option fails here, by name
        given.apply_defaults()
        options = dict(given.arguments)
        out = ensure_new_output(options.pop("out"), options.pop("overwrite"))
        filters = {name: options.pop(name) for name in ("min_rating", "max_history", "k_core")}
        data = read(Path(options.pop("raw")), **options)
        return save_converted(out, data.inter, data.item, data.user, types=data.types, overwrite=given.arguments["overwrite"],
                              source=data.source, **filters)

    convert = cast(Converter, wrapper)  # functools.wraps's type knows no attributes set on it
    own = inspect.signature(read)
    raw, *format_options = (_resolved(p, read) for p in own.parameters.values())
    hints = typing.get_type_hints(_shared_options)
    shared = [p.replace(annotation=hints[p.name]) for p in inspect.signature(_shared_options).parameters.values()]
    convert.__signature__ = own.replace(parameters=[raw, *shared, *format_options], return_annotation=Path)
    convert.__annotations__ = {**{p.name: p.annotation for p in convert.__signature__.parameters.values()},
                               "return": Path}
    convert.__doc__ = _with_shared_docs(read.__doc__ or "")
    convert.read = read
    del wrapper.__wrapped__  # the signature above is the converter's, not the reader's
    return convert


def ensure_new_output(out: str | Path, overwrite: bool) -> Path:
    """Fail fast (before parsing anything) when ``out`` exists and ``overwrite`` is off."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    return out


def require_columns(frame: pd.DataFrame, columns, path: Path) -> None:
    """Raise :class:`DataFormatError` naming the file, the first missing column and those present."""
    for column in columns:
        if column not in frame.columns:
            raise DataFormatError(f"{path}: no column {column!r} (columns present: {list(frame.columns)})")


def to_number(series: pd.Series, path: Path, column: str, first_line: int = 2) -> pd.Series:
    """``series`` as float64; a missing or non-numeric value raises :class:`DataFormatError`.

    ``first_line`` is the file line of the series' first row (2 below a header, 1 without one),
    so the error names the offending line.
    """
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series
    else:
        values = pd.to_numeric(series.replace("", np.nan), errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype="float64", na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raw = series.iloc[row]
        if pd.isna(raw) or str(raw).strip() == "":
            what = "is missing"
        elif pd.isna(values.iloc[row]):
            what = f"is not a number: {raw!r}"
        else:
            what = f"is not a finite number: {raw!r}"
        raise DataFormatError(f"{path}:{row + first_line}: field {column!r} {what}")
    return values.astype("float64")


def to_token(series: pd.Series, path: Path, column: str, first_line: int = 2) -> pd.Series:
    """``series`` as str; a missing or empty value raises :class:`DataFormatError`."""
    bad = (series.isna() | (series.astype("str").str.strip() == "")).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}:{row + first_line}: field {column!r} is missing")
    return series.astype("str")


def to_int_id(series: pd.Series, path: Path, column: str, first_line: int = 2) -> pd.Series:
    """Integer ids (MovieLens) as int64: a quarter of the memory of strings on 30M-row files."""
    values = to_number(series, path, column, first_line)
    bad = (values != values.round()).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}:{row + first_line}: field {column!r} is not an integer id: {series.iloc[row]!r}")
    return values.astype("int64")


def drop_duplicate_interactions(inter: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """Drop exact duplicate rows (counted and logged); if rows still share (user, item, timestamp),
    they differ in rating: keep the last one in file order and log how many were dropped."""
    before = len(inter)
    inter = inter.drop_duplicates()
    if len(inter) != before:
        log.warning("%s: dropped %d exact duplicate interactions", source, before - len(inter))
    conflicting = inter.duplicated([USER, ITEM, TIME], keep="last")
    if conflicting.any():
        log.warning(
            "%s: dropped %d interactions repeating a (user, item, timestamp) with another rating (kept the last)",
            source, int(conflicting.sum()),
        )
        inter = inter[~conflicting]
    return inter.reset_index(drop=True)


def complete_items(item: pd.DataFrame, inter: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """Keep one row per item id (the first), in the item table's order, then append empty-text
    rows for interacted items the table lacks (counted and logged).

    Items without any text (no row, or a row whose fields are all empty) are kept: ID-based
    models need them and text models embed the empty string; their number is logged.
    """
    before = len(item)
    item = item.drop_duplicates(ITEM, keep="first")
    if len(item) != before:
        log.warning("%s: %d item rows repeat an item id (kept the first)", source, before - len(item))
    used = pd.unique(inter[ITEM])
    missing = pd.Index(used).difference(pd.Index(item[ITEM]), sort=False)
    if len(missing):
        log.warning("%s: %d of %d interacted items have no item data; kept with empty text", source, len(missing), len(used))
        filler = pd.DataFrame({c: (missing if c == ITEM else "") for c in item.columns}, dtype=str)
        item = pd.concat([item, filler], ignore_index=True)
    text = [c for c in item.columns if c != ITEM]
    if text:
        used_rows = item[item[ITEM].isin(set(used))]
        empty = (used_rows[text].astype(str).apply(lambda c: c.str.strip()) == "").all(axis=1)
        present = int(empty.sum()) - len(missing)
        if present > 0:
            log.warning("%s: %d of %d interacted items have no text in any field (%s); kept with empty text",
                        source, present, len(used), ", ".join(map(str, text)))
    return item.reset_index(drop=True)
