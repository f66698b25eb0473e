"""RecBole atomic files: read theirs, write ours (so RecBole reads ours).

A file is tab-separated UTF-8 with a typed header, e.g.::

    user_id:token	item_id:token	rating:float	timestamp:float

Types are ``token``, ``token_seq`` (space-separated tokens), ``float`` and ``float_seq``.
A dataset ``NAME`` is a directory holding ``NAME.inter`` and optionally ``NAME.item`` and
``NAME.user``. Writes are atomic: a file (or a whole dataset directory) is written beside
its destination and renamed into place, so an interrupted write never leaves a partial
dataset that later loads as if it were complete.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

TYPES = ("token", "token_seq", "float", "float_seq")
SUFFIXES = ("inter", "item", "user")
ID_FIELDS = ("user_id", "item_id")
#: Strings pandas (and so RecBole) reads as missing; never valid as an id.
MISSING_MARKERS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
     "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and, where known, the line and field."""


_PANDAS_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def first_undecodable_line(path: Path, encoding: str = "utf-8") -> tuple[int, str]:
    """(line number, reason) of the first bytes of ``path`` that are not ``encoding`` (gzip read through)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        return data.count(b"\n", 0, exc.start) + 1, f"{exc.reason} at byte {exc.start}"
    return 1, "undecodable bytes"


def read_error(path: Path, exc: BaseException, encoding: str = "utf-8") -> DataFormatError:
    """A failure of ``pandas.read_csv`` (or of reading a compressed file) -> :class:`DataFormatError`
    naming the file and, where it can be known, the line."""
    if isinstance(exc, UnicodeDecodeError):
        try:
            line, reason = first_undecodable_line(path, encoding)
        except (OSError, EOFError, zlib.error):
            line, reason = 0, exc.reason
        where = f"{path}:{line}" if line else str(path)
        return DataFormatError(f"{where}: not {encoding.upper() if encoding == 'utf-8' else encoding} ({reason})")
    if isinstance(exc, (EOFError, gzip.BadGzipFile, zlib.error)):
        return DataFormatError(f"{path}: cannot decompress (truncated or corrupt file?): {exc or type(exc).__name__}")
    message = str(exc).strip()
    fields = _PANDAS_FIELDS.search(message)
    if fields:
        expected, at, found = fields.groups()
        return DataFormatError(f"{path}: line {at} has {found} fields, expected {expected}")
    return DataFormatError(f"{path}: {message.removeprefix('Error tokenizing data. C error: ')}")


#: What ``pandas.read_csv`` raises on a malformed, undecodable or truncated file.
READ_ERRORS = (ValueError, EOFError, OSError, zlib.error)  # ParserError and UnicodeDecodeError are ValueErrors


def parse_header(line: str, path: Path) -> dict[str, str]:
    """``'user_id:token\\titem_id:token'`` -> ``{'user_id': 'token', 'item_id': 'token'}``."""
    types: dict[str, str] = {}
    for position, cell in enumerate(line.rstrip("\r\n").split("\t"), start=1):
        name, sep, kind = cell.rpartition(":")
        if not sep or not name or ":" in name:
            raise DataFormatError(f"{path}:1: header field {position} {cell!r} is not 'name:type'")
        if kind not in TYPES:
            raise DataFormatError(f"{path}:1: header field {cell!r} has unknown type {kind!r} (expected one of {TYPES})")
        if name in types:
            raise DataFormatError(f"{path}:1: header names field {name!r} twice")
        types[name] = kind
    return types


def read_atomic(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read one atomic file -> (frame, {column: type}). Float columns are float64, others str."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # binary: a text read would decode a whole buffer, not just line 1
            header = f.readline().decode("utf-8")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}:1: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not header.strip():
        raise DataFormatError(f"{path}:1: empty file, expected a 'name:type' header")
    types = parse_header(header, path)
    try:
        frame = pd.read_csv(
            path, sep="\t", header=0, names=list(types), dtype=str, quoting=csv.QUOTE_MINIMAL,
            keep_default_na=False, na_filter=False, encoding="utf-8", engine="c",
        )
    except READ_ERRORS as exc:  # a row with too many fields, bytes that are not UTF-8
        raise read_error(path, exc) from None
    for column, kind in types.items():
        if kind == "float":
            values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
            bad = values.isna() & (frame[column] != "")
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataFormatError(
                    f"{path}:{row + 2}: field {column!r} is not a number: {frame[column].iloc[row]!r}"
                )
            frame[column] = values.astype("float64")
    return frame, types


def infer_types(frame: pd.DataFrame) -> dict[str, str]:
    """Ids are ``token``; other numeric columns ``float``, list columns ``token_seq``, the rest ``token``."""
    types = {}
    for column in frame.columns:
        series = frame[column]
        if column in ID_FIELDS:
            types[column] = "token"
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            types[column] = "float"
        elif len(series) and isinstance(series.iloc[0], (list, tuple)):
            types[column] = "token_seq"
        else:
            types[column] = "token"
    return types


def _format_column(series: pd.Series, kind: str) -> pd.Series:
    """Vectorised text of one column: integral floats without ".0" (as RecBole's own files),
    lists joined by spaces, missing values empty, tabs and newlines collapsed to spaces."""
    missing = series.isna().to_numpy()
    if kind == "float":
        numbers = pd.to_numeric(series, errors="raise").astype("float64")
        text = numbers.astype(str)
        integral = (~missing) & (numbers == numbers.round()).to_numpy() & (numbers.abs() < 2**53).to_numpy()
        text[integral] = numbers[integral].astype("int64").astype(str)
    else:
        values = series.to_numpy(dtype=object)
        is_list = np.fromiter((isinstance(v, (list, tuple)) for v in values), bool, len(values))
        text = series.astype(str)
        if is_list.any():
            # A list item with spaces would become several tokens: keep it one ("Sci Fi" -> "Sci_Fi").
            text[is_list] = [" ".join("_".join(str(v).split()) for v in items if str(v).strip()) for items in values[is_list]]
        broken = text.str.contains(r"[\t\r\n]", regex=True).to_numpy()
        if broken.any():
            text[broken] = text[broken].map(lambda t: " ".join(t.split()))
    text[missing] = ""
    return text


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(mask)
    return mask


def as_if_created(path: str | Path, directory: bool = False) -> None:
    """Give a temporary file or directory (``mkstemp``: 0600, ``mkdtemp``: 0700) the mode a plain
    ``open``/``mkdir`` would have given it under the umask, before it is renamed into place:
    a shared data folder stays readable by the group when the umask says so."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.
    The file gets the mode the umask gives new files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    as_if_created(tmp_path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(frame: pd.DataFrame, path: str | Path, types: dict[str, str] | None = None) -> Path:
    """Write one atomic file (temp file + rename). ``types`` defaults to :func:`infer_types`."""
    path = Path(path)
    types = {**infer_types(frame), **(types or {})}
    unknown = set(types) - set(frame.columns)
    if unknown:
        raise ValueError(f"types given for columns not in the frame: {sorted(unknown)}")
    for column, kind in types.items():
        if kind not in TYPES:
            raise ValueError(f"column {column!r}: unknown atomic type {kind!r}")
        if any(c in str(column) for c in ":\t\r\n") or not str(column):
            raise ValueError(f"column name {column!r} cannot be written: names may not contain ':', tabs or newlines")
    for column in ID_FIELDS:
        if column in frame.columns:
            bad = frame[column].isna() | frame[column].astype(str).isin(MISSING_MARKERS)
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(f"{path}: {column} of row {row} is {frame[column].iloc[row]!r}, which reads back as missing")
    out = pd.DataFrame({c: _format_column(frame[c], types[c]) for c in frame.columns})
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(f"{c}:{types[c]}" for c in frame.columns) + "\n")
            # Minimal quoting, as pandas (and so RecBole) reads by default: a title starting with '"' survives.
            out.to_csv(f, sep="\t", header=False, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    return path


def write_dataset(
    out_dir: str | Path,
    inter: pd.DataFrame,
    item: pd.DataFrame | None = None,
    user: pd.DataFrame | None = None,
    types: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/NAME.{inter,item,user}`` (NAME = the directory's name) as one atomic step.

    The files are written to a temporary sibling directory that is renamed into place at the
    end; an existing dataset is replaced only with ``overwrite=True`` and only once the new one
    is complete.
    """
    out_dir = Path(out_dir)
    name = out_dir.name
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        as_if_created(staging, directory=True)
        for suffix, frame in (("inter", inter), ("item", item), ("user", user)):
            if frame is not None:
                column_types = {c: t for c, t in (types or {}).items() if c in frame.columns}
                write_atomic(frame, staging / f"{name}.{suffix}", column_types)
        if out_dir.exists():
            retired = out_dir.with_name(f".{name}.old-{os.getpid()}")
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def dataset_files(path: str | Path) -> dict[str, Path]:
    """Locate a dataset's atomic files: ``{'inter': ..., 'item': ..., 'user': ...}`` (those present).

    ``path`` is a dataset directory (``NAME/NAME.inter``; or the only ``*.inter`` inside) or an
    ``.inter`` file.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".inter":
            raise DataFormatError(f"{path}: expected a dataset directory or a .inter file")
        directory, name = path.parent, path.stem
    elif path.is_dir():
        directory, name = path, path.name
        if not (directory / f"{name}.inter").exists():
            candidates = sorted(directory.glob("*.inter"))
            if len(candidates) != 1:
                raise DataFormatError(
                    f"{path}: expected {name}.inter (or exactly one .inter file), found "
                    f"{[c.name for c in candidates] or 'none'}"
                )
            name = candidates[0].stem
    else:
        raise DataFormatError(f"{path}: no such dataset directory or file")
    return {s: directory / f"{name}.{s}" for s in SUFFIXES if (directory / f"{name}.{s}").exists()}
