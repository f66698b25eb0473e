#!/usr/bin/env python3
"""HLLM and Lite-LLM4Rec against SASRec and Pop, same harness and split (``loo``, history masked).

Prints one table per dataset and writes ``benchmarks/results/hllm.json``. Rows:

- SASRec, Pop: the engine's baselines (SASRec as ``configs/ml-100k/sasrec.yaml``).
- HLLM: pretrained all-MiniLM-L6-v2 item LLM, top layer trainable (bottom layers cached).
- HLLM, frozen item LLM: the catalog is encoded once; only the user LLM trains.
- HLLM, random-init item LLM: the same MiniLM shape with random weights, top layer trainable.
- HLLM, random-init frozen: the "no prior" ablation of the frozen row.
- Lite-LLM4Rec: the frozen pretrained item LLM with an item-projection head (full CE).
- Cold items: the same split with 20% of items held out of training (``data.cold_items``);
  ``cold hit@10`` is hit@10 over test targets that are cold items.

Every run is ``recsys fit`` in its own process (1 thread; ``--jobs`` at a time), early stopping on
validation NDCG@10; test metrics are of the best validation checkpoint. Nothing is tuned on test.

CPU budget decisions (made before any result was seen): the item text is the ``default``
template (title, year, genres; for Amazon title, categories, brand) cut at 24 tokens, because
HLLM's "Compress the following sentence into embedding: " prompt is written for decoder LLMs
and would add ~10 tokens per item to a sentence encoder; 128 shared negatives; one trainable
MiniLM layer; 64 windows per batch for the HLLM rows (items shared by windows of a batch are
encoded once, so larger batches cost fewer encodes per target); at most ``--max-epochs``
epochs for the trainable rows and three times that for the frozen ones.

Usage::

    python benchmarks/hllm.py --datasets ml-100k amazon-scientific --jobs 2
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
RESULTS = ROOT / "benchmarks" / "results" / "hllm.json"

DATA = {
    "ml-100k": {"path": "ml-100k", "max_len": 50, "stride": 25},
    "amazon-scientific": {"path": str(ROOT / "data" / "amazon-scientific"), "max_len": 20, "stride": 20},
}

HLLM_COMMON = ["--data.batch_size=64", "--model.item_llm=all-minilm-l6-v2", "--model.item_template=default", "--model.item_pooling=mean",
               "--model.item_max_length=24", "--model.user_layers=2", "--model.user_heads=6",
               "--model.user_intermediate=1536", "--model.lr=0.0003"]


def variants(max_epochs: int) -> dict[str, list[str]]:
    hllm = ["--model=HLLM", *HLLM_COMMON, "--model.num_negatives=128"]
    return {
        "Pop": ["--model=Pop", "--trainer.max_epochs=1"],
        "SASRec": ["--model=SASRec", "--model.d_model=64", "--model.num_layers=2", "--model.num_heads=2",
                   "--model.dropout=0.5", "--model.attn_dropout=0.5", "--model.lr=0.001", "--trainer.max_epochs=200"],
        "HLLM": [*hllm, "--model.item_trainable_layers=1", f"--trainer.max_epochs={max_epochs}"],
        "HLLM frozen item LLM": [*hllm, "--model.item_trainable_layers=0", "--model.num_negatives=0",
                                 f"--trainer.max_epochs={3 * max_epochs}"],
        "HLLM random-init item LLM": [*hllm, "--model.item_trainable_layers=1", "--model.item_pretrained=false",
                                      f"--trainer.max_epochs={max_epochs}"],
        "HLLM random-init frozen": [*hllm, "--model.item_trainable_layers=0", "--model.num_negatives=0",
                                    "--model.item_pretrained=false", f"--trainer.max_epochs={3 * max_epochs}"],
        "Lite-LLM4Rec": ["--model=LiteLLM4Rec", *HLLM_COMMON, "--model.item_trainable_layers=0",
                         f"--trainer.max_epochs={3 * max_epochs}"],
    }


#: Rough relative cost, so the longest runs start first and short ones fill the gaps.
COST = {"HLLM": 10, "HLLM random-init item LLM": 10, "SASRec": 2, "Pop": 0}


COLD = ["Pop", "SASRec", "HLLM frozen item LLM", "Lite-LLM4Rec"]


def run_one(dataset: str, name: str, args: list[str], cold: float, out_root: Path, seed: int) -> dict:
    d = DATA[dataset]
    root = run_dir(out_root, dataset, name, cold)
    batch = [] if any(a.startswith("--data.batch_size") for a in args) else ["--data.batch_size=16"]
    cmd = [sys.executable, "-m", "recsys.cli", "fit", "--data=SeqDataModule", *batch, *args, f"--data.path={d['path']}",
           f"--data.max_len={d['max_len']}", f"--data.train_stride={d['stride']}",
           "--data.eval_batch_size=256", f"--data.cold_items={cold}", f"--seed_everything={seed}",
           f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
           CALLBACK, "--trainer.log_every_n_steps=20"]
    if not any(a.startswith("--model=Pop") for a in args):
        cmd.append(f"--model.max_len={d['max_len']}")
    env = with_benchmarks_on_path(dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # failures are rows
    wall = time.perf_counter() - start
    root.mkdir(parents=True, exist_ok=True)
    (root / "stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr[-20000:])
    row = {"dataset": dataset, "model": name, "cold_items": cold, "wall_s": wall, "returncode": proc.returncode,
           "command": " ".join(cmd[2:])}
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        return row
    row.update(read_metrics(root))
    return row


def run_dir(out_root: Path, dataset: str, name: str, cold: float) -> Path:
    return out_root / dataset / (name.lower().replace(" ", "-") + (f"-cold{cold}" if cold else ""))


def read_metrics(root: Path) -> dict:
    """Test metrics and epoch times of the newest run under ``root`` ({} when it has none)."""
    metrics_files = sorted(root.glob("lightning_logs/version_*/metrics.csv"))
    if not metrics_files:
        return {}
    values: dict[str, list[float]] = {}
    with open(metrics_files[-1]) as f:
        for rec in csv.DictReader(f):
            for key, value in rec.items():
                if value not in ("", None) and "/" in key:
                    values.setdefault(key, []).append(float(value))
    row = {}
    for key in ("test/hit@10", "test/ndcg@10", "test/mrr@10", "test/cold/hit@10", "val/ndcg@10"):
        if key in values:
            row[key] = values[key][-1]
    if "time/train_epoch_s" in values:
        row["train_epoch_s"] = sum(values["time/train_epoch_s"]) / len(values["time/train_epoch_s"])
        row["epochs"] = len(values["time/train_epoch_s"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon-scientific"], choices=list(DATA))
    parser.add_argument("--only", nargs="*", help="run only these rows (names as in the table)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=5, help="epochs of the trainable-item-LLM rows (x3 frozen)")
    parser.add_argument("--cold", type=float, default=0.2, help="fraction of items held out for the cold rows; 0 = skip")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-hllm")
    parser.add_argument("--cold-models", nargs="*", default=COLD, help="rows also run with held-out items")
    parser.add_argument("--skip-done", action="store_true",
                        help="reuse finished runs under --out (their metrics are read back) instead of rerunning")
    args = parser.parse_args()
    rows_spec = variants(args.max_epochs)
    tasks = []
    for dataset in args.datasets:
        for name, extra in rows_spec.items():
            if not args.only or name in args.only:
                tasks.append((dataset, name, extra, 0.0))
        if args.cold:
            for name in args.cold_models:
                if not args.only or name in args.only:
                    tasks.append((dataset, name, rows_spec[name], args.cold))
    tasks.sort(key=lambda t: -COST.get(t[1], 3) * (5 if t[0] == "ml-100k" else 1))
    results = []
    if args.skip_done:
        for task in list(tasks):
            done = read_metrics(run_dir(args.out, task[0], task[1], task[3]))
            if "test/ndcg@10" in done:
                results.append({"dataset": task[0], "model": task[1], "cold_items": task[3], "reused": True, **done})
                tasks.remove(task)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, d, n, e, c, args.out, args.seed) for d, n, e, c in tasks]
        for f in futures:
            results.append(f.result())
            r = results[-1]
            print(f"done: {r['dataset']:<18} {r['model']:<28} cold={r['cold_items']} "
                  f"{'ERROR ' + r['error'] if 'error' in r else ''} ({r['wall_s']:.0f} s)", flush=True)
            write_results(results, args.jobs)  # after every run: an interrupted benchmark keeps what finished
    all_rows = write_results(results, args.jobs)
    print_table(all_rows)
    print(f"\nwrote {RESULTS}")


def write_results(results: list[dict], jobs: int) -> list[dict]:
    """Merge ``results`` into the JSON file (replacing rows of the same dataset, model and cold split)."""
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    fresh = {(r["dataset"], r["model"], r["cold_items"]) for r in results}
    rows = [r for r in previous["rows"] if (r["dataset"], r["model"], r["cold_items"]) not in fresh] + results
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "threads_per_run": 1, "jobs": jobs}, indent=2))
    return rows


def print_table(rows: list[dict]) -> None:
    def fmt(value, spec=".4f"):
        return "-" if value is None else format(value, spec)

    for dataset in sorted({r["dataset"] for r in rows}):
        print(f"\n{dataset} (loo, history masked; test metrics of the best validation checkpoint)\n")
        print(f"{'model':<28} {'hit@10':>7} {'ndcg@10':>8} {'mrr@10':>7} {'s/epoch':>8} {'epochs':>6} "
              f"{'cold hit@10 (20% items held out)':>34}")
        for r in [r for r in rows if r["dataset"] == dataset and not r["cold_items"]]:
            cold = next((c for c in rows if c["dataset"] == dataset and c["model"] == r["model"] and c["cold_items"]),
                        {})
            print(f"{r['model']:<28} {fmt(r.get('test/hit@10')):>7} {fmt(r.get('test/ndcg@10')):>8} "
                  f"{fmt(r.get('test/mrr@10')):>7} {fmt(r.get('train_epoch_s'), '.1f'):>8} "
                  f"{r.get('epochs', '-'):>6} {fmt(cold.get('test/cold/hit@10')):>34}"
                  + (f"  ERROR: {r['error']}" if "error" in r else ""))


if __name__ == "__main__":
    main()
