"""MovieLens converters (``ml-100k``, ``ml-1m``, ``ml-latest``) from GroupLens' raw files.

Output follows RecBole's own ml-100k atomic copy: ``.inter`` (user_id, item_id, rating,
timestamp), ``.item`` (item_id, movie_title without the trailing " (YYYY)", release_year, class
= the genres, space-separated, one token each as in "Children's Film-Noir") and, where the
release has one, ``.user`` (user_id, age, gender, occupation, zip_code). Ids are integers while
converting (a 30M-row release fits in far less memory) and written as tokens.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from recsys.data.atomic import DataFormatError
from recsys.data.converters.common import (
    ITEM, READ_ERRORS, RATING, TIME, USER, Converted, complete_items, converter, drop_duplicate_interactions,
    read_error, require_columns, to_int_id, to_number,
)

log = logging.getLogger(__name__)

#: ml-100k's ``u.genre``, in flag order (used when the raw dir has no ``u.genre``).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
NO_GENRE = "(no genres listed)"

ITEM_TYPES = {"movie_title": "token_seq", "release_year": "token", "class": "token_seq"}
USER_TYPES = {"age": "token", "gender": "token", "occupation": "token", "zip_code": "token"}
INTER_TYPES = {RATING: "float", TIME: "float"}

# "Toy Story (1995)", "Babylon 5 (1994-1998)", "Show (2019– )": the trailing year (range).
_TITLE_YEAR = re.compile(r"\s*\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?\s*)?\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")


def split_title(title: str) -> tuple[str, str]:
    """``'Toy Story (1995)'`` -> ``('Toy Story', '1995')``; no trailing year -> ``(title, '')``."""
    title = " ".join(title.split())
    match = _TITLE_YEAR.search(title)
    if match is None:
        return title, ""
    return title[: match.start()], match.group(1)


def genre_tokens(genres) -> str:
    """Genre names -> one space-separated string, each genre a single token."""
    tokens = []
    for genre in genres:
        genre = genre.strip()
        if genre and genre != NO_GENRE:
            tokens.append("_".join(genre.split()))
    return " ".join(tokens)


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file (expected in the raw {path.parent.name or path.parent} directory)")
    return path


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Non-empty lines of a small text file with their line numbers."""
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise read_error(path, exc, encoding) from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def _split(line: str, sep: str, fields: int, path: Path, number: int) -> list[str]:
    parts = line.split(sep)
    if len(parts) != fields:
        raise DataFormatError(f"{path}:{number}: expected {fields} {sep!r}-separated fields, found {len(parts)}")
    return parts


def _int(value: str, path: Path, number: int, field: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise DataFormatError(f"{path}:{number}: {field} {value!r} is not an integer id") from None


def _read_ratings(path: Path, sep: str, header: bool, columns: list[str]) -> pd.DataFrame:
    """user, item, rating, timestamp -> the ``inter`` frame (ids int64, rating and time float64)."""
    _require_file(path)
    source: Path | io.StringIO = path
    if sep == "::":
        # The C parser takes one-character separators only; the fields here are all numeric.
        try:
            source = io.StringIO(path.read_text(encoding="latin-1").replace("::", "\t"))
        except OSError as exc:
            raise DataFormatError(f"{path}: {exc}") from None
        sep = "\t"
    try:
        frame = pd.read_csv(
            source, sep=sep, header=0 if header else None, names=None if header else columns,
            index_col=False, engine="c",
        )
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: empty file") from None
    except READ_ERRORS as exc:  # malformed rows, bytes that are not UTF-8, a header without the expected columns
        raise read_error(path, exc) from None
    if header:
        require_columns(frame, columns, path)
    first = 2 if header else 1
    inter = pd.DataFrame({
        USER: to_int_id(frame[columns[0]], path, columns[0], first),
        ITEM: to_int_id(frame[columns[1]], path, columns[1], first),
        RATING: to_number(frame[columns[2]], path, columns[2], first),
        TIME: to_number(frame[columns[3]], path, columns[3], first),
    })
    return drop_duplicate_interactions(inter, path)


def _items(rows: list[tuple[int, str, str, str]], inter: pd.DataFrame, path: Path) -> pd.DataFrame:
    """(id, raw title, genres, fallback year) rows -> item frame with movie_title, release_year, class."""
    ids, titles, years, genres = [], [], [], []
    for item_id, title, genre, fallback_year in rows:
        name, year = split_title(title)
        ids.append(item_id)
        titles.append(name)
        years.append(year or fallback_year)
        genres.append(genre)
    item = pd.DataFrame({"movie_title": titles, "release_year": years, "class": genres}, dtype=str)
    item.insert(0, ITEM, pd.Series(ids, dtype="int64"))
    return complete_items(item, inter, path)


def _finish(inter, item, user, raw, source) -> Converted:
    log.info("%s: %d ratings, %d users, %d items", raw, len(inter), inter[USER].nunique(), inter[ITEM].nunique())
    return Converted(inter, item, user, types={**INTER_TYPES, **ITEM_TYPES, **USER_TYPES}, source=source)


@converter
def convert_ml100k(raw: Path) -> Converted:
    """Convert MovieLens-100k (u.data ratings, u.item titles and genre flags, u.user demographics) to atomic files.

    Args:
        raw: The ml-100k directory: u.data (tab-separated user, item, rating, timestamp), u.item
            (latin-1, pipe-separated; u.genre names the genre flags if present), u.user.
    """
    inter = _read_ratings(raw / "u.data", "\t", False, ["user", "item", "rating", "timestamp"])

    genres = list(ML100K_GENRES)
    if (raw / "u.genre").is_file():
        named = {}
        for number, line in _lines(raw / "u.genre", "latin-1"):
            name, index = _split(line, "|", 2, raw / "u.genre", number)
            if not index.strip().isdigit():
                raise DataFormatError(f"{raw / 'u.genre'}:{number}: genre index {index!r} is not a number")
            named[int(index)] = name
        genres = [named[i] for i in sorted(named)]
    path = _require_file(raw / "u.item")
    rows = []
    for number, line in _lines(path, "latin-1"):
        parts = _split(line, "|", 5 + len(genres), path, number)
        flags = parts[5:]
        if any(flag.strip() not in ("0", "1") for flag in flags):
            raise DataFormatError(f"{path}:{number}: genre flags must be 0 or 1, found {flags}")
        date_year = _DATE_YEAR.search(parts[2])  # "01-Jan-1995": the fallback when the title has no year
        genre = genre_tokens(g for g, f in zip(genres, flags) if f.strip() == "1")
        year = date_year.group(1) if date_year else ""
        rows.append((_int(parts[0], path, number, "movie id"), parts[1], genre, year))
    item = _items(rows, inter, path)

    user = None
    if (raw / "u.user").is_file():
        path = raw / "u.user"
        records = []
        for number, line in _lines(path, "latin-1"):
            user_id, *features = (c.strip() for c in _split(line, "|", 5, path, number))
            records.append((_int(user_id, path, number, "user id"), *features))
        user = pd.DataFrame(records, columns=[USER, "age", "gender", "occupation", "zip_code"])
    return _finish(inter, item, user, raw, raw / "u.data")


@converter
def convert_ml1m(raw: Path, *, encoding: str = "latin-1") -> Converted:
    """Convert MovieLens-1M or another ``::`` release such as 10M (ratings.dat, movies.dat, users.dat) to atomic files.

    Args:
        raw: The release directory: ratings.dat (UserID::MovieID::Rating::Timestamp), movies.dat
            (MovieID::Title::Genres) and, if present, users.dat (age and occupation stay GroupLens' codes).
        encoding: Encoding of movies.dat and users.dat (latin-1 for ml-1m, utf-8 for ml-10m).
    """
    inter = _read_ratings(raw / "ratings.dat", "::", False, ["UserID", "MovieID", "Rating", "Timestamp"])

    path = _require_file(raw / "movies.dat")
    rows = []
    for number, line in _lines(path, encoding):
        item_id, sep, rest = line.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not sep or not sep2:
            raise DataFormatError(f"{path}:{number}: expected MovieID::Title::Genres, found {line!r}")
        rows.append((_int(item_id, path, number, "MovieID"), title, genre_tokens(genres.split("|")), ""))
    item = _items(rows, inter, path)

    user = None
    path = raw / "users.dat"
    if path.is_file():
        records = []
        for number, line in _lines(path, encoding):
            user_id, gender, age, occupation, zip_code = (c.strip() for c in _split(line, "::", 5, path, number))
            records.append((_int(user_id, path, number, "UserID"), age, gender, occupation, zip_code))
        user = pd.DataFrame(records, columns=[USER, "age", "gender", "occupation", "zip_code"])
    return _finish(inter, item, user, raw, raw / "ratings.dat")


@converter
def convert_ml_latest(raw: Path) -> Converted:
    """Convert a CSV MovieLens release (ml-latest, ml-latest-small, ml-20m/25m/32m: ratings.csv, movies.csv) to atomic files.

    Args:
        raw: The release directory: ratings.csv (userId,movieId,rating,timestamp) and movies.csv
            (movieId,title,genres); tags, links and genome files are ignored. There is no user file.
    """
    inter = _read_ratings(raw / "ratings.csv", ",", True, ["userId", "movieId", "rating", "timestamp"])

    path = _require_file(raw / "movies.csv")
    try:
        movies = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: empty file") from None
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
    require_columns(movies, ["movieId", "title", "genres"], path)
    ids = to_int_id(movies["movieId"], path, "movieId")
    rows = [(i, t, genre_tokens(g.split("|")), "") for i, t, g in zip(ids, movies["title"], movies["genres"])]
    item = _items(rows, inter, path)
    return _finish(inter, item, None, raw, raw / "ratings.csv")
