"""Lightning's DDP strategy on 2 CPU processes (gloo) evaluates every window exactly once and
logs the same test metrics as one process, and trains with the steps one process takes."""

from pathlib import Path

import pytest
import torch

from recsys.testing import rule_dataset
from recsys_runs import SMALL_SASREC, logged_test_metrics, random_dataset, run_recsys_side_by_side


def evaluate_args(dataset, out: Path, devices: int) -> tuple[list[str], Path]:
    return ([
        "test", "--seed_everything", "7", *SMALL_SASREC, "--model.max_len", "5",
        "--data", "SeqDataModule", "--data.path", str(dataset), "--data.max_len", "5", "--data.eval_batch_size", "4",
        "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
    ], out)


def run_tests(dataset, out: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The test metrics of one process and of DDP on 2, run side by side."""
    for done in run_recsys_side_by_side(evaluate_args(dataset, out / "single", 1), evaluate_args(dataset, out / "ddp", 2)):
        assert done.returncode == 0, done.stderr[-3000:]
    return logged_test_metrics(out / "single"), logged_test_metrics(out / "ddp")


def test_ddp_evaluates_every_window_once(tmp_path):
    # 41 evaluated users: 2 ranks cannot split them evenly, so the sampler pads one with a repeat.
    dataset = random_dataset(tmp_path / "odd", users=41, items=30, lengths=(4, 9), seed=0)
    single, ddp = run_tests(dataset, tmp_path)
    assert single["test/windows"] == 41
    assert ddp["test/windows"] == 41  # not 42: the sampler's repeat is counted once
    assert ddp.keys() == single.keys()
    for name, value in single.items():
        assert ddp[name] == pytest.approx(value, abs=1e-6), name



def fit_args(dataset, out: Path, devices: int, batch_size: int) -> tuple[list[str], Path]:
    """One epoch of SASRec without dropout, one target per window, saving the first step's
    gradients (averaged over processes under DDP) to ``out/gradients.pt``."""
    return ([
        "fit", "--seed_everything", "3", "--model", "SASRec", "--model.d_model", "16", "--model.ffn_dim", "32",
        "--model.num_layers", "1", "--model.num_heads", "1", "--model.max_len", "5", "--model.lr", "0.005",
        "--model.dropout", "0", "--model.attn_dropout", "0",
        "--data", "SeqDataModule", "--data.path", str(dataset), "--data.max_len", "5", "--data.train_windows", "every",
        "--data.batch_size", str(batch_size), "--trainer.max_epochs", "1",
        "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.callbacks+=gradient_probe.SaveGradients", f"--trainer.callbacks.path={out / 'gradients.pt'}",
    ], out)


def fit_results(out: Path, done) -> tuple[dict[str, float], list[dict]]:
    """A fit's test metrics and first-step gradients."""
    assert done.returncode == 0, done.stderr[-3000:]
    return logged_test_metrics(out), torch.load(out / "gradients.pt", weights_only=True)


def test_ddp_training_takes_the_steps_of_one_process(tmp_path):
    """2 processes x 8 windows per step train as one process with 16 per step.

    The engine's training order is one permutation per (seed, epoch); Lightning's distributed
    wrapper gives rank r every other window of it (no reshuffle), so a step's two halves
    together are the one-process batch. With one target per window (`train_windows: every`),
    equal halves and no dropout, DDP's averaged gradient is the one-process mean gradient:
    only the order of float additions differs, so the first step's gradients must agree to
    float32 rounding (1e-6 of the largest entry). That catches a per-process batch left at 16,
    processes that each read every window, and unsynchronised gradients (each is a different
    gradient, not a rounding away).

    Later steps are not compared exactly: Adam divides by the root of the second moment, which
    turns rounding-level differences in near-zero gradient entries into full-size steps, so two
    correct runs drift apart (measured here: test NDCG@10 0.956 vs 0.926 after one epoch). The
    metrics are held to 0.1, the spread of one-process runs over seeds 0-4 on this data with
    dropout (0.77-0.92 NDCG@10): DDP training must be as good as another seed, not identical.
    """
    dataset = rule_dataset(tmp_path / "data", users=64)  # 332 training windows: 20 steps of 8 + 8, then 6 + 6
    one, two = tmp_path / "single", tmp_path / "ddp"
    done = run_recsys_side_by_side(fit_args(dataset, one, devices=1, batch_size=16),
                                   fit_args(dataset, two, devices=2, batch_size=8))
    (single, single_grad), (ddp, ddp_grad) = fit_results(one, done[0]), fit_results(two, done[1])
    assert single_grad[0].keys() == ddp_grad[0].keys()
    for name, expected in single_grad[0].items():
        scale = float(expected.abs().max()) or 1.0
        assert torch.allclose(ddp_grad[0][name], expected, rtol=0, atol=1e-6 * scale), name
    assert single["test/windows"] == ddp["test/windows"] == 64
    assert single["test/ndcg@10"] > 0.5  # it learned the rule
    for name in ("test/hit@10", "test/ndcg@10", "test/mrr@10"):
        assert ddp[name] == pytest.approx(single[name], abs=0.1), name
