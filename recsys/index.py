"""A faiss item index: top-k items for query vectors, with per-query exclusions.

Exact search (``IndexFlatIP`` / ``IndexFlatL2``) for catalogs up to ``exact_below`` items;
above that ``auto`` picks IVF (``nlist`` = 4 sqrt(N) lists, ``nprobe`` = 16, k-means trained on
at most 64 points per list). On a 1M-item, 64-d clustered catalog (benchmarks/reliability_index.py)
that IVF reached recall@10 0.99 against exact search, where HNSW (M=32, efSearch=128) reached
0.93 at a third of the query throughput and twice the memory; HNSW stays available as
``kind="hnsw"``. Used by dense models to serve top-K and by grounders. faiss is imported on
first use, so ID-only models never load it.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

Metric = Literal["ip", "l2", "cosine"]
#: IVF k-means trains on at most this many points per list. faiss' default, 256, built the 1M-item
#: benchmark index in 1150 s instead of 388 s for the same recall@10 (0.993).
TRAIN_POINTS_PER_LIST = 64
Kind = Literal["auto", "flat", "ivf", "hnsw"]


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("recsys.index needs faiss: pip install 'recsys-llm[llm]' (or faiss-cpu)") from exc
    return faiss


def _as_float32(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


class ItemIndex:
    """Item vectors (N, d) with their item ids (N,), searchable by inner product or L2.

    Ids default to 1..N, the engine's item indices (0 is PAD and means "no item").

    ``metric="cosine"`` normalises items and queries and searches by inner product. Scores
    are "higher is better" for every metric (L2 returns negated squared distances).
    """

    def __init__(
        self,
        vectors: Tensor | np.ndarray,
        ids: Sequence[int] | np.ndarray | Tensor | None = None,
        metric: Metric = "ip",
        kind: Kind = "auto",
        exact_below: int = 100_000,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        seed: int = 0,
    ):
        x = _as_float32(vectors, "vectors")
        self._create(len(x), x.shape[1], ids, metric, kind, exact_below, nlist, nprobe, hnsw_m, ef_search)
        if self.metric == "cosine":
            x = _normalized(x)
        if self.kind == "ivf":
            self._train(x, seed)
        self.index.add(x)

    def _create(self, n, dim, ids, metric, kind, exact_below, nlist, nprobe, hnsw_m, ef_search) -> None:
        """The empty faiss index for ``n`` vectors of ``dim`` (IVF still needs :meth:`_train`)."""
        if metric not in ("ip", "l2", "cosine"):
            raise ValueError(f"metric must be 'ip', 'l2' or 'cosine', got {metric!r}")
        faiss = _faiss()
        self.ids = np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(
            ids.cpu() if isinstance(ids, Tensor) else ids, dtype=np.int64)
        if self.ids.shape != (n,):
            raise ValueError(f"ids must have one entry per vector ({n}), got shape {self.ids.shape}")
        self.metric, self.dim = metric, dim
        faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.kind = ("flat" if n < exact_below else "ivf") if kind == "auto" else kind
        if self.kind == "flat":
            self.index = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
        elif self.kind == "ivf":
            nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 points per list
            quantizer = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
            self.index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
            self.index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST  # faiss subsamples the rest
            self.index.nprobe = min(nprobe, nlist)
        elif self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss_metric)
            self.index.hnsw.efSearch = ef_search
        else:
            raise ValueError(f"kind must be 'auto', 'flat', 'ivf' or 'hnsw', got {kind!r}")

    def _train(self, sample: np.ndarray, seed: int) -> None:
        self.index.cp.seed = seed
        self.index.train(sample)

    @classmethod
    def from_shards(cls, directory, verify: bool = True, metric: Metric = "ip", kind: Kind = "auto",
                    exact_below: int = 100_000, nlist: int | None = None, nprobe: int = 16, hnsw_m: int = 32,
                    ef_search: int = 128, seed: int = 0) -> "ItemIndex":
        """An index over the item vectors a ``predict`` run wrote as shards (:mod:`recsys.shards`).

        Shards are memory-mapped and added one at a time, so the catalog is never held twice in
        memory; ids are 1..N. An incomplete, resized or corrupt shard is a ``DataFormatError``
        naming it (``verify`` also checks each shard's checksum).
        """
        from recsys.shards import iter_shards, read_manifest

        manifest = read_manifest(directory)
        if manifest is None:
            from recsys.data.atomic import DataFormatError

            raise DataFormatError(f"{directory}: no manifest.json: not a shard directory, or no shard was finished")
        n, dim = manifest["num_items"], manifest["dim"]
        self = cls.__new__(cls)
        self._create(n, dim, None, metric, kind, exact_below, nlist, nprobe, hnsw_m, ef_search)
        if self.kind == "ivf":  # train on a uniform sample of rows (what faiss itself would subsample)
            size = min(n, TRAIN_POINTS_PER_LIST * self.index.nlist)
            rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
            parts = [shard[rows[(rows >= first - 1) & (rows < first - 1 + len(shard))] - (first - 1)]
                     for first, shard in iter_shards(directory, verify=False)]
            sample = _as_float32(np.concatenate(parts), "vectors")
            if metric == "cosine":
                sample = _normalized(sample)
            self._train(sample, seed)
            del sample
        for _, shard in iter_shards(directory, verify=verify):
            x = _as_float32(shard, "vectors")  # one shard in memory at a time (a read-only map)
            if metric == "cosine":
                x = _normalized(x)
            self.index.add(x)
        return self

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(
        self, queries: Tensor | np.ndarray, k: int, exclude: Tensor | Sequence[Sequence[int]] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-k items per query, best first.

        queries: (B, d). exclude: per-query item ids never returned (a (B, L) tensor padded
        with 0, or B lists). Returns ((B, k) float32 scores, (B, k) int64 item ids); rows with
        fewer than k eligible items end with id 0 and score -inf.
        """
        q = _as_float32(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index has {self.dim}")
        if self.metric == "cosine":
            q = _normalized(q)
        excluded = _exclusion_sets(exclude, len(q))
        extra = max((len(s) for s in excluded), default=0)
        fetch = min(k + extra, len(self))
        scores, pos = self.index.search(q, fetch)
        if self.metric == "l2":
            scores = -scores
        out_ids = np.zeros((len(q), k), dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        for row in range(len(q)):
            valid = pos[row] >= 0  # approximate indexes return -1 when they run out
            ids, sc = self.ids[pos[row][valid]], scores[row][valid]
            if excluded[row]:
                keep = ~np.isin(ids, list(excluded[row]))
                ids, sc = ids[keep], sc[keep]
            out_ids[row, : min(k, len(ids))] = ids[:k]
            out_scores[row, : min(k, len(ids))] = sc[:k]
        return torch.from_numpy(out_scores), torch.from_numpy(out_ids)


def _normalized(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, in a copy: the caller's array (or a read-only map) is left alone."""
    x = np.array(x, dtype=np.float32, copy=True)
    _faiss().normalize_L2(x)
    return x


def _exclusion_sets(exclude, rows: int) -> list[set[int]]:
    if exclude is None:
        return [set() for _ in range(rows)]
    if isinstance(exclude, Tensor):
        exclude = exclude.cpu().tolist()
    if len(exclude) != rows:
        raise ValueError(f"exclude has {len(exclude)} rows, queries have {rows}")
    return [{int(i) for i in row if int(i) != 0} for row in exclude]
