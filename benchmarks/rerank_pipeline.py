#!/usr/bin/env python3
"""Retrieve then rerank, full ranking: a trained SASRec's top-20 reordered by a trained reranker,
against SASRec alone on the same test users (issue 21, bar 4).

Protocol: the engine's ``loo`` split, full ranking over every item with the history masked (the
reranked top-20 first, the rest in SASRec's order), pessimistic ties; the per-user NDCG@10 of
both rows is compared with a paired test (Wilcoxon, and a bootstrap interval of the difference).
The reranker is trained by ``recsys fit`` (``Rerank``: each training window's list is SASRec's
top-20 unseen items with the target put in at a random place), for ``--epochs`` epochs of at most
``--train-batches`` batches, once per learning rate of ``--lr``; the run (and epoch) with the best
validation NDCG@10 is kept, and the test split is read once, at the end, by that one only.

Rerankers: ``cross-encoder`` (MiniLM, its top 2 of 6 layers trained, linear head; the 3 most
recent titles and the candidate's in 64 tokens) and ``first-lora``
(SmolLM2-135M-Instruct with LoRA r 8 on FIRST's loss). State the budget you ran with: it is
stored in the JSON with the command.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/rerank_pipeline.py --retriever <SASRec best-*.ckpt> \\
        --reranker cross-encoder --train-batches 400 --out benchmarks/results/rerank_pipeline_ce.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import recsys
import recsys.testing
from recsys.study.stats import bootstrap_ci, paired_test, per_user
from recsys_rerank import Rerank

RERANKERS = {
    "cross-encoder": {"class_path": "recsys_rerank.CrossEncoder",
                      "init_args": {"backbone": "all-minilm-l6-v2", "history_items": 3, "max_length": 64,
                                    "trainable_layers": 2}},
    "first-lora": {"class_path": "recsys_rerank.FIRST",
                   "init_args": {"backbone": "smollm2-135m-instruct", "history_items": 10, "lora_r": 8}},
}


def evaluate(model: Rerank, data: recsys.SeqDataModule, users: int | None, check: int = 8
             ) -> tuple[list[int], list[int], float, int]:
    """Test ranks of SASRec alone and of the pipeline (same windows), the pipeline's seconds per
    reranked list, and how many lists were reranked.

    Only windows whose target SASRec puts in its top-``top_n`` are given to the reranker: for the
    others the pipeline's rank is SASRec's by construction (the target is below the reranked
    list, where the retriever's order is kept), so reranking them would cost time and change
    nothing. The first ``check`` windows of the first batch are reranked whole as well, and the
    two ranks must agree."""
    alone, piped, seconds, reranked = [], [], 0.0, 0
    model.eval()
    for batch in tqdm(data.test_dataloader(), desc="test", file=sys.stderr):
        with torch.no_grad():  # the engine's own ranking rule (a repeat target keeps its score)
            base = model.retriever.rank(batch)
            inside = base <= model.top_n
            ranks = base.clone()
            start = time.perf_counter()
            if inside.any():
                ranks[inside] = model.rank(batch.select(inside))
            seconds += time.perf_counter() - start
            reranked += int(inside.sum())
            if check:
                rows = torch.arange(min(check, len(base)))
                whole = model.rank(batch.select(rows))
                if not torch.equal(whole, ranks[rows]):
                    raise AssertionError(f"reranking only the top-{model.top_n} hits changed a rank: "
                                         f"{ranks[rows].tolist()} != {whole.tolist()}")
                check = 0
        alone += base.tolist()
        piped += ranks.tolist()
        if users is not None and len(piped) >= users:
            break
    return alone, piped, seconds / max(reranked, 1), reranked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retriever", required=True, help="the SASRec checkpoint (trained on --data)")
    parser.add_argument("--data", default="data/amazon-scientific")
    parser.add_argument("--max-len", type=int, default=20, help="the retriever's window (its config's data.max_len)")
    parser.add_argument("--reranker", choices=sorted(RERANKERS), default="cross-encoder")
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--lr", default="5e-5", help="learning rates to try, comma-separated (chosen on validation)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-batches", type=int, default=400, help="at most this many batches per epoch")
    parser.add_argument("--val-users", type=int, default=None, help="validation users per epoch (default: all)")
    parser.add_argument("--test-users", type=int, default=None, help="the first N test users (default: all)")
    parser.add_argument("--root", type=Path, default=Path("runs/rerank_pipeline"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reuse", action="store_true", help="take the fitted runs recorded in --out (no training)")
    args = parser.parse_args()

    reranker = RERANKERS[args.reranker]
    eval_batch = 64
    val_batches = 1.0 if args.val_users is None else max(1, args.val_users // eval_batch)
    def command(lr: float) -> list[str]:
        return ["fit", "--model=Rerank", f"--model.retriever={args.retriever}", f"--model.top_n={args.top_n}",
                f"--model.lr={lr}", f"--model.reranker={json.dumps(reranker)}",
                "--data=SeqDataModule", f"--data.path={args.data}", f"--data.max_len={args.max_len}",
                f"--data.batch_size={args.batch_size}", f"--data.eval_batch_size={eval_batch}",
                f"--trainer.max_epochs={args.epochs}", f"--trainer.limit_train_batches={args.train_batches}",
                f"--trainer.limit_val_batches={val_batches}",
                f"--trainer.default_root_dir={args.root / args.reranker / str(lr)}", "--seed_everything=0",
                "--test_after_fit=false"]

    if args.reuse:
        saved = json.loads(args.out.read_text())
        tried, fit_seconds = {float(lr): run for lr, run in saved["tried"].items()}, saved["fit_seconds"]
        cli = recsys.testing.run_cli(command(max(tried, key=lambda lr: tried[lr]["val_ndcg@10"]))[1:], run=False)
    else:
        tried, fit_seconds = {}, 0.0
        for lr in [float(v) for v in args.lr.split(",")]:
            started = time.perf_counter()
            cli = recsys.testing.run_cli(command(lr))
            fit_seconds += time.perf_counter() - started
            callback = cli.trainer.checkpoint_callback
            tried[lr] = {"val_ndcg@10": float(callback.best_model_score), "checkpoint": callback.best_model_path}
            print(f"lr {lr}: best val/ndcg@10 {tried[lr]['val_ndcg@10']:.4f}", flush=True)
    chosen = max(tried, key=lambda lr: tried[lr]["val_ndcg@10"])
    best = tried[chosen]["checkpoint"]
    # the reranker is a module, not a saved hyper-parameter: the fitted one is given back, its
    # weights then come from the checkpoint
    model = Rerank.load_from_checkpoint(best, map_location="cpu", reranker=cli.model.reranker)
    data = cli.datamodule
    data.setup("test")
    model.set_catalog(data.catalog)
    alone, piped, seconds, reranked = evaluate(model, data, args.test_users)
    rows = {"SASRec": alone, f"SASRec top-{args.top_n} + {args.reranker}": piped}
    ndcg = {name: per_user(np.array(r), "ndcg@10") for name, r in rows.items()}
    test = paired_test(ndcg[f"SASRec top-{args.top_n} + {args.reranker}"], ndcg["SASRec"])
    result = {"command": " ".join(sys.argv), "settings": vars(args) | {"root": str(args.root), "out": str(args.out)},
              "tried": tried, "chosen_lr": chosen, "checkpoint": best, "fit_seconds": fit_seconds, "rerank_seconds_per_list": seconds, "reranked_lists": reranked,
              "rows": {name: {"ranks": r, **{m: float(per_user(np.array(r), m).mean())
                                             for m in ("ndcg@10", "hit@10", "mrr@10", "ndcg@20")},
                              "ndcg@10_ci": list(bootstrap_ci(ndcg[name]))} for name, r in rows.items()},
              "paired": {"difference": float(ndcg[f"SASRec top-{args.top_n} + {args.reranker}"].mean()
                                             - ndcg["SASRec"].mean()),
                         "wilcoxon_p": test.wilcoxon_p, "t_p": test.t_p}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("| row | users | NDCG@10 [95% CI] | hit@10 | MRR@10 |\n|---|---|---|---|---|")
    for name, row in result["rows"].items():
        low, high = row["ndcg@10_ci"]
        print(f"| {name} | {len(row['ranks'])} | {row['ndcg@10']:.4f} [{low:.4f}, {high:.4f}] | {row['hit@10']:.4f} | "
              f"{row['mrr@10']:.4f} |")
    print(f"difference {result['paired']['difference']:+.4f}, Wilcoxon p {test.wilcoxon_p:.3g}; fit {fit_seconds:.0f} s, "
          f"rerank {seconds:.3f} s per list ({reranked} lists held the target in SASRec's top-{args.top_n})")


if __name__ == "__main__":
    main()
