#!/usr/bin/env python3
"""Large catalogs: build ``recsys.ItemIndex`` over 1M synthetic items and serve top-10 to 10k users.

The catalog is a Gaussian mixture (``--clusters`` centres drawn from N(0, I), each item a centre
plus N(0, noise^2 I) noise, float32), so neighbourhoods overlap the way learned item embeddings
do and an approximate index has real work to do; users are drawn from the same mixture. The
ground truth is exact inner-product search (faiss ``IndexFlatIP``) over the same vectors.

For each index kind (``auto``, i.e. what ``ItemIndex`` picks for this catalog size with its
default parameters, and optionally the others) it prints and records: build time, query
throughput (queries/s through ``ItemIndex.search``, top-10, no exclusions), index bytes (the
serialized faiss index), process RSS growth during the build, and recall@10 against exact
search (target >= 0.95). Results are written after every row; ``--skip-done`` reuses rows of an
earlier run with the same settings.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/reliability_index.py --threads 1 --kinds auto ivf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability_index.json"


def catalog(items: int, queries: int, dim: int, clusters: int, noise: float, seed: int):
    """(items, dim) and (queries, dim) float32 draws from one Gaussian mixture."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = np.empty((items, dim), dtype=np.float32)
    for start in range(0, items, 100_000):  # chunks: no float64 temporaries the size of the catalog
        stop = min(start + 100_000, items)
        x[start:stop] = centres[rng.integers(0, clusters, stop - start)]
        x[start:stop] += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
    q = centres[rng.integers(0, clusters, queries)] + noise * rng.standard_normal((queries, dim), dtype=np.float32)
    return x, q


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.0, help="within-cluster standard deviation (centres ~ N(0, I))")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=["auto"], choices=["auto", "ivf", "hnsw", "flat"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-done", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import faiss
    import numpy as np
    import torch

    from recsys.index import ItemIndex

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    settings = {k: getattr(args, k) for k in ("items", "queries", "dim", "clusters", "noise", "k", "threads", "seed")}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    rows = previous.get("rows", {}) if args.skip_done and previous.get("settings") == settings else {}

    started = time.perf_counter()
    x, q = catalog(args.items, args.queries, args.dim, args.clusters, args.noise, args.seed)
    print(f"catalog: {args.items} x {args.dim} float32 ({x.nbytes / 2**20:.0f} MiB), {args.queries} queries, "
          f"{args.clusters} clusters, noise {args.noise} ({time.perf_counter() - started:.1f}s)", flush=True)

    started = time.perf_counter()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    _, truth = exact.search(q, args.k)
    exact_seconds = time.perf_counter() - started
    del exact
    print(f"exact top-{args.k} (IndexFlatIP, brute force): {exact_seconds:.1f}s, {args.queries / exact_seconds:.0f} q/s",
          flush=True)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "settings": settings,
            "exact_search_seconds": round(exact_seconds, 2),
            "machine": {"cpu": platform.processor() or platform.machine(), "faiss": faiss.__version__},
            "target_recall": 0.95,
            "rows": rows,
        }
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, args.out)

    for kind in args.kinds:
        if kind in rows:
            print(f"{kind}: done earlier (--skip-done), kept", flush=True)
            continue
        before = rss()
        started = time.perf_counter()
        index = ItemIndex(x, metric="ip", kind=kind)
        build = time.perf_counter() - started
        grown = rss() - before
        started = time.perf_counter()
        _, ids = index.search(q, args.k)
        search = time.perf_counter() - started
        found = ids.numpy() - 1  # ItemIndex ids are 1..N; faiss positions are 0..N-1
        recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, truth)]))
        params = {"kind": index.kind}
        if index.kind == "ivf":
            params.update(nlist=int(index.index.nlist), nprobe=int(index.index.nprobe))
        elif index.kind == "hnsw":
            params.update(M=int(index.index.hnsw.nb_neighbors(1)), ef_search=int(index.index.hnsw.efSearch),
                          ef_construction=int(index.index.hnsw.efConstruction))
        rows[kind] = {
            "params": params,
            "build_seconds": round(build, 1),
            "queries_per_second": round(args.queries / search),
            "index_mib": round(index_bytes(index.index) / 2**20, 1),
            "rss_growth_mib": round(grown / 2**20, 1),
            f"recall@{args.k}": round(recall, 4),
            "meets_target": recall >= 0.95,
        }
        save()
        print(f"{kind}: {json.dumps(rows[kind])}", flush=True)
        del index

    print(f"\n{args.items} items x {args.dim}-d, {args.queries} queries, top-{args.k}, {args.threads} thread(s)")
    print(f"{'kind':6s} {'index':46s} {'build s':>8s} {'q/s':>8s} {'index MiB':>10s} {'RSS +MiB':>9s} {'recall@10':>10s}")
    for kind, row in rows.items():
        p = ", ".join(f"{k}={v}" for k, v in row["params"].items() if k != "kind")
        print(f"{kind:6s} {row['params']['kind'] + ' ' + p:46s} {row['build_seconds']:8.1f} {row['queries_per_second']:8d} "
              f"{row['index_mib']:10.1f} {row['rss_growth_mib']:9.1f} {row[f'recall@{args.k}']:10.4f}")
    save()


if __name__ == "__main__":
    main()
