"""``recsys fit`` killed with SIGKILL mid-epoch, then resumed with ``--ckpt_path last``, ends with
the test metrics of an uninterrupted run with the same seed."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.atomic import write_dataset

RECSYS = [str(Path(sys.executable).with_name("recsys"))]


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(str(u), str(i), float(t)) for u in range(1, 61)
            for t, i in enumerate(rng.choice(np.arange(1, 41), size=rng.integers(4, 12), replace=False))]
    write_dataset(tmp_path / "resume", pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    return tmp_path / "resume"


def fit(dataset: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "fit", "--seed_everything", "3",
        "--model", "SASRec", "--model.d_model", "16", "--model.num_layers", "1", "--model.num_heads", "1",
        "--model.max_len", "6", "--model.dropout", "0.3",  # dropout: the resumed run must replay its RNG
        "--data", "SeqDataModule", "--data.path", str(dataset), "--data.max_len", "6", "--data.batch_size", "16",
        "--trainer.max_epochs", "4", "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(root),
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(root),
        "--trainer.enable_progress_bar", "false", *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))
    return subprocess.run(RECSYS + args, capture_output=True, text=True, env=env, timeout=600)


def test_metrics(root: Path) -> dict[str, float]:
    newest = max(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    with open(newest) as f:
        rows = [r for r in csv.DictReader(f) if r.get("test/ndcg@10")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v} if rows else {}


test_metrics.__test__ = False  # a helper, not a test


def test_killed_then_resumed_fit_matches_an_uninterrupted_one(dataset, tmp_path):
    whole = fit(dataset, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    crashed = fit(dataset, tmp_path / "crashed", "--trainer.callbacks+=crash_callback.KillAt",
                  "--trainer.callbacks.epoch=2", "--trainer.callbacks.batch=1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    assert not list((tmp_path / "crashed").rglob("metrics.csv")) or not test_metrics(tmp_path / "crashed")

    resumed = fit(dataset, tmp_path / "crashed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "recsys: resuming from" in resumed.stderr and "last.ckpt" in resumed.stderr
    expected, got = test_metrics(tmp_path / "whole"), test_metrics(tmp_path / "crashed")
    assert expected and got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name
