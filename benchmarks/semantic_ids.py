#!/usr/bin/env python3
"""Semantic IDs (recsys-semantic-ids): LC-Rec-style generators and TIGER against SASRec.

Prints one table per dataset and writes ``benchmarks/results/semantic_ids.json``. Rows:

- SASRec: the engine's baseline, the checkpoint trained by ``benchmarks/hllm.py`` (same split),
  re-tested here on the same evaluation users as the other rows.
- LC-Rec seqrec: ``SemanticIDGenerator`` on RQ-VAE codes, sequential prediction only.
- LC-Rec + alignment: the same with item2index, index2item and the fusion tasks.
- LC-Rec random IDs: the seqrec row with random code tuples of the same shape.
- TIGER: a decoder trained from scratch on code sequences only (code-token vocabulary).

The item index is made first per dataset with ``recsys fit`` + ``recsys predict`` on
``plugins/recsys-semantic-ids/configs/<dataset>/rqvae.yaml`` (collision rates are read from the codes file).

Every generator row is three processes: ``recsys fit`` (training, with validation by beam
search on the first ``--val-users`` users), then ``recsys test`` of the best validation
checkpoint twice: ``--model.ranking=beam`` (20 beams constrained by the item trie) and
``--model.ranking=exact`` (every item's teacher-forced log-probability). Decode seconds are
the wall time of each test process. Nothing is tuned on test.

CPU budget decisions, made before any result was seen, the same for every generator row:
the LM is a random 2-layer Llama (d=128, 4 heads) with GPT-2's tokenizer (the SmolLM2 row of
methods.md is too slow on this shared 2-core CPU; ``plugins/recsys-semantic-ids/configs/ml-100k/semantic-ids-smollm2.yaml``
runs it); the training budgets of :func:`generator_rows`;
validation on the first ``--val-users`` and test on the first ``--test-users`` users (user-index
order) of each dataset, SASRec re-tested on the same users.

Usage::

    python benchmarks/semantic_ids.py --datasets ml-100k amazon-scientific --jobs 2

Re-testing the finished fits on more users (beam ranking only), into a second results file::

    python benchmarks/semantic_ids.py --datasets ml-100k --test-users 0 --rankings beam --reuse-fit \
        --results benchmarks/results/semantic_ids_more_users.json
    python benchmarks/semantic_ids.py --datasets amazon-scientific --test-users 1000 --rankings beam \
        --reuse-fit --results benchmarks/results/semantic_ids_more_users.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from epoch_timer import CALLBACK, with_benchmarks_on_path  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "semantic_ids.json"

DATA = {
    "ml-100k": {"path": "ml-100k", "config": "plugins/recsys-semantic-ids/configs/ml-100k", "sasrec": "runs/bench-hllm/ml-100k/sasrec"},
    "amazon-scientific": {"path": str(ROOT / "data" / "amazon-scientific"), "config": "plugins/recsys-semantic-ids/configs/amazon-scientific",
                          "sasrec": "runs/bench-hllm/amazon-scientific/sasrec"},
}

EVAL_BATCH = 100


def generator_rows(args) -> dict[str, list[str]]:
    """Each row's model and training budget. LC-Rec rows see one instruction sample per target
    (``--lcrec-batches`` batches of 32); TIGER trains on whole windows (every item a target, as
    SASRec) for ``--tiger-epochs`` full epochs."""
    lcrec = ["--model=SemanticIDGenerator", "--trainer.max_epochs=1", f"--trainer.limit_train_batches={args.lcrec_batches}"]
    tiger = ["--model=TIGER", f"--trainer.max_epochs={args.tiger_epochs}"]
    return {  # cheapest and most informative first
        "TIGER": tiger,
        "TIGER random IDs": [*tiger, "--model.random_ids=true"],
        "LC-Rec seqrec": lcrec,
        "LC-Rec random IDs": [*lcrec, "--model.random_ids=true"],
        "LC-Rec + alignment": [*lcrec, "--model.tasks=[seqrec,item2index,index2item,fusion]", "--model.align_samples=8"],
    }


COMMON_MODEL = ["--model.backbone=tiny-llama", "--model.decoder_layers=2", "--model.decoder_hidden=128",
                "--model.decoder_heads=4", "--model.decoder_intermediate=512", "--model.history_len=20",
                "--model.num_beams=20", "--model.lr=0.001", "--model.ks=[5,10]", "--model.metrics=[hit,ndcg]"]


def env() -> dict:
    return with_benchmarks_on_path(dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore"))


def run(cmd: list[str], log: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "recsys.cli", *cmd], cwd=ROOT, env=env(), capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ recsys {' '.join(cmd)}\n{proc.stdout}\n--- stderr ---\n{proc.stderr[-20000:]}\n")
    return proc, seconds


def metrics_of(root: Path) -> dict[str, float]:
    """Last logged value of every metric in the newest run under ``root``."""
    files = sorted(root.glob("lightning_logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not files:
        return {}
    values: dict[str, float] = {}
    with open(files[-1]) as f:
        for rec in csv.DictReader(f):
            for key, value in rec.items():
                if value not in ("", None) and "/" in key:
                    values[key] = float(value)
    return values


def train_seconds(root: Path) -> float | None:
    files = sorted(root.glob("lightning_logs/version_*/metrics.csv"))
    total = 0.0
    for file in files[:1]:
        with open(file) as f:
            total += sum(float(r["time/train_epoch_s"]) for r in csv.DictReader(f) if r.get("time/train_epoch_s"))
    return total or None


def make_codes(dataset: str) -> dict:
    """The dataset's item index: ``plugins/recsys-semantic-ids/configs/<dataset>/rqvae.yaml`` trained with ``recsys fit`` and
    written by ``recsys predict`` to ``runs/<dataset>/rqvae/codes.json`` (each step skipped when
    its output exists). Returns the codes file's stats and the RQ-VAE's training seconds."""
    d = DATA[dataset]
    root = ROOT / "runs" / dataset / "rqvae"
    config = f"{d['config']}/rqvae.yaml"
    codes = root / "codes.json"
    if not (root / "checkpoints" / "best.ckpt").exists():
        proc, _ = run(["fit", f"--config={config}", "--trainer.enable_progress_bar=false"], root / "log.txt")
        if proc.returncode:
            raise RuntimeError(f"RQ-VAE fit failed on {dataset}: see {root / 'log.txt'}")
    if not codes.exists():
        proc, _ = run(["predict", f"--config={config}", f"--ckpt_path={root}/checkpoints/best.ckpt",
                       f"--model.codes_path={codes}", f"--trainer.default_root_dir={root}/predict",
                       "--trainer.enable_progress_bar=false"], root / "log.txt")
        if proc.returncode:
            raise RuntimeError(f"RQ-VAE predict failed on {dataset}: see {root / 'log.txt'}")
    payload = json.loads(codes.read_text())
    stats = dict(payload["stats"], levels=payload["levels"], codes=str(codes.relative_to(ROOT)))
    # Training time: from the run's first file (hparams) to its last checkpoint.
    run_dir = min(root.glob("lightning_logs/version_*"), key=lambda p: int(p.name.split("_")[1]))
    stats["rqvae_fit_s"] = (root / "checkpoints" / "last.ckpt").stat().st_mtime - (run_dir / "hparams.yaml").stat().st_mtime
    return stats


def generator_row(dataset: str, name: str, extra: list[str], codes: Path, out: Path, args) -> dict:
    d = DATA[dataset]
    root = out / dataset / name.lower().replace(" ", "-").replace("+", "plus")
    log = root / "log.txt"
    data = ["--data=SeqDataModule", f"--data.path={d['path']}", "--data.max_len=20", "--data.batch_size=32",
            f"--data.eval_batch_size={EVAL_BATCH}"]
    model = [*extra, f"--model.codes_path={codes}", *COMMON_MODEL]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    row = {"dataset": dataset, "model": name, "codes": str(codes), "test_users": args.test_users or "all"}
    best = sorted(root.glob("lightning_logs/version_*/checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if args.reuse_fit and best:  # re-test a finished fit (e.g. on more users): its training numbers stand
        row.update(train_s=train_seconds(root), reused_fit=str(best[-1].relative_to(ROOT)),
                   **{"val/ndcg@10": metrics_of(root).get("val/ndcg@10")})
        return test_rows(row, root, model, data, quiet, best[-1], log, args)
    proc, fit_s = run(["fit", *model, *data, *quiet, f"--seed_everything={args.seed}",
                       f"--trainer.limit_val_batches={args.val_users // EVAL_BATCH}",
                       CALLBACK, "--trainer.log_every_n_steps=20",
                       f"--trainer.default_root_dir={root}", "--test_after_fit=false"], log)
    row.update(fit_s=fit_s, train_s=train_seconds(root), returncode=proc.returncode)
    if proc.returncode:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "fit failed"
        return row
    best = sorted(root.glob("lightning_logs/version_*/checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    row["val/ndcg@10"] = metrics_of(root).get("val/ndcg@10")
    return test_rows(row, root, model, data, quiet, best[-1], log, args)


def test_limit(args) -> list[str]:
    """The test-user limit as a trainer flag (none: every evaluated user)."""
    return [f"--trainer.limit_test_batches={args.test_users // EVAL_BATCH}"] if args.test_users else []


def test_dir(root: Path, ranking: str, args) -> Path:
    """Where a test run logs; tests on other user counts than the first 100 keep their own folder."""
    return root / (f"test-{ranking}" if args.test_users == 100 else f"test-{ranking}-{args.test_users or 'all'}")


def test_rows(row: dict, root: Path, model: list[str], data: list[str], quiet: list[str], ckpt: Path, log: Path,
              args) -> dict:
    """``recsys test`` of ``ckpt`` once per ranking in ``args.rankings``; metrics added to ``row``."""
    for ranking in args.rankings:
        out = test_dir(root, ranking, args)
        proc, seconds = run(["test", *model, *data, *quiet, f"--model.ranking={ranking}", f"--ckpt_path={ckpt}",
                             *test_limit(args), f"--trainer.default_root_dir={out}"], log)
        if proc.returncode:
            row["error"] = f"test {ranking}: " + (proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
            return row
        values = metrics_of(out)
        row[f"{ranking}_s"] = seconds
        for key in ("hit@5", "hit@10", "ndcg@5", "ndcg@10"):
            row[f"{ranking}/{key}"] = values.get(f"test/{key}")
        if ranking == "beam":
            row["valid_rate"] = values.get("test/valid_rate")
    return row


def sasrec_row(dataset: str, out: Path, args) -> dict:
    d = DATA[dataset]
    source = ROOT / d["sasrec"] / "lightning_logs" / "version_0"
    best = sorted((source / "checkpoints").glob("best-*.ckpt"))
    row = {"dataset": dataset, "model": "SASRec", "checkpoint": str(best[-1]) if best else None}
    if not best:
        row["error"] = f"no SASRec checkpoint under {source} (run benchmarks/hllm.py first)"
        return row
    root = test_dir(out / dataset / "sasrec", "exact", args) if args.test_users != 100 else out / dataset / "sasrec"
    row["test_users"] = args.test_users or "all"
    proc, seconds = run(["test", f"--config={source / 'config.yaml'}", f"--ckpt_path={best[-1]}",
                         f"--data.eval_batch_size={EVAL_BATCH}", *test_limit(args),
                         f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
                         "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={root}"], root / "log.txt")
    if proc.returncode:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        return row
    values = metrics_of(root)
    row["exact_s"] = seconds
    for key in ("hit@5", "hit@10", "ndcg@5", "ndcg@10"):
        row[f"exact/{key}"] = values.get(f"test/{key}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--only", nargs="*", help="run only these rows (names as in the table)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--lcrec-batches", type=int, default=100, help="training batches (32 samples) of LC-Rec rows")
    parser.add_argument("--tiger-epochs", type=int, default=2)
    parser.add_argument("--val-users", type=int, default=100)
    parser.add_argument("--test-users", type=int, default=100, help="the first N users (a multiple of 100); 0 = all")
    parser.add_argument("--rankings", nargs="+", default=["beam", "exact"], choices=["beam", "exact"])
    parser.add_argument("--reuse-fit", action="store_true",
                        help="re-test rows whose fit already finished under --out instead of training them again")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-semantic-ids")
    parser.add_argument("--skip-done", action="store_true", help="keep rows of the JSON file that have no error")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "semantic_ids.json", help="the JSON file (rows merged by dataset and model)")
    parser.add_argument("--merge", type=Path, nargs="*", help="only merge the rows of these JSON files into --results")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: rebuild the rows from the run directories under --out")
    args = parser.parse_args()
    global RESULTS
    RESULTS = args.results
    if args.merge:
        rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
        settings = json.loads(args.merge[0].read_text())["settings"]
        for other in args.merge:
            rows = merge(rows, json.loads(other.read_text())["rows"])
        print_table(write(rows, settings), settings)
        return
    previous = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    done = {(r["dataset"], r["model"]) for r in previous if "error" not in r} if args.skip_done else set()
    results = [r for r in previous if (r["dataset"], r["model"]) in done]
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "only", "skip_done", "datasets", "results", "merge",
                                                                 "collect", "reuse_fit")}
    if args.collect:
        rows = [row for dataset in args.datasets for row in collect(dataset, args)]
        print_table(write(rows, settings), settings)
        return

    with ThreadPoolExecutor(max(1, len(args.datasets))) as pool:  # the two indexes in parallel
        codes = dict(zip(args.datasets, pool.map(make_codes, args.datasets)))
    tasks = []
    for dataset in args.datasets:
        for name, extra in generator_rows(args).items():
            if (dataset, name) not in done and (not args.only or name in args.only):
                tasks.append((dataset, name, extra))
        if (dataset, "SASRec") not in done and (not args.only or "SASRec" in args.only):
            tasks.append((dataset, "SASRec", None))

    def one(task):
        dataset, name, extra = task
        if extra is None:
            return sasrec_row(dataset, args.out, args)
        return generator_row(dataset, name, extra, ROOT / codes[dataset]["codes"], args.out, args)

    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(one, tasks):
            row["index"] = codes[row["dataset"]]
            results.append(row)
            print(f"done: {row['dataset']:<18} {row['model']:<20} {'ERROR ' + row['error'] if 'error' in row else ''}",
                  flush=True)
            write(results, settings)  # after every run: an interrupted benchmark keeps what finished
    print_table(write(results, settings), settings)
    print(f"\nwrote {RESULTS}")


def _duration(run: Path) -> float | None:
    """Seconds from a run's start (its hparams.yaml) to its last metrics (without process start-up)."""
    files = sorted(run.glob("lightning_logs/version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not files or not (files[-1] / "metrics.csv").exists():
        return None
    return (files[-1] / "metrics.csv").stat().st_mtime - (files[-1] / "hparams.yaml").stat().st_mtime


def collect(dataset: str, args) -> list[dict]:
    """Rows rebuilt from finished run directories; decode seconds are test-run durations."""
    index = make_codes(dataset)
    rows = []
    for name in [*generator_rows(args), "SASRec"]:
        root = args.out / dataset / name.lower().replace(" ", "-").replace("+", "plus")
        row = {"dataset": dataset, "model": name, "index": index, "collected": True}
        if name == "SASRec":
            values = metrics_of(root)
            if not values:
                continue
            row["exact_s"] = _duration(root)
            row.update({f"exact/{k}": values.get(f"test/{k}") for k in ("hit@5", "hit@10", "ndcg@5", "ndcg@10")})
            rows.append(row)
            continue
        if not (root / "test-exact").exists() or not metrics_of(root / "test-exact"):
            continue
        row.update(train_s=train_seconds(root), **{"val/ndcg@10": metrics_of(root).get("val/ndcg@10")})
        for ranking in ("beam", "exact"):
            values = metrics_of(root / f"test-{ranking}")
            row[f"{ranking}_s"] = _duration(root / f"test-{ranking}")
            row.update({f"{ranking}/{k}": values.get(f"test/{k}") for k in ("hit@5", "hit@10", "ndcg@5", "ndcg@10")})
            if ranking == "beam":
                row["valid_rate"] = values.get("test/valid_rate")
        rows.append(row)
    return rows


def merge(rows: list[dict], new: list[dict]) -> list[dict]:
    """``rows`` with every (dataset, model) row of ``new`` replaced or added."""
    keys = {(r["dataset"], r["model"]) for r in new}
    return [r for r in rows if (r["dataset"], r["model"]) not in keys] + new


def write(results: list[dict], settings: dict) -> list[dict]:
    """Merge ``results`` into the JSON file (other datasets' and rows' results are kept)."""
    if RESULTS.exists():
        results = merge(json.loads(RESULTS.read_text())["rows"], results)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": settings, "eval_batch": EVAL_BATCH, "threads_per_run": 1,
                                   "rows": results}, indent=2))
    return results


def print_table(rows: list[dict], settings: dict) -> None:
    def fmt(value, spec=".4f"):
        return "-" if value is None else format(value, spec)

    users = f"first {settings['test_users']} users" if settings["test_users"] else "all users"
    for dataset in [d for d in DATA if any(r["dataset"] == d for r in rows)]:
        index = next(r["index"] for r in rows if r["dataset"] == dataset)
        print(f"\n{dataset}: loo, history masked, {users}; index levels "
              f"{index['levels']}, collision rate {index['collision_rate_before']:.4f} before resolution, "
              f"{index['collision_rate_after']:.4f} after\n")
        print(f"{'model':<20} {'beam h@5':>8} {'h@10':>7} {'n@5':>7} {'n@10':>7} | {'exact h@5':>9} {'h@10':>7} "
              f"{'n@5':>7} {'n@10':>7} | {'valid':>6} {'train s':>8} {'beam s':>7} {'exact s':>8}")
        for r in [r for r in rows if r["dataset"] == dataset]:
            print(f"{r['model']:<20} {fmt(r.get('beam/hit@5')):>8} {fmt(r.get('beam/hit@10')):>7} "
                  f"{fmt(r.get('beam/ndcg@5')):>7} {fmt(r.get('beam/ndcg@10')):>7} | {fmt(r.get('exact/hit@5')):>9} "
                  f"{fmt(r.get('exact/hit@10')):>7} {fmt(r.get('exact/ndcg@5')):>7} {fmt(r.get('exact/ndcg@10')):>7} | "
                  f"{fmt(r.get('valid_rate'), '.3f'):>6} {fmt(r.get('train_s'), '.0f'):>8} "
                  f"{fmt(r.get('beam_s'), '.0f'):>7} {fmt(r.get('exact_s'), '.0f'):>8}"
                  + (f"  ERROR: {r['error']}" if "error" in r else ""))


if __name__ == "__main__":
    main()
