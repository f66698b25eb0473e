"""``recsys fit`` killed with SIGKILL mid-epoch, then resumed with ``--ckpt_path last``, ends with
the test metrics of an uninterrupted run with the same seed."""

import signal
from pathlib import Path

import pytest
from recsys_runs import SMALL_SASREC, logged_test_metrics, random_dataset, run_recsys, run_recsys_side_by_side


def fit_args(dataset, root: Path, *extra: str) -> tuple[list[str], Path]:
    return ([
        "fit", "--seed_everything", "3", *SMALL_SASREC,
        "--model.max_len", "6", "--model.dropout", "0.3",  # dropout: the resumed run must replay its RNG
        "--data", "SeqDataModule", "--data.path", str(dataset), "--data.max_len", "6", "--data.batch_size", "16",
        "--trainer.max_epochs", "4", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(root), *extra,
    ], root)


def fit(dataset, root, *extra: str):
    return run_recsys(*fit_args(dataset, root, *extra))


def test_killed_then_resumed_fit_matches_an_uninterrupted_one(tmp_path):
    dataset = random_dataset(tmp_path / "resume", users=60, items=40, lengths=(4, 12), seed=1)
    whole, crashed = run_recsys_side_by_side(
        fit_args(dataset, tmp_path / "whole"),
        fit_args(dataset, tmp_path / "crashed", "--trainer.callbacks+=crash_callback.KillAt",
                 "--trainer.callbacks.epoch=2", "--trainer.callbacks.batch=1"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    assert not logged_test_metrics(tmp_path / "crashed")

    resumed = fit(dataset, tmp_path / "crashed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "recsys: resuming from" in resumed.stderr and "last.ckpt" in resumed.stderr
    expected, got = logged_test_metrics(tmp_path / "whole"), logged_test_metrics(tmp_path / "crashed")
    assert expected and got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name
