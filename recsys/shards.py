"""Item embeddings of large catalogs: a ``predict`` run writes fixed-size shards; an index reads them.

A shard directory holds::

    manifest.json       {"format": 1, "num_items": N, "dim": d, "shard_size": S, "dtype": "float32",
                         "shards": {"0": {"file": "shard-00000.npy", "rows": S, "bytes": ..., "sha256": ...}, ...}}
    shard-00000.npy     (S, d) float32: the vectors of items 1..S (shard k holds items k*S+1 .. (k+1)*S)
    shard-00001.npy     ...

Crash safety: a shard is written to a temporary file, flushed and renamed into place, and only
then recorded in the manifest (itself replaced atomically). Readers accept only shards the
manifest lists, with the listed size and checksum. So a run killed at any moment leaves no shard
a reader would accept half-written, and the same run started again skips the complete shards
(:class:`ItemShardDataModule` feeds only the missing ones) and redoes the rest.

Usage: ``Trainer(callbacks=[ShardWriter(dir)]).predict(embedder, ItemShardDataModule(dir, ...))``
with any LightningModule whose ``predict_step`` maps a batch of item ids (B,) to vectors (B, d),
e.g. :class:`TextItemEmbedder`; then ``ItemIndex.from_shards(dir)``. One process: under DDP each
rank would see every shard only in part, so the writer refuses more than one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DataLoader

from recsys.data.atomic import DataFormatError, atomic_path
from recsys.llm.templates import render_items

if TYPE_CHECKING:
    from recsys.llm.encoder import Pooling

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1


# --------------------------------------------------------------------------- the manifest


def shard_file(index: int) -> str:
    return f"shard-{index:05d}.npy"


def shard_rows(index: int, num_items: int, shard_size: int) -> int:
    """Rows of shard ``index``: ``shard_size`` except for the last one."""
    return min(shard_size, num_items - index * shard_size)


def num_shards(num_items: int, shard_size: int) -> int:
    return -(-num_items // shard_size)


def read_manifest(directory: str | Path) -> dict | None:
    """The manifest of a shard directory, or None when there is none yet."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not a shard manifest ({exc})") from None
    missing = {"format", "num_items", "shard_size", "shards"} - set(manifest)
    if missing or manifest["format"] != FORMAT:
        raise DataFormatError(f"{path}: not a format-{FORMAT} shard manifest (missing {sorted(missing)})")
    return manifest


def _replace_json(path: Path, value: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def complete_shards(directory: str | Path, verify: bool = False) -> set[int]:
    """Indices of the shards the manifest lists whose file is there with the listed size
    (and, with ``verify``, checksum)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        return set()
    done = set()
    for key, entry in manifest["shards"].items():
        path = directory / entry["file"]
        if path.is_file() and path.stat().st_size == entry["bytes"] and (not verify or _sha256(path) == entry["sha256"]):
            done.add(int(key))
    return done


def iter_shards(directory: str | Path, verify: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """(first item id, (rows, d) float32 memory-mapped vectors) of every shard, in item order.

    Raises :class:`DataFormatError` naming the shard when one is missing, incomplete, or fails
    its checksum: a catalog is served whole or not at all.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise DataFormatError(f"{directory}: no {MANIFEST}: not a shard directory, or no shard was finished")
    n, size = manifest["num_items"], manifest["shard_size"]
    for index in range(num_shards(n, size)):
        entry = manifest["shards"].get(str(index))
        path = directory / shard_file(index)
        if entry is None:
            raise DataFormatError(f"{path}: shard {index} of {num_shards(n, size)} is not finished "
                                  "(run the predict again: it resumes from the missing shards)")
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise DataFormatError(f"{path}: missing or not the size the manifest lists ({entry['bytes']} bytes)")
        if verify and _sha256(path) != entry["sha256"]:
            raise DataFormatError(f"{path}: checksum differs from the manifest (file changed or corrupt)")
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        expected = (shard_rows(index, n, size), manifest["dim"])
        if vectors.shape != expected or vectors.dtype != np.float32:
            raise DataFormatError(f"{path}: holds {vectors.dtype} {vectors.shape}, the manifest says float32 {expected}")
        yield index * size + 1, vectors


def load_shards(directory: str | Path, verify: bool = True) -> np.ndarray:
    """Every item's vector, (N, d) float32, row i = item i + 1 (a copy: for catalogs that fit in memory)."""
    return np.concatenate([v for _, v in iter_shards(directory, verify)], axis=0)


# --------------------------------------------------------------------------- predict data


class _Items(torch.utils.data.Dataset):
    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> int:
        return int(self.ids[i])


def _collate(ids: list[int]) -> Tensor:
    return torch.tensor(ids, dtype=torch.long)


class ItemShardDataModule(pl.LightningDataModule):
    """Item ids (B,) int64 of the shards not yet complete in ``shard_dir``, in order.

    Args:
        shard_dir: where :class:`ShardWriter` writes; a second run resumes from what is missing.
        num_items: catalog size N (items 1..N); or give ``path``.
        path: a dataset (directory of atomic files or an embedded name): N and the catalog
            (texts for :class:`TextItemEmbedder`) come from it.
        shard_size: rows per shard (the last may be shorter). Fixed once the first shard exists.
        batch_size: items per predict batch.
    """

    def __init__(self, shard_dir: str, num_items: int | None = None, path: str | None = None,
                 shard_size: int = 65536, batch_size: int = 1024, num_workers: int = 0):
        super().__init__()
        if (num_items is None) == (path is None):
            raise ValueError("give the catalog size (num_items) or a dataset (path), exactly one")
        if shard_size < 1 or batch_size < 1:
            raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
        self.shard_dir, self.path, self._num_items = Path(shard_dir), path, num_items
        self.shard_size, self.batch_size, self.num_workers = shard_size, batch_size, num_workers
        self._data = None

    @property
    def data(self):
        if self._data is None:
            from recsys.data.dataset import load_sequences
            from recsys.data.embedded import resolve_dataset

            self._data = load_sequences(resolve_dataset(self.path))
        return self._data

    @property
    def num_items(self) -> int:
        return self._num_items if self._num_items is not None else len(self.data.items)

    @property
    def catalog(self):
        if self.path is None:
            raise ValueError("this ItemShardDataModule has no dataset (path) and so no catalog")
        return self.data.catalog

    def pending_items(self) -> np.ndarray:
        """(M,) int64 ids of the items whose shard is not complete."""
        done = complete_shards(self.shard_dir)
        manifest = read_manifest(self.shard_dir)
        if manifest is not None and (manifest["shard_size"], manifest["num_items"]) != (self.shard_size, self.num_items):
            raise ValueError(
                f"{self.shard_dir} holds shards of {manifest['shard_size']} rows for {manifest['num_items']} items; "
                f"this run asks for {self.shard_size} rows and {self.num_items} items (use another directory)")
        parts = [np.arange(k * self.shard_size + 1, k * self.shard_size + 1 + shard_rows(k, self.num_items, self.shard_size))
                 for k in range(num_shards(self.num_items, self.shard_size)) if k not in done]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def predict_dataloader(self) -> DataLoader:
        pending = self.pending_items()
        skipped = self.num_items - len(pending)
        if skipped:
            log.info("%s: %d items already in complete shards; embedding the other %d", self.shard_dir, skipped, len(pending))
        return DataLoader(_Items(pending), batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=_collate)


# --------------------------------------------------------------------------- the writer


class ShardWriter(BasePredictionWriter):
    """Writes a predict run's item vectors into fixed-size ``.npy`` shards + a manifest, atomically.

    Each ``predict_step`` returns (B, d) vectors for its batch of item ids (B,). Rows are
    buffered per shard; a shard is written (temp file, fsync, rename) and recorded in the
    manifest as soon as all its rows are in, so a killed run loses at most the shards in progress.

    Args:
        shard_dir: output directory (created); must match the data module's ``shard_dir``.
    """

    def __init__(self, shard_dir: str):
        super().__init__(write_interval="batch")
        self.shard_dir = Path(shard_dir)
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # shard -> (vectors, filled rows mask)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            raise RuntimeError("ShardWriter runs in one process: under DDP every rank holds only part of each shard")
        data = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        if not isinstance(data, ItemShardDataModule) or Path(data.shard_dir).resolve() != self.shard_dir.resolve():
            raise ValueError(f"ShardWriter({self.shard_dir}) needs an ItemShardDataModule with the same shard_dir")
        self.num_items, self.shard_size = data.num_items, data.shard_size
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._buffers.clear()

    def write_on_batch_end(self, trainer, pl_module, prediction: Tensor, batch_indices, batch: Tensor,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        vectors = prediction.detach().float().cpu().numpy()
        ids = batch.cpu().numpy()
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"predict_step must return (B, d) vectors for B item ids, got shape {tuple(vectors.shape)} "
                             f"for {len(ids)} ids")
        if not np.isfinite(vectors).all():
            raise ValueError(f"predict_step returned NaN or infinite vectors (batch {batch_idx})")
        shards = (ids - 1) // self.shard_size
        for shard in np.unique(shards):
            rows = ids[shards == shard] - 1 - shard * self.shard_size
            if shard not in self._buffers:
                n = shard_rows(int(shard), self.num_items, self.shard_size)
                self._buffers[shard] = (np.zeros((n, vectors.shape[1]), dtype=np.float32), np.zeros(n, dtype=bool))
            buffer, filled = self._buffers[shard]
            buffer[rows] = vectors[shards == shard]
            filled[rows] = True
            if filled.all():
                self._write(int(shard), buffer)
                del self._buffers[shard]

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._buffers:
            log.warning("%s: %d shards were left incomplete (the run stopped early?); run again to finish them",
                        self.shard_dir, len(self._buffers))

    def _write(self, index: int, vectors: np.ndarray) -> None:
        path = self.shard_dir / shard_file(index)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        manifest = read_manifest(self.shard_dir) or {
            "format": FORMAT, "num_items": self.num_items, "dim": int(vectors.shape[1]), "dtype": "float32",
            "shard_size": self.shard_size, "shards": {}}
        if manifest["dim"] != vectors.shape[1]:
            raise ValueError(f"{path}: vectors of dimension {vectors.shape[1]}, the other shards have {manifest['dim']}")
        manifest["shards"][str(index)] = {"file": path.name, "rows": len(vectors), "bytes": path.stat().st_size,
                                          "sha256": _sha256(path)}
        _replace_json(self.shard_dir / MANIFEST, manifest)


# --------------------------------------------------------------------------- an embedder


class TextItemEmbedder(pl.LightningModule):
    """Item ids (B,) -> (B, d) text embeddings of the catalog's items, for ``predict`` runs.

    Args:
        backbone: a registered backbone name, hub id or directory (``recsys backbones``).
        template: the item text template (``recsys.llm.templates``).
        pooling, max_length, normalize: as :class:`recsys.llm.TextEncoder`.
    """

    def __init__(self, backbone: str = "all-minilm-l6-v2", template: str = "default", pooling: str = "mean",
                 max_length: int = 64, normalize: bool = False):
        super().__init__()
        from recsys.llm.encoder import TextEncoder

        # TextEncoder checks the pooling name
        self.encoder = TextEncoder(backbone, pooling=cast("Pooling", pooling), max_length=max_length,
                                   trainable_layers=0, normalize=normalize)
        self.template = template
        self._texts: list[str] | None = None

    def setup(self, stage: str | None = None) -> None:
        # the trainer's datamodule is set by Lightning's data connector
        self._texts = render_items(self.trainer.datamodule.catalog, self.template)  # type: ignore[attr-defined]

    def predict_step(self, batch: Tensor, batch_idx: int = 0) -> Tensor:
        if self._texts is None:
            raise RuntimeError("TextItemEmbedder.predict_step before setup: the item texts are rendered in setup")
        return self.encoder.encode([self._texts[i] for i in batch.tolist()], batch_size=len(batch), progress=False)
