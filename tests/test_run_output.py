"""What a run prints when its output goes to a file (nohup, Slurm, CI): progress lines, no
library noise, and the short results table (issue: the first hour of a new user)."""

from __future__ import annotations

import re
import warnings
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What third-party warnings and adverts look like in a run's output.
NOISE = re.compile(r"Warning|warnings\.warn|deprecated|tensorboardX|💡|litlogger", re.IGNORECASE)


def fit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`recsys fit` on the default config (MovieLens-100k), cut short, with stdout a pipe."""
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", "fit", "--config", str(ROOT / "configs/ml-100k/sasrec.yaml"),
         "--trainer.max_epochs=2", "--trainer.limit_train_batches=10", f"--trainer.default_root_dir={tmp_path}",
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def default_run_folder(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("default")
    done = fit(folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return done, folder


@pytest.fixture(scope="module")
def default_run(default_run_folder) -> subprocess.CompletedProcess:
    return default_run_folder[0]


def test_testing_a_checkpoint_elsewhere_prints_no_library_warnings(default_run_folder, tmp_path):
    _, folder = default_run_folder
    best = next(folder.glob("lightning_logs/version_0/checkpoints/best-*.ckpt"))
    done = subprocess.run([sys.executable, "-m", "recsys.cli", "test", "--config",
                           str(ROOT / "configs/ml-100k/sasrec.yaml"), f"--ckpt_path={best}",
                           f"--trainer.default_root_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in (done.stdout + done.stderr).splitlines() if NOISE.search(line) or "dirpath" in line] == []
    assert re.search(r"^test/ndcg +0\.\d+", done.stdout, re.MULTILINE), done.stdout


def test_a_default_run_prints_no_library_warnings(default_run):
    noisy = [line for line in (default_run.stdout + default_run.stderr).splitlines() if NOISE.search(line)]
    assert noisy == []


def test_a_run_into_a_file_reports_each_epoch_and_the_short_table(default_run):
    out = default_run.stdout
    assert re.search(r"^epoch 0/1 done in \d+:\d\d:\d\d  val/ndcg@10 0\.\d+$", out, re.MULTILINE), out
    assert re.search(r"^epoch 1/1 done in ", out, re.MULTILINE), out
    assert not re.search(r"(Epoch|Validation|Testing) .*━", out)  # no rich bar drawn into the file
    assert "Test metric" not in out and "Validate metric" not in out  # nor Lightning's 17-digit table
    assert re.search(r"^test/ndcg +0\.\d+", out, re.MULTILINE), out


def test_progress_lines_every_n_steps(tmp_path):
    done = fit(tmp_path, "--trainer.callbacks+=recsys.progress.LogProgress", "--trainer.callbacks.every_n_steps=3",
               "--trainer.callbacks.every_seconds=0", "--test_after_fit=false")
    assert done.returncode == 0, done.stderr[-2000:]
    steps = re.findall(r"^epoch (\d)/1  step (\d+)/(\d+)  loss \d+\.\d+  [\d.]+ it/s  epoch ETA \d+:\d\d:\d\d$",
                       done.stdout, re.MULTILINE)
    # 10 batches per epoch: a line at steps 3, 6 and 9 of each epoch, and no other
    assert [(int(e), int(s), int(t)) for e, s, t in steps] == [(e, s, 10) for e in (0, 1) for s in (3, 6, 9)], done.stdout


def test_log_progress_refuses_nonsense_intervals():
    from recsys.progress import LogProgress

    with pytest.raises(ValueError, match="every_n_steps"):
        LogProgress(every_n_steps=0)


def test_tensorboard_and_csv_share_the_run_folder_when_tensorboard_is_installed(tiny_path, tmp_path):
    pytest.importorskip("tensorboard")  # the `tensorboard` extra
    from recsys.lightning_cli import run_cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", f"--data.path={tiny_path}", "--trainer.max_epochs=1",
                       f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]  # neither clears the other
    folder = Path(cli.trainer.log_dir)
    assert [type(logger).__name__ for logger in cli.trainer.loggers] == ["CSVLogger", "TensorBoardLogger"]
    assert (folder / "metrics.csv").is_file() and list(folder.glob("events.out.tfevents.*"))
    assert list(folder.glob("checkpoints/*.ckpt")) and (folder / "results.json").is_file()
