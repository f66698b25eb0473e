"""The CTR protocol (RecLoRA, ReLLa): pointwise "will this user like this item" samples.

Every rating is a sample. Its label is ``rating >= threshold``; its history is the same
user's earlier ratings (items and ratings, time-ordered with the loader's tie-break). All
interactions are ordered by global time (timestamp, then user, then the user's own order) and
cut into train/validation/test by rank at the 80% and 90% quantiles (``split``), so every
test sample happens no earlier than every validation sample, and every validation sample no
earlier than every training one. Samples with fewer than ``min_history`` earlier ratings are
dropped after the cut (they still count towards the proportions, and stay in later samples'
histories). Models are selected on validation AUC; the test split is only for reporting. The cut
itself is :class:`recsys.data.protocols.CTRProtocol`, beside the sequential protocols.

Samples are lazy: a split is an array of interaction indices into per-user CSR arrays, and a
batch's histories are gathered when it is fetched, so memory grows with the number of
interactions, never with ``samples x history length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal, NamedTuple, TypedDict

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from recsys.data.atomic import DataFormatError, dataset_files
from recsys.data.catalog import Catalog
from recsys.data.datamodule import RecDataModule
from recsys.data.dataset import load_sequences
from recsys.data.embedded import resolve_dataset
from recsys.data.filters import RATING, TIME
from recsys.data.protocols import CTR_STAGES as STAGES
from recsys.data.protocols import CTRProtocol
from recsys.data.protocols import CTRStage as Stage
from recsys.data.vocab import Vocab


class CTRBatch(NamedTuple):
    """A batch of CTR samples (a NamedTuple, so Lightning moves it between devices).

    Histories are left-padded (oldest first, PAD = 0 at the left) and hold only interactions
    strictly earlier in the user's time order than the sample.
    """

    user: Tensor  #: (B,) int64 user index (1..U)
    item: Tensor  #: (B,) int64 target item index (1..N)
    history: Tensor  #: (B, L) int64 earlier items, left-padded with 0
    history_rating: Tensor  #: (B, L) float32 their ratings, 0 at padding
    history_label: Tensor  #: (B, L) float32 their labels (rating >= threshold), 0 at padding
    history_mask: Tensor  #: (B, L) bool, True at real history entries
    label: Tensor  #: (B,) float32 1 = liked (rating >= threshold)
    user_fields: Tensor  #: (B, F) int64 per-field value codes (1..V_f; 0 = missing), F may be 0
    sample: Tensor  #: (B,) int64 the sample's interaction index in the dataset (a stable id)


@dataclass
class CTRData:
    """A dataset under the CTR protocol. Interaction arrays are in CSR order: user ``u``'s
    interactions, time-ordered, are ``[offsets[u], offsets[u + 1])``."""

    name: str
    items: Vocab
    users: Vocab
    catalog: Catalog
    offsets: np.ndarray  #: (U + 2,) int64
    item: np.ndarray  #: (n,) int64
    rating: np.ndarray  #: (n,) float32
    timestamp: np.ndarray  #: (n,) float64
    label: np.ndarray  #: (n,) float32
    split_of: np.ndarray  #: (n,) int8: 0 train, 1 val, 2 test (by global time)
    samples: dict[str, np.ndarray]  #: stage -> (S,) int64 interaction indices kept as samples, in global time order
    threshold: float
    min_history: int
    user_table: pd.DataFrame | None  #: (U + 1) rows of raw user fields (row 0 = PAD), or None
    field_names: list[str] = field(default_factory=list)
    field_codes: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.int64))  #: (U + 1, F) int64

    @cached_property
    def user_of(self) -> np.ndarray:
        """(n,) int64 user of each interaction."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    @cached_property
    def position(self) -> np.ndarray:
        """(n,) int64 index of each interaction within its user's sequence = its history length."""
        return np.arange(len(self.item)) - self.offsets[self.user_of]

    @property
    def field_sizes(self) -> list[int]:
        """Embedding rows each user field needs (its values + the 0 = missing row)."""
        return [int(self.field_codes[:, f].max()) + 1 for f in range(self.field_codes.shape[1])]


def load_ctr(
    path,
    threshold: float = 4.0,
    min_history: int = 5,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    tie_break: str = "file",
    user_fields: Sequence[str] | None = None,
) -> CTRData:
    """Read an atomic dataset (``.inter`` with ``rating`` and ``timestamp``; ``.item``,
    ``.user`` optional) into the CTR protocol (:class:`~recsys.data.protocols.CTRProtocol`).
    ``user_fields``: which ``.user`` columns become categorical features (None = every column but the id)."""
    protocol = CTRProtocol(split, min_history)
    files = dataset_files(path)

    def needs_ratings_and_times(inter: pd.DataFrame, types: dict[str, str], inter_path: Path) -> None:
        for column in (RATING, TIME):
            if column not in inter.columns:
                raise DataFormatError(
                    f"{inter_path}: the CTR protocol needs a {column!r} field (labels come from ratings, the split "
                    f"from timestamps); the file has {list(inter.columns)}")
            if types[column] != "float":
                raise DataFormatError(f"{inter_path}:1: field {column!r} must be typed 'float', not {types[column]!r}")
            if inter[column].isna().any():
                row = int(np.flatnonzero(inter[column].isna().to_numpy())[0])
                raise DataFormatError(f"{inter_path}:{row + 2}: field {column!r} is empty")

    # The engine's vocabularies, catalog and order come from the sequence loader, which reads the file once.
    base = load_sequences(files["inter"], tie_break=tie_break, check=needs_ratings_and_times)
    item = base.sequences.items
    offsets = base.sequences.offsets
    timestamp = base.interactions[TIME].to_numpy(np.float64)
    rating = base.interactions[RATING].to_numpy(np.float32)
    split_of, samples = protocol.cut(offsets, timestamp)
    label = (rating >= threshold).astype(np.float32)
    # Popularity as training sees it (training-period interactions only).
    popularity = np.bincount(item[split_of == 0], minlength=len(base.items) + 1).astype(np.int64)
    catalog = Catalog(base.name, base.items, base.catalog.fields, popularity, num_users=len(base.users))
    table = base.user_fields
    names, codes = [], np.zeros((len(base.users) + 1, 0), np.int64)
    if user_fields is not None and table is None:
        raise DataFormatError(f"{path}: data.user_fields={list(user_fields)} but the dataset has no .user file")
    if table is not None:
        available = [c for c in table.columns]
        names = list(available if user_fields is None else user_fields)
        unknown = [f for f in names if f not in available]
        if unknown:
            raise DataFormatError(f"{files.get('user', path)}: no user field(s) {unknown}; available: {available}")
        columns = []
        for name in names:
            values = table[name].astype(str).where(table[name].astype(str).str.len() > 0, None)
            values.iloc[0] = None  # the PAD user
            codes_f, _ = pd.factorize(values, sort=True)  # -1 for missing -> 0
            columns.append(codes_f.astype(np.int64) + 1)
        codes = np.stack(columns, 1) if columns else codes
    return CTRData(base.name, base.items, base.users, catalog, offsets, item, rating, timestamp, label, split_of,
                   samples, float(threshold), protocol.min_history, table, names, codes)


class CTRSamples(Dataset):
    """Lazy CTR samples of one split: ``__getitems__`` gathers a whole :class:`CTRBatch`
    (use with :func:`recsys.data.sequences.identity_collate`)."""

    def __init__(self, data: CTRData, samples: np.ndarray, max_len: int):
        if max_len < 1:
            raise ValueError(f"data.max_len must be >= 1, got {max_len}")
        self.data, self.samples, self.max_len = data, np.asarray(samples, np.int64), int(max_len)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> CTRBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices) -> CTRBatch:
        d = self.data
        sample = self.samples[np.asarray(indices, np.int64)]
        user = d.user_of[sample]
        start = d.offsets[user]
        # (B, L) interaction indices of the last max_len earlier interactions, -1 where padded.
        where = sample[:, None] - self.max_len + np.arange(self.max_len)[None, :]
        valid = where >= start[:, None]
        where = np.where(valid, where, 0)
        history = np.where(valid, d.item[where], 0)
        rating = np.where(valid, d.rating[where], 0).astype(np.float32)
        hlabel = np.where(valid, d.label[where], 0).astype(np.float32)
        return CTRBatch(
            torch.from_numpy(user), torch.from_numpy(d.item[sample]), torch.from_numpy(history),
            torch.from_numpy(rating), torch.from_numpy(hlabel), torch.from_numpy(valid),
            torch.from_numpy(d.label[sample]), torch.from_numpy(d.field_codes[user]), torch.from_numpy(sample))


class _CTRLoadOptions(TypedDict):
    """:func:`load_ctr`'s options a :class:`CTRDataModule` passes."""

    threshold: float
    min_history: int
    split: tuple[float, ...]
    tie_break: Literal["file", "item"]
    user_fields: list[str] | None


class CTRDataModule(RecDataModule):
    """Data under the CTR protocol (see the module docstring), for models derived from
    :class:`recsys.models.ctr.CTRModule`.

    Args:
        path: a directory of RecBole atomic files or an embedded dataset name (``ml-100k``);
            its ``.inter`` must have ``rating`` and ``timestamp``.
        max_len: history length L in batches (the most recent L earlier ratings).
        threshold: label = rating >= threshold.
        min_history: drop samples with fewer earlier ratings than this.
        split: train/validation/test fractions of all interactions, cut by global time.
        tie_break: order of a user's interactions with equal timestamps (as ``SeqDataModule``).
        user_fields: ``.user`` columns used as categorical features (None = all but the id).
        train_samples: train on a seeded uniform sample of this many training samples (RecLoRA's
            Few2Many: the LLM sees N samples, the CRM all of them); None = all.
        val_samples, test_samples: evaluate on a seeded uniform sample of this many (CPU budgets);
            None = all. The sample depends only on the seed and the split, so every model
            evaluated with the same settings sees the same samples.
        sample_seed: seed of those samples (``numpy.random.default_rng``).
        batch_size, eval_batch_size: samples per training / evaluation batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        path: str = "ml-100k",
        max_len: int = 50,
        threshold: float = 4.0,
        min_history: int = 5,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        tie_break: Literal["file", "item"] = "file",
        user_fields: list[str] | None = None,
        train_samples: int | None = None,
        val_samples: int | None = None,
        test_samples: int | None = None,
        sample_seed: int = 0,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
    ):
        super().__init__()
        if max_len < 1:
            raise ValueError(f"data.max_len must be >= 1, got {max_len}")
        for name, value in (("train_samples", train_samples), ("val_samples", val_samples),
                            ("test_samples", test_samples)):
            if value is not None and value < 1:
                raise ValueError(f"data.{name} must be >= 1 or null, got {value}")
        self.save_hyperparameters()
        self.path, self.max_len = path, max_len
        self.load_options: _CTRLoadOptions = {"threshold": threshold, "min_history": min_history, "split": tuple(split),
                             "tie_break": tie_break, "user_fields": user_fields}
        self.limits = {"train": train_samples, "val": val_samples, "test": test_samples}
        self.sample_seed = sample_seed
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers

    def load_data(self) -> CTRData:
        return load_ctr(resolve_dataset(self.path), **self.load_options)

    @property
    def field_sizes(self) -> list[int]:
        return self.data.field_sizes

    def samples(self, stage: Stage) -> np.ndarray:
        """The interaction indices a stage uses: all of its split, or its seeded sample."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        samples = self.data.samples[stage]
        limit = self.limits[stage]
        if limit is not None and limit < len(samples):
            # One generator per stage, so e.g. the test sample does not change with train_samples.
            rng = np.random.default_rng([self.sample_seed, STAGES.index(stage)])
            samples = np.sort(rng.choice(samples, size=limit, replace=False))
        return samples

    def setup(self, stage: str | None = None) -> None:
        data = self.data
        for name in (("train", "val") if stage == "fit" else ("val",) if stage == "validate" else
                     ("test",) if stage == "test" else ()):
            if len(data.samples[name]) == 0:
                protocol = CTRProtocol(self.load_options["split"], data.min_history)
                raise DataFormatError(f"{self.path}: {protocol.explain_empty(name)}")

    def _stage_loader(self, stage: Stage) -> DataLoader:
        dataset = CTRSamples(self.data, self.samples(stage), self.max_len)
        train = stage == "train"
        return self.loader(dataset, self.batch_size if train else self.eval_batch_size, shuffle=train)

    def train_dataloader(self) -> DataLoader:
        return self._stage_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._stage_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._stage_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._stage_loader("test")
