#!/usr/bin/env python3
"""The LLM item tower on MovieLens-100k's real catalog (1,682 items).

Prints one table and writes ``benchmarks/results/item_tower.json``:

1. all-MiniLM-L6-v2 (packaged): encode the whole catalog cold (empty cache, model load
   included), then again from the embedding cache (target: <= 1 s), items/s.
2. SmolLM2-135M-Instruct (packaged GGUF): first load (GGUF de-quantisation + conversion into
   the cache), reload from the converted copy, last-token embedding of the catalog, items/s.
3. Nearest-neighbour sanity on real text: for 20 well-known titles, is the nearest other
   catalog item by MiniLM embedding of the *title alone* of a shared genre, against the rate
   for a random item (genres are not in the text, so a shared genre is the model's prior).

The cache is a fresh temporary directory, so "cold" is really cold. Usage::

    python benchmarks/item_tower.py [--skip-smollm2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "item_tower.json"

WELL_KNOWN = ["Star Wars", "Toy Story", "Fargo", "Return of the Jedi", "Contact", "English Patient, The",
              "Scream", "Liar Liar", "Air Force One", "Independence Day (ID4)", "Titanic", "Pulp Fiction",
              "Silence of the Lambs, The", "Godfather, The", "Jurassic Park", "Raiders of the Lost Ark",
              "Aliens", "Princess Bride, The", "Sense and Sensibility", "Lion King, The"]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    os.environ["RECSYS_CACHE"] = tempfile.mkdtemp(prefix="recsys-bench-cache-")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from recsys.data.dataset import load_sequences
    from recsys.data.embedded import resolve_dataset
    from recsys.llm.backbones import load_backbone
    from recsys.llm.encoder import TextEncoder, embed_texts
    from recsys.llm.templates import item_fields, render_items

    catalog = load_sequences(resolve_dataset("ml-100k")).catalog
    n = len(catalog)
    texts = render_items(catalog, "default")[1:]
    rows, result = [], {"catalog_items": n, "threads": args.threads, "python": platform.python_version(),
                        "torch": torch.__version__}

    # 1. MiniLM cold and cached
    cold, t_cold = timed(lambda: embed_texts("all-minilm-l6-v2", texts, batch_size=args.batch_size, progress=True))
    warm, t_warm = timed(lambda: embed_texts("all-minilm-l6-v2", texts, batch_size=args.batch_size))
    assert torch.equal(cold, warm)
    result["minilm"] = {"cold_s": t_cold, "cached_s": t_warm, "items_per_s_cold": n / t_cold, "dim": cold.shape[1]}
    rows += [("MiniLM: encode catalog, cold (incl. load)", f"{t_cold:.2f} s", f"{n / t_cold:.0f} items/s"),
             ("MiniLM: encode catalog, cached", f"{t_warm:.3f} s", "target <= 1 s: " + ("met" if t_warm <= 1 else "NOT met"))]

    # 2. SmolLM2 load, reload, last-token embedding
    if not args.skip_smollm2:
        first, t_first = timed(lambda: load_backbone("smollm2-135m-instruct", head="base"))
        del first
        again, t_again = timed(lambda: load_backbone("smollm2-135m-instruct", head="base"))
        encoder = TextEncoder(again, pooling="last", max_length=64)
        _, t_embed = timed(lambda: encoder.encode(texts, batch_size=args.batch_size, cache=False, progress=True))
        result["smollm2"] = {"first_load_s": t_first, "cached_reload_s": t_again, "embed_s": t_embed,
                             "items_per_s": n / t_embed, "source": again.source}
        rows += [("SmolLM2: first load (GGUF -> cache)", f"{t_first:.1f} s", ""),
                 ("SmolLM2: reload from cache", f"{t_again:.2f} s", f"{t_first / t_again:.0f}x faster"),
                 ("SmolLM2: last-token embed catalog", f"{t_embed:.1f} s", f"{n / t_embed:.0f} items/s")]

    # 3. nearest neighbour by title shares a genre?
    fields = [item_fields(catalog.item(i)) for i in range(1, n + 1)]
    genres = [set(f["genres"]) - {"unknown"} for f in fields]
    titles = [f["title"] for f in fields]
    vectors = embed_texts("all-minilm-l6-v2", titles, normalize=True)
    bare = [str(catalog.item(i).get("movie_title", "")) for i in range(1, n + 1)]
    queries = [bare.index(t) for t in WELL_KNOWN]
    sims = vectors[queries] @ vectors.T
    sims[torch.arange(len(queries)), torch.tensor(queries)] = -2  # not itself
    nearest = sims.argmax(1).tolist()
    shared = [bool(genres[q] & genres[m]) for q, m in zip(queries, nearest)]
    rng = np.random.default_rng(0)
    random_rate = float(np.mean([np.mean([bool(genres[q] & genres[j]) for j in rng.integers(0, n, 2000) if j != q])
                                 for q in queries]))
    result["nearest_neighbour"] = {"titles": WELL_KNOWN, "neighbours": [titles[m] for m in nearest],
                                   "share_genre_rate": float(np.mean(shared)), "random_item_rate": random_rate}
    rows.append(("NN by title shares a genre (20 titles)", f"{np.mean(shared):.2f}", f"random item: {random_rate:.2f}"))

    width = max(len(r[0]) for r in rows)
    print(f"\nItem tower on ML-100k ({n} items, {args.threads} threads)\n")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    for q, m, s in zip(queries, nearest, shared):
        print(f"  {titles[q]:<40} -> {titles[m]:<45} {'shares a genre' if s else ''}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
