"""Lightning's DDP strategy on 2 CPU processes (gloo) evaluates every window exactly once and
logs the same test metrics as one process.

Runs ``recsys test`` in subprocesses: Lightning's DDP launcher re-executes the command line for
the second rank, which must be the ``recsys`` command, not pytest.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.atomic import write_dataset

RECSYS = [sys.executable, "-m", "recsys.cli"] if not Path(sys.executable).with_name("recsys").exists() \
    else [str(Path(sys.executable).with_name("recsys"))]


@pytest.fixture
def odd_dataset(tmp_path):
    """41 evaluated users: 2 ranks cannot split them evenly, so the sampler pads one with a repeat."""
    rng = np.random.default_rng(0)
    rows = [(str(u), str(i), float(t)) for u in range(1, 42)
            for t, i in enumerate(rng.choice(np.arange(1, 31), size=rng.integers(4, 9), replace=False))]
    write_dataset(tmp_path / "odd", pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    return tmp_path / "odd"


def run_test(dataset: Path, out: Path, devices: int) -> dict[str, float]:
    args = [
        "test", "--seed_everything", "7",
        "--model", "SASRec", "--model.d_model", "16", "--model.num_layers", "1", "--model.num_heads", "1",
        "--model.max_len", "5",
        "--data", "SeqDataModule", "--data.path", str(dataset), "--data.max_len", "5", "--data.eval_batch_size", "4",
        "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out),
        "--trainer.enable_progress_bar", "false",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(RECSYS + args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(next(out.rglob("metrics.csv"))) as f:
        (row,) = list(csv.DictReader(f))
    return {k: float(v) for k, v in row.items() if k.startswith("test/") and v != ""}


def test_ddp_evaluates_every_window_once(odd_dataset, tmp_path):
    single = run_test(odd_dataset, tmp_path / "single", devices=1)
    ddp = run_test(odd_dataset, tmp_path / "ddp", devices=2)
    assert single["test/windows"] == 41
    assert ddp["test/windows"] == 41  # not 42: the sampler's repeat is counted once
    assert ddp.keys() == single.keys()
    for name, value in single.items():
        assert ddp[name] == pytest.approx(value, abs=1e-6), name
