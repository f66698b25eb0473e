#!/usr/bin/env python3
"""Zero-shot rerankers on ML-100k's candidate-list protocol (LLMRank's): accuracy, position bias, cost.

Protocol: each evaluated user's test target among 19 unseen items drawn with ``--seed``
(``recsys.CandidateLists(num=20)``), the engine's ``loo`` split, the first ``--users`` test users
(by user index). Every row ranks the same lists, so rows are compared user by user (paired test,
Wilcoxon, against SASRec). A trained SASRec (``--retriever``: a checkpoint of
``configs/ml-100k/sasrec.yaml``) both gives the SASRec row and orders each list before an LLM
sees it ("given" = SASRec's order, best first), as the first stage of retrieve-then-rerank would.

Rows: Random, Pop, SASRec; on SmolLM2-135M-Instruct (frozen, chat template, the 10 most recent
titles): pointwise P(Yes), PRP (one sliding pass, both orders of each pair: it settles the top
item only; the others stay close to SASRec's order, each item the winner passes moving down one
place), listwise generation (RankGPT/LLMRank) and FIRST (first identifier's logits), the last two
with the list given, reversed and shuffled, FIRST with 3 bootstrap orders (Borda) from the given
and the reversed list, and FIRST with LLMRank's recency-focused prompt (given and shuffled). Cost
columns: seconds per user (wall, this process, one thread), prompts, prompt tokens and generated
tokens per user.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/rerankers.py --retriever <sasrec best-*.ckpt> --users 50 --skip-done
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

import recsys
from recsys.study.stats import bootstrap_ci, paired_test, per_user
from recsys_rerank import FIRST, PRP, ListwiseLLM, PointwiseLLM, PopularityReranker, RandomReranker, Rerank

LLM = {"backbone": "smollm2-135m-instruct", "history_items": 10}
#: row name -> the reranker it runs (None: the retriever's own scores)
ROWS: dict[str, Callable[[], recsys.Reranker | None]] = {
    "Random": lambda: RandomReranker(seed=0),
    "Pop": lambda: PopularityReranker(),
    "SASRec": lambda: None,
    "Pointwise": lambda: PointwiseLLM(**LLM),
    "PRP (sliding, 1 pass)": lambda: PRP(**LLM, method="sliding", passes=1),
    "Listwise generation": lambda: ListwiseLLM(**LLM),
    "Listwise generation (reversed)": lambda: ListwiseLLM(**LLM, order="reversed"),
    "Listwise generation (shuffled)": lambda: ListwiseLLM(**LLM, order="shuffled"),
    "FIRST": lambda: FIRST(**LLM),
    "FIRST (reversed)": lambda: FIRST(**LLM, order="reversed"),
    "FIRST (shuffled)": lambda: FIRST(**LLM, order="shuffled"),
    "FIRST (3 bootstrap orders)": lambda: FIRST(**LLM, bootstrap=3),
    "FIRST (reversed, 3 bootstrap orders)": lambda: FIRST(**LLM, order="reversed", bootstrap=3),
    "FIRST (recency prompt)": lambda: FIRST(**LLM, recency=True),
    "FIRST (shuffled, recency prompt)": lambda: FIRST(**LLM, order="shuffled", recency=True),
}
METRICS = ("ndcg@10", "hit@10", "mrr@10", "ndcg@5", "hit@1")


def batches(args: argparse.Namespace) -> tuple[recsys.SeqDataModule, list[recsys.Batch]]:
    data = recsys.SeqDataModule(path=args.dataset, eval_batch_size=args.batch_size,
                                candidates=recsys.CandidateLists(num=args.candidates, seed=args.seed))
    data.setup("test")
    out, users = [], 0
    for batch in data.test_dataloader():
        out.append(batch)
        users += len(batch.target)
        if users >= args.users:
            break
    return data, out


def run_row(name: str, data: recsys.SeqDataModule, chosen: list[recsys.Batch], retriever: str) -> dict[str, Any]:
    reranker = ROWS[name]()
    model = Rerank(num_items=data.num_items, reranker=reranker or RandomReranker(), retriever=retriever)
    model.set_catalog(data.catalog)
    ranks, seconds = [], 0.0
    for batch in tqdm(chosen, desc=name, file=sys.stderr):
        start = time.perf_counter()
        scores = model.score(batch) if reranker is not None else model.retriever.score(batch).float()
        seconds += time.perf_counter() - start
        ranks += recsys.dense_ranks(recsys.keep_candidates(scores, batch.candidates), batch.target).tolist()
    counts = dict(getattr(reranker, "counts", {}))
    users = len(ranks)
    return {"ranks": ranks, "users": users, "seconds_per_user": seconds / users,
            "prompts_per_user": counts.get("prompts", 0) / users,
            "prompt_tokens_per_user": counts.get("prompt_tokens", 0) / users,
            "prompt_length": counts.get("prompt_tokens", 0) / max(counts.get("prompts", 0), 1),
            "generated_tokens_per_user": counts.get("generated_tokens", 0) / users,
            "parse": {k: counts[k] for k in ("unknown_ids", "repeated_ids", "missing_ids") if k in counts}}


def table(results: dict[str, Any], reference: str = "SASRec") -> str:
    lines = ["| row | NDCG@10 [95% CI] | hit@10 | MRR@10 | hit@1 | vs SASRec (Wilcoxon p) | s/user | prompts/user "
             "| prompt tokens/user | tokens/prompt | generated/user |", "|" + "---|" * 11]
    ref = per_user(np.array(results[reference]["ranks"]), "ndcg@10") if reference in results else None
    for name, row in results.items():
        ranks = np.array(row["ranks"])
        ndcg = per_user(ranks, "ndcg@10")
        low, high = bootstrap_ci(ndcg)
        versus = "-"
        if ref is not None and name != reference and len(ref) == len(ndcg):
            test = paired_test(ndcg, ref)
            versus = f"{ndcg.mean() - ref.mean():+.4f} (p {test.wilcoxon_p:.3g})"
        lines.append(f"| {name} | {ndcg.mean():.4f} [{low:.4f}, {high:.4f}] | {per_user(ranks, 'hit@10').mean():.4f} | "
                     f"{per_user(ranks, 'mrr@10').mean():.4f} | {per_user(ranks, 'hit@1').mean():.4f} | {versus} | "
                     f"{row['seconds_per_user']:.3f} | {row['prompts_per_user']:.1f} | "
                     f"{row['prompt_tokens_per_user']:.0f} | {row['prompt_length']:.0f} | "
                     f"{row['generated_tokens_per_user']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retriever", required=True, help="a SASRec checkpoint trained on --dataset")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--users", type=int, default=50, help="the first N test users (by user index)")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the seed of the candidate lists")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--rows", default=";".join(ROWS), help="rows to run, separated by ';' (default: all)")
    parser.add_argument("--skip-done", action="store_true", help="keep rows already in --out")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rerankers_ml-100k.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    settings = {k: v for k, v in vars(args).items() if k not in ("rows", "skip_done", "out")}
    if saved and saved.get("settings") != {**settings, "retriever": str(args.retriever)}:
        if args.skip_done:
            sys.exit(f"{args.out}: written with other settings ({saved.get('settings')}); use another --out")
        saved = {}
    results = saved.get("rows", {})
    data, chosen = batches(args)
    for name in args.rows.split(";"):
        if name not in ROWS:
            sys.exit(f"--rows: unknown row {name!r}; rows: {', '.join(ROWS)}")
        if args.skip_done and name in results:
            continue
        results[name] = run_row(name, data, chosen, args.retriever)
        ordered = {n: results[n] for n in ROWS if n in results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "settings": {**settings,
                                        "retriever": str(args.retriever)}, "torch_threads": torch.get_num_threads(),
                                        "rows": ordered}, indent=1))
        print(table(ordered), flush=True)


if __name__ == "__main__":
    main()
