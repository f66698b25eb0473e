#!/usr/bin/env python3
"""HLLM's item-vector reuse on MovieLens-100k, before and after, side by side in one run.

The model is ``plugins/recsys-hllm/configs/ml-100k/hllm.yaml``'s: all-MiniLM-L6-v2 item LLM (top layer trainable,
the 5 below frozen and cached), ``default`` item text cut at 24 tokens, a random 2-layer
Llama user LLM, 128 shared negatives, 64 training windows of up to 50 items per batch (stride
25), 256 evaluation windows per batch. Both sides run on the same model, data and batches:

1. **Evaluation** (one validation epoch, 943 windows). *Before* (the code until this change):
   every batch dropped the catalog table, encoded its histories' items, then re-encoded the
   whole catalog to score. *After*: the catalog is encoded once per epoch and every batch
   looks up both its histories and the scored items. The ranks of both sides are compared.
2. **Training step** (forward, backward, AdamW step). *Before*: the history's items and the
   targets + negatives were encoded in two passes, so an item on both sides (with tiled
   windows, nearly every target) was encoded twice, with two dropout draws. *After*: one pass
   over every distinct item of the step. Items encoded per step and seconds per step; the
   losses of both sides are compared in eval mode (no dropout, same negatives).

"Before" is reproduced by the model's own pieces (``ItemTower.eval_lookup = False`` plus a
dropped table before every batch; the old two-pass loss, copied below), so both sides share
everything else. Prints one table and writes ``benchmarks/results/hllm_eval_cache.json``.

Usage::

    python benchmarks/hllm_eval_cache.py [--threads 1] [--train-steps 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "hllm_eval_cache.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=6, help="training batches timed per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating before/after rounds (median taken)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    from recsys import SeqDataModule
    from recsys.llm.templates import render_items
    from recsys_hllm import HLLM

    torch.manual_seed(args.seed)
    data = SeqDataModule("ml-100k", max_len=50, batch_size=64, train_stride=25, eval_batch_size=256,
                         train_windows="tiled")
    data.setup("fit")
    model = HLLM(num_items=len(data.catalog), item_llm="all-minilm-l6-v2", item_template="default",
                 item_pooling="mean", item_max_length=24, item_trainable_layers=1, user_llm="random-llama",
                 user_layers=2, user_heads=6, user_intermediate=1536, max_len=50, num_negatives=128, lr=3e-4)
    items = model.items
    items.set_catalog(render_items(data.catalog, "default"))
    rows_encoded = [0]
    items.encoder.transformer.register_forward_hook(lambda mod, a, kw, out: rows_encoded.__setitem__(
        0, rows_encoded[0] + (kw.get("input_ids") if kw.get("input_ids") is not None else kw["inputs_embeds"]).shape[0]),
        with_kwargs=True)
    start = time.perf_counter()
    items._frozen_states()  # built once per run by either side; not part of the comparison
    cache_s = time.perf_counter() - start
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    val_batches = list(data.val_dataloader())
    train_batches = [b for _, b in zip(range(args.train_steps), data.train_dataloader())]

    # ---- 1. evaluation ----------------------------------------------------------------
    def evaluate(before: bool) -> dict:
        model.load_state_dict(initial)
        model.eval()
        items.eval_lookup = not before
        items.invalidate()  # what the model does at the start of every evaluation epoch
        encodes, rows_encoded[0] = items.catalog_encodes, 0
        ranks = []
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in val_batches:
                if before:
                    items.invalidate()  # the old forward dropped the table on every call
                ranks.append(model.rank(batch))
        seconds = time.perf_counter() - start
        items.eval_lookup = True
        return {"seconds": seconds, "catalog_encodes": items.catalog_encodes - encodes,
                "items_encoded": rows_encoded[0], "ranks": torch.cat(ranks)}

    # ---- 2. training steps ------------------------------------------------------------
    def legacy_loss(batch, candidates):
        """The loss before this change: history, then targets + negatives, in two passes."""
        user, targets = model._positions(batch)  # encodes the history's items
        user = F.normalize(user.float(), dim=-1)
        vectors = F.normalize(items(torch.cat([targets, candidates])).float(), dim=-1)  # encodes them again
        positive, negative = vectors[: len(targets)], vectors[len(targets):]
        scale = model._scale()
        pos_logit = (user * positive).sum(-1, keepdim=True) * scale
        neg_logits = (user @ negative.T * scale).masked_fill(candidates[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logits], 1)
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))

    negatives = [torch.randint(1, model.num_items + 1, (128,)) for _ in train_batches]
    model.log = lambda *a, **k: None

    def loss_of(before: bool, i: int, batch):
        if before:
            return legacy_loss(batch, negatives[i])
        model.negatives = lambda device: negatives[i]
        try:
            return model.loss(batch)
        finally:
            del model.negatives

    def train(before: bool) -> dict:
        model.load_state_dict(initial)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
        seconds, encoded = [], []
        for i, batch in enumerate(train_batches):
            rows_encoded[0] = 0
            start = time.perf_counter()
            loss = loss_of(before, i, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - start)
            encoded.append(rows_encoded[0])
        return {"seconds_per_step": statistics.mean(seconds), "items_encoded_per_step": statistics.mean(encoded)}

    # The two losses agree when there is no dropout (eval mode) and the negatives are the same.
    model.load_state_dict(initial)
    model.eval()
    loss_diff = max(abs(float(loss_of(True, i, b).detach()) - float(loss_of(False, i, b).detach()))
                    for i, b in enumerate(train_batches))
    distinct = statistics.mean(len(torch.cat([b.history.flatten(), b.labels[b.labels != 0], negatives[i]]).unique())
                               for i, b in enumerate(train_batches))
    history_distinct = statistics.mean(len(b.history.unique()) for b in train_batches)

    evals = {True: [], False: []}
    trains = {True: [], False: []}
    for _ in range(args.rounds):
        for before in (True, False):
            evals[before].append(evaluate(before))
            trains[before].append(train(before))
    same_ranks = all(torch.equal(evals[True][0]["ranks"], e["ranks"]) for e in evals[True] + evals[False])
    rank_diff = int((evals[True][0]["ranks"] - evals[False][0]["ranks"]).abs().max())

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    side = {}
    for before, name in ((True, "before"), (False, "after")):
        side[name] = {
            "eval_epoch_s": med(evals[before], "seconds"),
            "eval_catalog_encodes": evals[before][0]["catalog_encodes"],
            "eval_items_encoded": evals[before][0]["items_encoded"],
            "train_step_s": med(trains[before], "seconds_per_step"),
            "train_items_encoded_per_step": med(trains[before], "items_encoded_per_step"),
        }
    b, a = side["before"], side["after"]
    result = {
        "dataset": "ml-100k", "catalog_items": len(data.catalog), "val_windows": int(sum(len(x.target) for x in val_batches)),
        "val_batches": len(val_batches), "train_steps": len(train_batches), "rounds": args.rounds,
        "threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
        "frozen_layer_cache_s": cache_s, **side,
        "eval_speedup": b["eval_epoch_s"] / a["eval_epoch_s"],
        "train_step_speedup": b["train_step_s"] / a["train_step_s"],
        "train_encode_ratio": b["train_items_encoded_per_step"] / a["train_items_encoded_per_step"],
        "distinct_items_per_step": distinct, "distinct_history_items_per_step": history_distinct,
        "same_ranks_before_after": same_ranks, "max_rank_difference": rank_diff,
        "max_loss_difference_eval_mode": loss_diff,
        "command": f"python benchmarks/hllm_eval_cache.py --threads {args.threads} --train-steps {args.train_steps} "
                   f"--rounds {args.rounds}",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"\nHLLM on ML-100k ({len(data.catalog)} items), {args.threads} thread(s), median of {args.rounds} rounds\n")
    print(f"{'':<44} {'before':>10} {'after':>10} {'ratio':>8}")
    print(f"{'validation epoch (' + str(result['val_windows']) + ' windows), s':<44} {b['eval_epoch_s']:>10.2f} "
          f"{a['eval_epoch_s']:>10.2f} {result['eval_speedup']:>7.2f}x")
    print(f"{'  catalog encodes per epoch':<44} {b['eval_catalog_encodes']:>10} {a['eval_catalog_encodes']:>10} "
          f"{b['eval_catalog_encodes'] / a['eval_catalog_encodes']:>7.2f}x")
    print(f"{'  items encoded per epoch':<44} {b['eval_items_encoded']:>10} {a['eval_items_encoded']:>10} "
          f"{b['eval_items_encoded'] / a['eval_items_encoded']:>7.2f}x")
    print(f"{'training step (64 windows), s':<44} {b['train_step_s']:>10.2f} {a['train_step_s']:>10.2f} "
          f"{result['train_step_speedup']:>7.2f}x")
    print(f"{'  items encoded per step':<44} {b['train_items_encoded_per_step']:>10.0f} "
          f"{a['train_items_encoded_per_step']:>10.0f} {result['train_encode_ratio']:>7.2f}x")
    print(f"\nsame ranks before/after: {same_ranks} (max difference {rank_diff}); "
          f"max loss difference in eval mode: {loss_diff:.2e}; frozen-layer cache built once in {cache_s:.1f} s")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
