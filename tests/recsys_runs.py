"""Helpers for tests that run the ``recsys`` command in subprocesses (DDP, crash and resume)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.atomic import write_dataset

# Lightning's DDP launcher re-executes the command line for the other ranks: it must be the
# recsys command itself, not pytest.
RECSYS = ([str(Path(sys.executable).with_name("recsys"))] if Path(sys.executable).with_name("recsys").exists()
          else [sys.executable, "-m", "recsys.cli"])

SMALL_SASREC = ["--model", "SASRec", "--model.d_model", "16", "--model.num_layers", "1", "--model.num_heads", "1"]


def random_dataset(path: Path, users: int, items: int, lengths: tuple[int, int], seed: int) -> Path:
    """``users`` users with ``lengths[0]``..``lengths[1] - 1`` distinct random items each, in order."""
    rng = np.random.default_rng(seed)
    rows = [(str(u), str(i), float(t)) for u in range(1, users + 1)
            for t, i in enumerate(rng.choice(np.arange(1, items + 1), size=rng.integers(*lengths), replace=False))]
    write_dataset(path, pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    return path


def run_recsys(args: list[str], root: Path) -> subprocess.CompletedProcess:
    """``recsys <args>`` on one thread, logging to CSV under ``root`` (crash_callback importable)."""
    args = [*args, "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(root),
            "--trainer.enable_progress_bar", "false"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))
    return subprocess.run(RECSYS + args, capture_output=True, text=True, env=env, timeout=600)


def run_recsys_side_by_side(*runs: tuple[list[str], Path]) -> list[subprocess.CompletedProcess]:
    """:func:`run_recsys` for each ``(args, root)`` at once (runs that do not depend on each other
    share the machine's cores instead of queueing), in the order given."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda run: run_recsys(*run), runs))


def logged_test_metrics(root: Path) -> dict[str, float]:
    """The last ``test/*`` row of the newest metrics.csv under ``root`` ({} when none)."""
    files = list(root.rglob("metrics.csv"))
    if not files:
        return {}
    with open(max(files, key=lambda p: p.stat().st_mtime)) as f:
        rows = [r for r in csv.DictReader(f) if any(k.startswith("test/") and v for k, v in r.items())]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v} if rows else {}
