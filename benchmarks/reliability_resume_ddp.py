#!/usr/bin/env python3
"""Crash/resume and DDP against one uninterrupted single-process run (SASRec, ML-100k, ``loo``).

Rows (each ``recsys fit --config configs/ml-100k/sasrec.yaml`` in its own process, 1 thread per
process, ``--trainer.max_epochs`` = ``--epochs``; test metrics of the best validation checkpoint):

- ``single``: uninterrupted, one process;
- ``killed + resumed``: SIGKILLed in the middle of epoch ``epochs // 2`` (a callback kills its own
  process at batch 100), then ``recsys fit ... --ckpt_path last`` in the same root directory;
- ``ddp x2``: Lightning's ``ddp`` strategy on 2 CPU processes (gloo), 8 windows per process per
  step (the single run's 16 in total), so both see the same effective batch; the training
  trajectory differs (different batch composition), hence a tolerance rather than equality;
- ``ddp x2 test of single's checkpoint``: ``recsys test`` of the single run's best checkpoint on 2
  processes: must equal the single run's test metrics exactly and count every user once.

Prints a table and writes ``benchmarks/results/reliability_resume_ddp.json``.

Usage::

    python benchmarks/reliability_resume_ddp.py --epochs 6
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability_resume_ddp.json"
RUNS = ROOT / "runs" / "bench-reliability"
RECSYS = [str(Path(sys.executable).with_name("recsys"))]
CONFIG = str(ROOT / "configs" / "ml-100k" / "sasrec.yaml")


def recsys(subcommand: str, root: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    args = [subcommand, "--config", CONFIG, "--trainer.default_root_dir", str(root),
            "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(root),
            "--trainer.enable_progress_bar", "false", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))  # tests/crash_callback.py
    start = time.perf_counter()
    done = subprocess.run(RECSYS + args, capture_output=True, text=True, env=env)
    return done, time.perf_counter() - start


def test_metrics(root: Path) -> dict[str, float]:
    newest = max(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    with open(newest) as f:
        rows = [r for r in csv.DictReader(f) if r.get("test/ndcg@10")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v}


def checked(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    shutil.rmtree(RUNS, ignore_errors=True)
    epochs = ["--trainer.max_epochs", str(args.epochs)]
    rows = {}

    done, seconds = recsys("fit", RUNS / "single", *epochs)
    checked(done, "single")
    rows["single"] = {**test_metrics(RUNS / "single"), "seconds": seconds}

    crash_epoch = args.epochs // 2
    killed, killed_seconds = recsys("fit", RUNS / "resumed", *epochs, "--trainer.callbacks+=crash_callback.KillAt",
                                    f"--trainer.callbacks.epoch={crash_epoch}", "--trainer.callbacks.batch=100")
    if killed.returncode != -signal.SIGKILL:
        raise SystemExit(f"the crashing run was not killed ({killed.returncode}):\n{killed.stderr[-4000:]}")
    done, seconds = recsys("fit", RUNS / "resumed", *epochs, "--ckpt_path", "last")
    checked(done, "resumed")
    rows["killed + resumed"] = {**test_metrics(RUNS / "resumed"), "seconds": killed_seconds + seconds}

    done, seconds = recsys("fit", RUNS / "ddp", *epochs, "--trainer.strategy", "ddp", "--trainer.devices", "2",
                           "--trainer.accelerator", "cpu", "--data.batch_size", "8")
    checked(done, "ddp")
    rows["ddp x2"] = {**test_metrics(RUNS / "ddp"), "seconds": seconds}

    best = sorted((RUNS / "single").rglob("best-*.ckpt"))[-1]
    done, seconds = recsys("test", RUNS / "ddp-test", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                           "--trainer.accelerator", "cpu", "--ckpt_path", str(best))
    checked(done, "ddp test")
    rows["ddp x2 test of single's checkpoint"] = {**test_metrics(RUNS / "ddp-test"), "seconds": seconds}

    reference = rows["single"]
    columns = ["test/ndcg@10", "test/hit@10", "test/mrr@10", "test/windows", "seconds"]
    print(f"SASRec on ML-100k (loo), {args.epochs} epochs, 1 thread per process")
    print(f"{'run':38s}" + "".join(f"{c:>14s}" for c in columns) + f"{'Δ ndcg@10':>12s}")
    for name, row in rows.items():
        delta = row["test/ndcg@10"] - reference["test/ndcg@10"]
        print(f"{name:38s}" + "".join(f"{row.get(c, float('nan')):14.4f}" for c in columns) + f"{delta:+12.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"epochs": args.epochs, "crash_epoch": crash_epoch, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
