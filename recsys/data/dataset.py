"""Load an atomic dataset into what models and splits need: vocabularies, sequences, catalog."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from recsys.data.atomic import DataFormatError, dataset_files, read_atomic
from recsys.data.catalog import Catalog
from recsys.data.filters import ITEM, RATING, TIME, USER, filter_interactions, sort_interactions
from recsys.data.protocols import ROW, EvaluationProtocol, resolve_protocol
from recsys.data.sequences import Sequences, Split, TrainingPrefixes, sample_cold_items
from recsys.data.vocab import Vocab

log = logging.getLogger(__name__)


@dataclass
class SequenceData:
    """A dataset ready for sequential recommendation."""

    name: str
    items: Vocab
    users: Vocab
    sequences: Sequences
    split: Split  #: made by the evaluation protocol (``recsys.data.protocols``), e.g. LeaveOneOut for ``loo``
    catalog: Catalog
    user_fields: pd.DataFrame | None  #: (U + 1) rows aligned with ``users`` (row 0 = PAD), or None
    cold_item_ids: np.ndarray  #: (C,) sorted int64 item indices held out of training; empty when none
    #: what training windows are cut from: ``split`` itself, or its training prefixes without cold items
    training: Split | TrainingPrefixes
    #: (n,) rows aligned with ``sequences.items`` (sorted by user, then time): ``user_id`` and
    #: ``item_id`` indices, ``timestamp`` and ``rating`` when the file has them, ``_row`` (file order)
    interactions: pd.DataFrame


def _check_inter(inter: pd.DataFrame, types: dict[str, str], path: Path) -> None:
    for column in (USER, ITEM):
        if column not in inter.columns:
            raise DataFormatError(f"{path}: no {column!r} field (fields: {list(inter.columns)})")
        empty = inter[column] == ""
        if empty.any():
            raise DataFormatError(f"{path}:{int(np.flatnonzero(empty.to_numpy())[0]) + 2}: field {column!r} is empty")
    if TIME in inter.columns and types.get(TIME) != "float":
        raise DataFormatError(f"{path}:1: field {TIME!r} must be typed 'float' to order interactions, not {types[TIME]!r}")
    if TIME in inter.columns and inter[TIME].isna().any():
        row = int(np.flatnonzero(inter[TIME].isna().to_numpy())[0])
        raise DataFormatError(f"{path}:{row + 2}: field {TIME!r} is empty")


def _aligned(frame: pd.DataFrame, id_column: str, vocab: Vocab, path: Path, what: str) -> pd.DataFrame:
    """Rows of a .item/.user frame in vocabulary order (row 0 = PAD); missing ids get empty fields."""
    if id_column not in frame.columns:
        raise DataFormatError(f"{path}: no {id_column!r} field (fields: {list(frame.columns)})")
    duplicated = frame[id_column].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataFormatError(f"{path}:{row + 2}: {what} {frame[id_column].iloc[row]!r} appears twice")
    indexed = frame.set_index(id_column)
    unused = len(indexed) - indexed.index.isin(vocab.tokens[1:]).sum()
    missing = len(vocab) - pd.Index(vocab.tokens[1:]).isin(indexed.index).sum()
    if unused:
        log.info("%s: %d %ss have no interactions and are left out", path, unused, what)
    if missing:
        log.warning("%s: %d %ss with interactions have no row here; their fields are empty", path, missing, what)
    aligned = indexed.reindex(vocab.tokens[1:])
    for column in aligned.columns:
        aligned[column] = aligned[column].fillna("" if aligned[column].dtype == object else np.nan)
    pad = pd.DataFrame({c: ["" if aligned[c].dtype == object else np.nan] for c in aligned.columns})
    return pd.concat([pad, aligned.reset_index(drop=True)], ignore_index=True)


def load_sequences(
    path: str | Path,
    min_rating: float | None = None,
    max_history: int | None = None,
    k_core: int | None = None,
    tie_break: str = "file",
    cold_items: float = 0.0,
    cold_seed: int = 0,
    protocol: str | EvaluationProtocol = "loo",
    check: Callable[[pd.DataFrame, dict[str, str], Path], None] | None = None,
) -> SequenceData:
    """Read ``NAME.inter`` (+ ``.item``, ``.user``), filter, index and split it by ``protocol``
    (a name in :data:`~recsys.data.protocols.PROTOCOLS`, e.g. ``loo``: leave-one-out per user,
    ``global_time``: 8:1:1 by global time, BIGRec's; or an
    :class:`~recsys.data.protocols.EvaluationProtocol`).

    Interactions are ordered by time; equal timestamps keep file order (``tie_break='file'``,
    the default, as RecBole) or are ordered by item id (``'item'``). Without a ``timestamp``
    field, file order is the order.

    ``cold_items > 0`` holds that fraction of the items out of training (see
    :class:`~recsys.data.datamodule.SeqDataModule`); the split's targets do not change.

    ``check(inter, types, path)``, if given, sees the ``.inter`` rows as read (before any other
    check) and raises on what its caller cannot use (the CTR protocol needs ratings and times).
    """
    protocol = resolve_protocol(protocol)
    files = dataset_files(path)
    inter, types = read_atomic(files["inter"])
    if check is not None:
        check(inter, types, files["inter"])
    _check_inter(inter, types, files["inter"])
    if len(inter) == 0:
        raise DataFormatError(f"{files['inter']}: no interactions")
    if TIME in inter.columns:  # without timestamps a repeat is a real event, not a duplicate row
        duplicates = inter.duplicated([USER, ITEM, TIME])
        if duplicates.any():
            log.warning("%s: dropped %d duplicate (user, item, time) rows", files["inter"], int(duplicates.sum()))
            inter = inter[~duplicates]
    inter = filter_interactions(inter, min_rating=min_rating, max_history=max_history, k_core=k_core, tie_break=tie_break)
    if len(inter) == 0:
        raise DataFormatError(f"{files['inter']}: no interactions left after filtering")
    items = Vocab.from_tokens(inter[ITEM])
    users = Vocab.from_tokens(inter[USER])
    frame = pd.DataFrame({USER: users.index(inter[USER]), ITEM: items.index(inter[ITEM])})
    for column in (TIME, RATING):
        if column in inter.columns:
            frame[column] = inter[column].to_numpy()
    frame[ROW] = np.arange(len(frame))  # file order, for the global time order's ties
    frame = sort_interactions(frame, tie_break)
    sequences = Sequences.from_sorted(frame[USER].to_numpy(), frame[ITEM].to_numpy(), len(users))
    split = protocol.split(sequences, frame, tie_break, files["inter"])
    evaluated = len(np.unique(split.evaluation("test")[0]))
    if evaluated < sequences.num_users:  # e.g. one- or two-item histories under loo: training only
        (log.warning if protocol.warn_unevaluated else log.info)(
            "%s: %d of %d users have no test target under protocol %r (history too short); they only train",
            files["inter"], sequences.num_users - evaluated, sequences.num_users, protocol.name)
    cold = sample_cold_items(len(items), cold_items, cold_seed)
    training = split.without_items(cold) if cold_items > 0 else split
    name = files["inter"].stem
    if "item" in files:
        item_frame, _ = read_atomic(files["item"])
        fields = _aligned(item_frame, ITEM, items, files["item"], "item")
    else:
        fields = pd.DataFrame(index=range(len(items) + 1))
    # From what training sees, so cold items (no training interactions) get popularity 0.
    popularity = np.bincount(training.train_items(), minlength=len(items) + 1).astype(np.int64)
    user_fields = None
    if "user" in files:
        user_frame, _ = read_atomic(files["user"])
        user_fields = _aligned(user_frame, USER, users, files["user"], "user")
    catalog = Catalog(name, items, fields, popularity, num_users=len(users))
    return SequenceData(name, items, users, sequences, split, catalog, user_fields, cold, training, frame)
