"""Lightning's DDP strategy on 2 CPU processes (gloo) evaluates every window exactly once and
logs the same test metrics as one process."""

import pytest
from recsys_runs import SMALL_SASREC, logged_test_metrics, random_dataset, run_recsys


def run_test(dataset, out, devices: int) -> dict[str, float]:
    done = run_recsys([
        "test", "--seed_everything", "7", *SMALL_SASREC, "--model.max_len", "5",
        "--data", "SeqDataModule", "--data.path", str(dataset), "--data.max_len", "5", "--data.eval_batch_size", "4",
        "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
    ], out)
    assert done.returncode == 0, done.stderr[-3000:]
    return logged_test_metrics(out)


def test_ddp_evaluates_every_window_once(tmp_path):
    # 41 evaluated users: 2 ranks cannot split them evenly, so the sampler pads one with a repeat.
    dataset = random_dataset(tmp_path / "odd", users=41, items=30, lengths=(4, 9), seed=0)
    single = run_test(dataset, tmp_path / "single", devices=1)
    ddp = run_test(dataset, tmp_path / "ddp", devices=2)
    assert single["test/windows"] == 41
    assert ddp["test/windows"] == 41  # not 42: the sampler's repeat is counted once
    assert ddp.keys() == single.keys()
    for name, value in single.items():
        assert ddp[name] == pytest.approx(value, abs=1e-6), name
