#!/usr/bin/env python3
"""BIGRec (recsys-grounding) against Pop and SASRec on ML-100k, one table.

Protocol: the engine's ``loo`` (validation target = second-to-last item, test target = last,
full ranking over all 1,682 items with the user's history masked). Every row is evaluated on
the same ``--eval-users`` users, drawn with ``--seed`` from all evaluated users; their
validation windows choose γ, their test windows give the table. Pop and SASRec are also given
over all 943 users for reference.

Rows:
- Pop; SASRec (``configs/ml-100k/sasrec.yaml``; the checkpoint of ``benchmarks/hllm.py`` is
  reused when present, else trained here).
- BIGRec, pretrained SmolLM2-135M-Instruct + LoRA (r 8, α 16, dropout 0.05, q/v), trained on N
  windows drawn with seed 0 (``FewShotSeqDataModule``), grounded with the base model's
  last-token states (L2, BIGRec), exact titles first.
- + popularity, + SASRec scores: D̃ = D̂ · (1 + w)^(−γ) on the same generations. γ is chosen on
  validation NDCG@10 (one γ for every K: the honest row), and per metric and K as BIGRec does
  (labelled "per-K γ, optimistic").
- The same with a randomly initialised LM of the same shape (``pretrained=False``), grounded
  with its own (random) base weights as BIGRec would; and its generations grounded with the
  pretrained base instead, which isolates step 1.
- MiniLM grounding of the pretrained generator's outputs (the robust variant of step 2).

Budget decisions (CPU: 2 shared cores, 1 thread per run), made before any result was seen and
applied to every BIGRec row alike: see ``--train-samples``, ``--history-items``, ``--beams``,
``--eval-users``, ``--epochs``; the values used are stored in the JSON and printed under the
table.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/grounding.py --skip-done
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "grounding.json"
SASREC_REUSE = ROOT / "runs" / "bench-hllm" / "ml-100k" / "sasrec"
KS = {"hit": (1, 5, 10), "ndcg": (5, 10)}
POP_GAMMAS = [float(g) for g in range(100)]  # BIGRec's adjust_pda.py grid
CF_GAMMAS = [round(0.01 * i, 2) for i in range(100)] + [float(g) for g in range(1, 100)]  # adjust_ci.py


def metrics(ranks: torch.Tensor) -> dict[str, float]:
    """The table's means over windows, from the engine's own metric functions."""
    from recsys.metrics import hit, ndcg

    return {f"{name}@{k}": float(fn(ranks, k).mean()) for name, fn in (("hit", hit), ("ndcg", ndcg)) for k in KS[name]}


def subset(batch, rows: torch.Tensor):
    return type(batch)(*[f[rows] if isinstance(f, torch.Tensor) else f for f in batch])


def eval_windows(data, stage: str, users: set[int]):
    """The ``stage`` windows of the sampled users, as one Batch (the engine's loader, filtered)."""
    loader = data.val_dataloader() if stage == "val" else data.test_dataloader()
    parts = []
    for batch in loader:
        keep = torch.tensor([int(u) in users for u in batch.user])
        if keep.any():
            parts.append(subset(batch, keep.nonzero()[:, 0]))
    fields = []
    for values in zip(*parts):
        if values[0] is None:
            fields.append(None)
        elif values[0].dim() == 2:  # left-padded (B, L): pad to the widest
            width = max(v.shape[1] for v in values)
            fields.append(torch.cat([torch.nn.functional.pad(v, (width - v.shape[1], 0)) for v in values]))
        else:
            fields.append(torch.cat(values))
    return type(parts[0])(*fields)


# ---- results file ------------------------------------------------------------------------


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": [], "runs": {}}


def save_results(results: dict) -> None:
    """Merge into the file under a lock (the pretrained and random groups may run as two processes)."""
    import fcntl

    RESULTS.parent.mkdir(exist_ok=True)
    lock_path = ROOT / "runs" / "grounding.lock"  # runs/ is not versioned
    lock_path.parent.mkdir(exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = load_results()
        # Only rows this process computed replace stored ones (another process may have
        # rewritten the others since this one read the file).
        merged = dict(stored, **{k: v for k, v in results.items() if k not in ("rows", "runs")})
        merged["rows"] = ([r for r in stored["rows"] if r["model"] not in OWN_ROWS]
                          + [r for r in results["rows"] if r["model"] in OWN_ROWS])
        merged["runs"] = dict(stored.get("runs", {}), **results.get("runs", {}))
        RESULTS.write_text(json.dumps(merged, indent=2))
        results.update(merged)


OWN_ROWS: set[str] = set()


def put_row(results: dict, row: dict) -> None:
    OWN_ROWS.add(row["model"])
    results["rows"] = [r for r in results["rows"] if r["model"] != row["model"]] + [row]
    save_results(results)


# ---- baselines ---------------------------------------------------------------------------


def sasrec_checkpoint(args) -> tuple[Path, float | None, str]:
    """A trained SASRec (configs/ml-100k/sasrec.yaml) and its training seconds (None when reused)."""
    for root in (args.out / "sasrec", SASREC_REUSE):
        found = sorted(root.glob("lightning_logs/version_*/checkpoints/best-*.ckpt"))
        if found:
            return found[-1], None, f"reused {found[-1].relative_to(ROOT)}"
    cmd = [sys.executable, "-m", "recsys.cli", "fit", "--config", str(ROOT / "configs" / "ml-100k" / "sasrec.yaml"),
           f"--trainer.default_root_dir={args.out / 'sasrec'}", "--trainer.enable_progress_bar=false"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    seconds = time.perf_counter() - start
    found = sorted((args.out / "sasrec").glob("lightning_logs/version_*/checkpoints/best-*.ckpt"))
    return found[-1], seconds, "trained here (configs/ml-100k/sasrec.yaml)"


@torch.no_grad()
def dense_rows(data, windows, sasrec_path, sasrec_seconds, note, results) -> None:
    """Pop and SASRec on the sampled users (and over every user, for reference)."""
    import recsys
    from recsys.models.pop import Pop

    pop = Pop(data.num_items)
    pop.popularity.copy_(torch.as_tensor(data.catalog.popularity, dtype=torch.float))  # what Pop.setup() reads
    sasrec = recsys.RecModule.load_from_checkpoint(sasrec_path)
    for name, model, train_s, about in (("Pop", pop, 0.0, "training popularity"),
                                        ("SASRec", sasrec, sasrec_seconds, note)):
        model.eval()
        row = {"model": name, "rows_of": "baseline", "train_s": train_s, "note": about}
        for stage in ("val", "test"):
            row[stage] = metrics(model.rank(windows[stage]).cpu())
        row["test_all_users"] = metrics(torch.cat([model.rank(b).cpu() for b in data.test_dataloader()]))
        put_row(results, row)


# ---- BIGRec -------------------------------------------------------------------------------


def train_bigrec(args, pretrained: bool, results: dict):
    """Fit BIGRec on N windows; returns the model (generations are cached in the results)."""
    import lightning.pytorch as pl

    from recsys_grounding import BIGRec, FewShotSeqDataModule

    pl.seed_everything(args.seed)
    data = FewShotSeqDataModule(path="ml-100k", max_len=50, train_samples=args.train_samples, sample_seed=args.seed,
                                min_history=args.history_items, batch_size=args.batch_size, eval_batch_size=64)
    model = BIGRec(data.num_items, backbone="smollm2-135m-instruct", pretrained=pretrained,
                   history_items=args.history_items, num_beams=args.beams, num_return_sequences=args.beams,
                   max_new_tokens=args.max_new_tokens, lr=args.lr, warmup_steps=args.warmup)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                         log_every_n_steps=1, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    train_s = time.perf_counter() - start
    # Keep the trained LoRA (only trainable weights are saved): other decodings of the same model
    # need no retraining, e.g. `recsys test --model.num_beams 4 --ckpt_path ...`.
    trainer.save_checkpoint(args.out / f"{'pretrained' if pretrained else 'random'}-N{args.train_samples}"
                                       f"-e{args.epochs}-seed{args.seed}.ckpt")
    model.set_catalog(data.catalog)
    return model.eval(), train_s


def generate(model, windows, batch_size: int, label: str) -> tuple[list[str], float]:
    from tqdm.auto import tqdm

    texts, start = [], time.perf_counter()
    history = windows.history
    for i in tqdm(range(0, len(history), batch_size), desc=f"generating ({label})", unit="batch"):
        texts += [t[0] if t else "" for t in model.generate(history[i:i + batch_size])]
    return texts, time.perf_counter() - start


def rank_with(grounder, distances, first, windows, weights, gamma) -> torch.Tensor:
    """Each window's target rank under the engine's rules, as BIGRec.rank() + recsys.metrics give
    it: the history excluded before reweighting (a repeated target's window is asked again with
    nothing excluded), exact title matches (``first``) ahead of all, the history masked except
    the target, ties pessimistic. rank() lists k + 1 items; scoring every item here gives the
    same ranks up to k, in one pass."""
    from recsys.metrics import dense_ranks, mask_seen

    repeat = (windows.seen == windows.target[:, None]).any(dim=1, keepdim=True)
    exclude = torch.where(repeat, torch.zeros_like(windows.seen), windows.seen)
    ids, scores = grounder.rank(distances, distances.shape[1] - 1, weights, gamma, exclude=exclude, first=first)
    dense = torch.full(distances.shape, float("-inf")).scatter_(1, ids, scores)
    return dense_ranks(mask_seen(dense, windows.seen, windows.target), windows.target, "pessimistic")


def grounded_rows(name, grounder, texts, windows, run, cf_scores, popularity, results, extra_note=""):
    """Rows for one (generator, grounder): plain, + popularity, + SASRec, with γ chosen on validation."""
    stages = [s for s in ("val", "test") if s in texts]
    dist = {s: grounder.distances(texts[s]) for s in stages}
    first = {s: grounder.exact_hits(texts[s]) for s in stages}
    base = {"rows_of": name, "train_s": run["train_s"], "generation_s": run["generation_s"],
            "generated_users": sum(len(texts[s]) for s in stages),
            "exact_match": float(grounder.exact_match(texts["test"]).float().mean()),
            "grounding_rate": float(grounder.grounded(dist["test"]).float().mean()), "note": extra_note}
    plain = {s: metrics(rank_with(grounder, dist[s], first[s], windows[s], None, 0.0)) for s in stages}
    put_row(results, {"model": name, **base, **plain, "gamma": 0.0})
    if "val" not in texts:
        return  # no validation generations: γ cannot be chosen
    for kind, weights, grid in (("popularity", {s: popularity for s in ("val", "test")}, POP_GAMMAS),
                                ("SASRec scores", cf_scores, CF_GAMMAS)):
        per_gamma = {s: [metrics(rank_with(grounder, dist[s], first[s], windows[s], weights[s], g)) for g in grid]
                     for s in ("val", "test")}
        # one γ for every K: best validation NDCG@10 (ties -> the smallest γ)
        best = int(np.argmax([m["ndcg@10"] for m in per_gamma["val"]]))
        put_row(results, {"model": f"{name} + {kind}", **base, "gamma": grid[best],
                          "val": per_gamma["val"][best], "test": per_gamma["test"][best],
                          "train_s": run["train_s"] + ((run.get("cf_train_s") or 0.0) if kind != "popularity" else 0.0)})
        # BIGRec's per-metric, per-K γ (optimistic: each cell picks its own γ on validation)
        cells, gammas = {}, {}
        for key in per_gamma["val"][0]:
            i = int(np.argmax([m[key] for m in per_gamma["val"]]))
            cells[key], gammas[key] = per_gamma["test"][i][key], grid[i]
        put_row(results, {"model": f"{name} + {kind} (per-K γ, optimistic)", **base, "test": cells,
                          "gamma": gammas, "train_s": run["train_s"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-users", type=int, default=200, help="users evaluated (same for every row)")
    parser.add_argument("--train-samples", type=int, default=1024, help="N few-shot training windows (0 = all)")
    parser.add_argument("--history-items", type=int, default=10, help="titles in the prompt (BIGRec: 10)")
    parser.add_argument("--beams", type=int, default=4, help="beam width (BIGRec: 4); 1 = greedy")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gen-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-val", action="store_true",
                        help="also generate validation windows with the random-init LM (for its reweighted rows)")
    parser.add_argument("--rows", nargs="*", default=["baselines", "pretrained", "random"],
                        help="which groups to run: baselines, pretrained, random")
    parser.add_argument("--speed-test", type=int, default=0,
                        help="only time generation of the untrained pretrained LM on this many users, then exit")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-grounding")
    parser.add_argument("--skip-done", action="store_true", help="reuse finished generations stored in the JSON")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    import recsys
    from recsys.plugins import load_plugins

    load_plugins()
    import recsys_grounding.plugin  # noqa: F401  (installed: loaded by its entry point)

    data = recsys.SeqDataModule(path="ml-100k", max_len=50, eval_batch_size=256)
    data.setup("fit")
    evaluated = sorted(int(u) for u in data.data.split.evaluated)
    users = set(np.random.default_rng(args.seed).choice(evaluated, size=min(args.eval_users, len(evaluated)),
                                                        replace=False).tolist())
    windows = {s: eval_windows(data, s, users) for s in ("val", "test")}
    results = load_results()
    settings = {k: v for k, v in vars(args).items() if k not in ("rows", "skip_done", "speed_test", "out")}
    if results.get("settings") and results["settings"] != settings and args.skip_done:
        print("note: settings differ from the stored run; stored generations are reused only where settings match")
    results["protocol"] = ("loo, history masked; %d users drawn with seed %d (same users for every row); "
                           "val windows choose gamma, test windows give the table" % (len(users), args.seed))

    if args.speed_test:
        from recsys_grounding import BIGRec

        model = BIGRec(data.num_items, history_items=args.history_items, num_beams=args.beams,
                       num_return_sequences=args.beams, max_new_tokens=args.max_new_tokens)
        model.set_catalog(data.catalog)
        sample = subset(windows["test"], torch.arange(min(args.speed_test, len(windows["test"].target))))
        texts, seconds = generate(model.eval(), sample, args.gen_batch_size, "speed test")
        print(f"{len(texts)} users: {seconds:.1f} s ({seconds / len(texts):.2f} s/user); e.g. {texts[:3]}")
        return

    sasrec_path, sasrec_s, note = sasrec_checkpoint(args)
    if "baselines" in args.rows:
        dense_rows(data, windows, sasrec_path, sasrec_s, note, results)
    sasrec = recsys.RecModule.load_from_checkpoint(sasrec_path).eval()
    with torch.no_grad():
        cf_scores = {s: sasrec.score(windows[s]).float() for s in ("val", "test")}
    popularity = torch.as_tensor(data.catalog.popularity, dtype=torch.float32).clone()
    popularity[0] = float("nan")

    runs = results.setdefault("runs", {})
    for group, pretrained in (("pretrained", True), ("random", False)):
        if group not in args.rows:
            continue
        key = f"{group}|{json.dumps(settings, sort_keys=True)}"
        run = runs.get(key) if args.skip_done else None
        model = None
        if run is None:
            model, train_s = train_bigrec(args, pretrained, results)
            run = {"train_s": train_s, "texts": {}, "generation_s": 0.0, "settings": settings}
            stages = ("val", "test") if pretrained or args.random_val else ("test",)
            for stage in stages:
                texts, seconds = generate(model, windows[stage], args.gen_batch_size, f"{group} {stage}")
                run["texts"][stage] = texts
                run["generation_s"] += seconds
            run["cf_train_s"] = sasrec_s
            runs[key] = run
            save_results(results)
        texts = run["texts"]
        label = ("SmolLM2" if pretrained else "random-init SmolLM2-shape LM") + f", N={args.train_samples}"
        print(f"{group}: e.g. {texts['test'][:5]}", flush=True)
        if model is None:
            from recsys_grounding import BIGRec

            model = BIGRec(data.num_items, pretrained=pretrained, history_items=args.history_items)
            if not pretrained:
                print("note: stored generations of the random LM need its own grounder weights; regrounding skipped")
                model = None
        smol_grounder = None
        if model is not None:
            model.set_catalog(data.catalog)
            grounded_rows(f"BIGRec ({label})", model.grounder, texts, windows, run, cf_scores, popularity, results,
                          "grounded with the generator's own base weights (last token, L2)")
        if pretrained:
            from recsys_grounding import EmbeddingGrounder

            mini = EmbeddingGrounder("all-minilm-l6-v2", pooling="mean", metric="l2").fit(data.catalog)
            grounded_rows(f"BIGRec ({label}), MiniLM grounding", mini, texts, windows, run, cf_scores, popularity,
                          results, "grounded with all-MiniLM-L6-v2 mean pooling (L2)")
        else:
            if smol_grounder is None:
                from recsys_grounding import EmbeddingGrounder

                smol_grounder = EmbeddingGrounder(
                    recsys.TextEncoder("smollm2-135m-instruct", pooling="last", max_length=64, trainable_layers=0),
                    metric="l2").fit(data.catalog)
            grounded_rows(f"BIGRec ({label}), pretrained-base grounding", smol_grounder, texts, windows, run,
                          cf_scores, popularity, results, "grounded with the pretrained SmolLM2 base (last token, L2)")
        del model
    results["settings"] = settings
    save_results(results)
    print_table(results)
    print(f"\nwrote {RESULTS}")


def print_table(results: dict) -> None:
    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    print(f"\nML-100k, {results.get('protocol', '')}\n")
    cols = ["hit@1", "hit@5", "hit@10", "ndcg@5", "ndcg@10"]
    print(f"{'model':<78} " + " ".join(f"{c:>7}" for c in cols) + f" {'exact':>6} {'ground':>6} {'train s':>8} "
          f"{'gen s':>7} gamma")
    for r in results["rows"]:
        test = r.get("test", {})
        print(f"{r['model']:<78} " + " ".join(f"{f(test.get(c)):>7}" for c in cols)
              + f" {f(r.get('exact_match'), '.3f'):>6} {f(r.get('grounding_rate'), '.3f'):>6}"
              f" {f(r.get('train_s'), '.0f'):>8} {f(r.get('generation_s'), '.0f'):>7} {r.get('gamma', '')}")
    for r in results["rows"]:
        if "test_all_users" in r:
            print(f"{r['model']} over all users: {r['test_all_users']}")
    print(f"settings: {results.get('settings')}")


if __name__ == "__main__":
    main()
