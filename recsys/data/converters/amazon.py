"""Amazon Reviews converters (``amazon-2014``, ``amazon-2018``, ``amazon-2023``), McAuley lab releases.

Each reads one category's review file and its metadata file, streaming them line by line
(plain or gzip; they can be GBs) with a progress bar for big files. Interactions: user_id,
item_id (the asin; parent_asin for 2023), rating, timestamp (Unix seconds; 2023's milliseconds
become fractional seconds, keeping their order). Items: title, categories (unique names joined
by ", "; 2023 falls back to main_category), brand (2023: the store) and description (lists
joined, HTML stripped; 2023 falls back to the features), each cut to ``max_text_chars``. Items are the reviewed
ones: an item without metadata is kept with empty text (and counted in the log), metadata of
items nobody reviewed is skipped. A malformed line or a truncated gzip raises
:class:`~recsys.data.atomic.DataFormatError` naming the file and the line.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import logging
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from tqdm.auto import tqdm

from recsys.data.atomic import DataFormatError
from recsys.data.converters.common import (
    ITEM, RATING, TIME, USER, Converted, complete_items, converter, drop_duplicate_interactions,
)

log = logging.getLogger(__name__)

#: Files at least this big (compressed) get a progress bar.
PROGRESS_BYTES = 64 << 20
TEXT_COLUMNS = ("title", "categories", "brand", "description")


@dataclass(frozen=True)
class Release:
    year: str
    reviews: re.Pattern  # file name -> category (group 1)
    meta_suffixes: tuple[str, ...]  # meta_<category without _5><suffix>
    user: str
    items: tuple[str, ...]  # first present key is the item id
    rating: str
    time: str
    time_scale: float  # -> seconds
    meta_id: str
    meta_id_bytes: re.Pattern  # finds the item id in a raw metadata line without parsing it
    literal_meta: bool  # metadata lines are Python literals, not JSON
    categories: tuple[str, ...]
    brand: tuple[str, ...]
    description: tuple[str, ...]


def _id_pattern(key: str) -> re.Pattern:
    """``'asin': 'B00..'`` or ``"asin": "B00.."`` in a raw line -> the id."""
    return re.compile(rb"""['"]""" + key.encode() + rb"""['"]\s*:\s*['"]([^'"]+)['"]""")


RELEASES = {
    "2014": Release(
        "2014", re.compile(r"^reviews_(.+)\.json(?:\.gz)?$"), (".json.gz", ".json"),
        "reviewerID", ("asin",), "overall", "unixReviewTime", 1.0,
        "asin", _id_pattern("asin"), True,
        ("categories",), ("brand",), ("description",),
    ),
    "2018": Release(
        "2018", re.compile(r"^(?!meta_|reviews_)(.+)\.json(?:\.gz)?$"), (".json.gz", ".json"),
        "reviewerID", ("asin",), "overall", "unixReviewTime", 1.0,
        "asin", _id_pattern("asin"), False,
        ("category",), ("brand",), ("description",),
    ),
    "2023": Release(
        "2023", re.compile(r"^(?!meta_)(.+)\.jsonl(?:\.gz)?$"), (".jsonl.gz", ".jsonl"),
        "user_id", ("parent_asin", "asin"), "rating", "timestamp", 1e-3,
        "parent_asin", _id_pattern("parent_asin"), False,
        ("categories", "main_category"), ("store",), ("description", "features"),
    ),
}


# --------------------------------------------------------------------------- reading


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, raw line)`` of a plain or gzip file, streaming; progress bar when big.

    A truncated or corrupt gzip stream raises :class:`DataFormatError` naming the file and line.
    """
    size = path.stat().st_size
    number = 0
    with open(path, "rb") as raw, tqdm(
        total=size, unit="B", unit_scale=True, desc=path.name, disable=size < PROGRESS_BYTES, leave=False
    ) as bar:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
        done = 0
        try:
            for number, line in enumerate(stream, start=1):
                if not number & 0xFFFF:
                    position = raw.tell()
                    bar.update(position - done)
                    done = position
                yield number, line
        except EOFError:
            raise DataFormatError(
                f"{path}:{number + 1}: the gzip stream ends early (truncated file?) after line {number}"
            ) from None
        except (OSError, zlib.error) as exc:
            raise DataFormatError(f"{path}:{number + 1}: cannot decompress: {exc}") from None
        bar.update(size - done)


def parse_record(line: bytes, path: Path, number: int, literal: bool = False) -> dict | None:
    """One JSON line (or, with ``literal``, a Python dict literal) -> dict; blank -> None."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}:{number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError as exc:
        if not literal:
            raise DataFormatError(f"{path}:{number}: not a JSON line ({exc})") from None
        try:  # the 2014 metadata: Python literals; literal_eval, never eval
            record = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
            raise DataFormatError(
                f"{path}:{number}: neither a JSON line nor a Python literal ({type(exc).__name__}: {exc})"
            ) from None
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
    return record


def _field(record: dict, keys: tuple[str, ...], path: Path, number: int) -> Any:
    for key in keys:
        value = record.get(key)
        if value is not None and value != "":
            return value
    raise DataFormatError(f"{path}:{number}: no field {keys[0]!r}" + (f" (nor {keys[1:]})" if len(keys) > 1 else ""))


def _number(record: dict, key: str, path: Path, number: int) -> float:
    value = _field(record, (key,), path, number)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}:{number}: field {key!r} is not a number: {value!r}") from None
    if not math.isfinite(result):  # JSON NaN / Infinity parse as floats
        raise DataFormatError(f"{path}:{number}: field {key!r} is not a finite number: {value!r}")
    return result


# --------------------------------------------------------------------------- text


_TAG = re.compile(r"</?[A-Za-z!][^<>]*>")  # a tag starts with a letter: "5 < 7 > 2" is kept


def clean_text(value: Any) -> str:
    """Lists joined, HTML tags dropped, entities decoded, whitespace collapsed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (clean_text(v) for v in value) if t)
    text = html.unescape(_TAG.sub(" ", str(value)))
    return " ".join(_TAG.sub(" ", text).split())


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary when one is near."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 3 // 4 else cut).rstrip()


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif value is not None:
        yield value


def category_text(value: Any) -> str:
    """A category list (or the 2014 list of category paths) -> unique names joined by ', '."""
    names: dict[str, None] = {}
    for name in _flatten(value):
        name = clean_text(name)
        if name:
            names.setdefault(name, None)
    return ", ".join(names)


def _first(record: dict, keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = record.get(key)
        if value:
            return value
    return None


def item_text(record: dict, release: Release, limit: int) -> dict[str, str]:
    """A metadata record -> the item columns (title, categories, brand, description)."""
    return {
        "title": truncate(clean_text(record.get("title")), limit),
        "categories": truncate(category_text(_first(record, release.categories)), limit),
        "brand": truncate(clean_text(_first(record, release.brand)), limit),
        "description": truncate(clean_text(_first(record, release.description)), limit),
    }


# --------------------------------------------------------------------------- files


def find_files(raw: Path, release: Release, category: str | None) -> tuple[Path, Path | None]:
    """The review file and metadata file of one category (``meta_<Cat>`` serves ``<Cat>_5`` too)."""
    raw = Path(raw)
    if raw.is_file():
        match = release.reviews.match(raw.name)
        if match is None:
            raise DataFormatError(f"{raw}: not an Amazon {release.year} review file name ({release.reviews.pattern})")
        found, directory = {match.group(1): raw}, raw.parent
    elif raw.is_dir():
        directory = raw
        found = {}
        for path in sorted(raw.iterdir()):
            match = release.reviews.match(path.name)
            if match and path.is_file():
                found.setdefault(match.group(1), path)
    else:
        raise DataFormatError(f"{raw}: no such directory or file")
    if not found:
        raise DataFormatError(
            f"{raw}: no Amazon {release.year} review file (names matching {release.reviews.pattern}); "
            f"found {sorted(p.name for p in directory.iterdir())}"
        )
    if category is None:
        if len(found) > 1:
            raise ValueError(f"{raw} holds several categories; pick one with category=...: {sorted(found)}")
        category = next(iter(found))
    elif category not in found:
        if f"{category}_5" not in found:
            raise ValueError(f"category {category!r} not found in {raw}; categories found: {sorted(found)}")
        category = f"{category}_5"
    reviews = found[category]
    base = category[:-2] if category.endswith("_5") else category
    for suffix in release.meta_suffixes:
        meta = directory / f"meta_{base}{suffix}"
        if meta.is_file():
            return reviews, meta
    log.warning("%s: no metadata file meta_%s%s; items get empty text", directory, base, release.meta_suffixes[0])
    return reviews, None


def read_reviews(path: Path, release: Release) -> pd.DataFrame:
    """Stream a review file -> interactions (user_id, item_id, rating, timestamp in seconds)."""
    users, items, ratings, times = [], [], [], []
    for number, line in read_lines(path):
        record = parse_record(line, path, number, literal=release.literal_meta)
        if record is None:
            continue
        users.append(str(_field(record, (release.user,), path, number)))
        items.append(str(_field(record, release.items, path, number)))
        ratings.append(_number(record, release.rating, path, number))
        times.append(_number(record, release.time, path, number) * release.time_scale)
    if not users:
        raise DataFormatError(f"{path}: no reviews")
    inter = pd.DataFrame({USER: users, ITEM: items, RATING: ratings, TIME: times})
    return drop_duplicate_interactions(inter, path)


def read_meta(path: Path, release: Release, wanted: set[str], limit: int) -> pd.DataFrame:
    """Stream a metadata file -> item rows for the ``wanted`` ids only (first row per id wins)."""
    rows: dict[str, dict[str, str]] = {}
    skipped = 0
    for number, line in read_lines(path):
        quick = release.meta_id_bytes.search(line)
        if quick is not None and quick.group(1).decode("utf-8", "replace") not in wanted:
            skipped += 1  # not reviewed: skip without parsing (literal_eval is slow)
            continue
        record = parse_record(line, path, number, literal=release.literal_meta)
        if record is None:
            continue
        item_id = str(_field(record, (release.meta_id,), path, number))
        if item_id in wanted and item_id not in rows:
            rows[item_id] = item_text(record, release, limit)
    if skipped:
        log.info("%s: skipped %d metadata rows of items never reviewed", path, skipped)
    return pd.DataFrame(
        [{ITEM: i, **r} for i, r in rows.items()], columns=[ITEM, *TEXT_COLUMNS], dtype=str
    )


def _convert(raw, release, category, max_text_chars) -> Converted:
    if max_text_chars < 1:
        raise ValueError(f"max_text_chars must be >= 1, got {max_text_chars}")
    reviews, meta = find_files(Path(raw), release, category)
    inter = read_reviews(reviews, release)
    wanted = set(inter[ITEM])
    if meta is not None:
        item = read_meta(meta, release, wanted, max_text_chars)
    else:
        item = pd.DataFrame(columns=[ITEM, *TEXT_COLUMNS], dtype=str)
    item = complete_items(item, inter, meta or reviews)
    log.info("%s: %d reviews, %d users, %d items", reviews, len(inter), inter[USER].nunique(), len(wanted))
    types = {RATING: "float", TIME: "float", **{c: "token" for c in TEXT_COLUMNS}}
    return Converted(inter, item, types=types, source=reviews)


@converter
def convert_amazon2014(raw: Path, *, category: str | None = None, max_text_chars: int = 1000) -> Converted:
    """Convert one Amazon Reviews 2014 category (reviews_<Cat>[_5].json.gz + meta_<Cat>.json.gz) to atomic files.

    Args:
        raw: Directory holding reviews_<Category>.json.gz or reviews_<Category>_5.json.gz (JSON
            lines: reviewerID, asin, overall, unixReviewTime) and meta_<Category>.json.gz (Python
            literal lines: asin, title, categories, brand, description); or the review file itself.
        category: Which category, when the directory holds several (e.g. Beauty or Beauty_5).
        max_text_chars: Cut each item text field to at most this many characters.
    """
    return _convert(raw, RELEASES["2014"], category, max_text_chars)


@converter
def convert_amazon2018(raw: Path, *, category: str | None = None, max_text_chars: int = 1000) -> Converted:
    """Convert one Amazon Reviews 2018 category (<Cat>[_5].json.gz + meta_<Cat>.json.gz) to atomic files.

    Args:
        raw: Directory holding <Category>.json.gz or <Category>_5.json.gz (JSON lines: reviewerID,
            asin, overall, unixReviewTime) and meta_<Category>.json.gz (JSON lines: asin, title,
            category, brand, description); or the review file itself.
        category: Which category, when the directory holds several (e.g. Beauty or Beauty_5).
        max_text_chars: Cut each item text field to at most this many characters.
    """
    return _convert(raw, RELEASES["2018"], category, max_text_chars)


@converter
def convert_amazon2023(raw: Path, *, category: str | None = None, max_text_chars: int = 1000) -> Converted:
    """Convert one Amazon Reviews 2023 category (<Cat>.jsonl.gz + meta_<Cat>.jsonl.gz; items are parent_asin) to atomic files.

    Args:
        raw: Directory holding <Category>.jsonl.gz (user_id, parent_asin, rating, timestamp in ms)
            and meta_<Category>.jsonl.gz (parent_asin, title, categories, store, description,
            features); or the review file itself.
        category: Which category, when the directory holds several (e.g. All_Beauty).
        max_text_chars: Cut each item text field to at most this many characters.
    """
    return _convert(raw, RELEASES["2023"], category, max_text_chars)
