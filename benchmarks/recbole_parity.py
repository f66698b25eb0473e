#!/usr/bin/env python3
"""SASRec on MovieLens-100k: recsys against RecBole 1.2.1, same split and hyper-parameters.

Prints one table and writes ``benchmarks/results/recbole_parity.json``.

Two parts:

1. **Speed, side by side in this run.** A few epochs of RecBole's SASRec (through
   ``benchmarks/recbole_side.py``, in RecBole's own virtualenv, ``--recbole-python``) and of
   ours, one after the other, each in its own process with the same thread count. Reported:
   training throughput in target positions per second (an epoch's worth of next-item targets
   is the same work however windows are batched), seconds per training epoch, seconds per
   full-ranking evaluation of all users, peak RSS, and the ratios.
2. **Accuracy at convergence.** Ours trained with early stopping on validation NDCG@10
   (patience 10) for each seed; RecBole's converged run is slow here, so it is run once in the
   background (``recbole_side.py --epochs 300 ...``) and read back from
   ``benchmarks/results/recbole_sasrec_ml-100k.json`` (the JSON records its command and
   versions).

Protocol: RecBole ranks the target against all items and does *not* mask the user's history
for sequential models, and keeps file order for equal timestamps; the parity rows therefore
use ``data.mask_history=false`` and ``data.tie_break=file``. The same checkpoints are also
tested with history masking (our default protocol) and reported beside.

Hyper-parameters (both): d=64, 2 layers, 2 heads, inner 256, dropout 0.5/0.5, L=50, Adam lr
1e-3, full cross-entropy, patience 10 on NDCG@10. The batching differs by design: a RecBole
batch is 256 (history, next item) pairs, each a separate forward pass over its prefix; ours is
``--batch-size`` windows of 50 positions that predict the next item at every position, windows
``--train-stride`` apart (25: every target but a user's first few sees at least 25 items of
context). Every next-item target is trained on exactly once per epoch on both sides.

Usage::

    python benchmarks/recbole_parity.py                     # speed (3 epochs each) + 3 seeds
    python benchmarks/recbole_parity.py --speed-epochs 2 --seeds 0 --skip-recbole-speed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECBOLE_CONVERGED = RESULTS / "recbole_sasrec_ml-100k.json"
METRICS = ("hit@10", "ndcg@10", "mrr@10", "hit@20", "ndcg@20")


# ---- our side, run in a subprocess (clean peak RSS, same thread settings as RecBole) --------


def run_ours(seed: int, max_epochs: int, patience: int, threads: int, out: str, workdir: str,
             batch_size: int, train_stride: int | None) -> None:
    import resource

    import torch

    torch.set_num_threads(threads)
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from recsys import SeqDataModule
    from recsys.models.sasrec import SASRec

    class Timer(pl.Callback):
        def __init__(self):
            self.train, self.val, self.val_ndcg = [], [], []

        def on_train_epoch_start(self, trainer, module):
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.train.append(time.perf_counter() - self._t)

        def on_validation_epoch_start(self, trainer, module):
            self._v = time.perf_counter()

        def on_validation_epoch_end(self, trainer, module):
            if not trainer.sanity_checking:
                self.val.append(time.perf_counter() - self._v)
                self.val_ndcg.append(float(trainer.callback_metrics["val/ndcg@10"]))

    pl.seed_everything(seed, verbose=False)
    started = time.perf_counter()
    data = SeqDataModule("ml-100k", max_len=50, batch_size=batch_size, train_stride=train_stride,
                         eval_batch_size=1024, mask_history=False, tie_break="file")
    model = SASRec(data.num_items, max_len=50, d_model=64, num_layers=2, num_heads=2, ffn_dim=256,
                   dropout=0.5, attn_dropout=0.5, loss_type="ce", lr=1e-3)
    timer = Timer()
    checkpoint = ModelCheckpoint(dirpath=workdir, monitor="val/ndcg@10", mode="max", filename="best")
    trainer = pl.Trainer(
        max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=workdir,
        callbacks=[timer, checkpoint, EarlyStopping(monitor="val/ndcg@10", mode="max", patience=patience)],
    )
    trainer.fit(model, datamodule=data)
    windows = data.train_dataloader().dataset
    batch = windows.__getitems__(range(len(windows)))
    labels = torch.cat([batch.history[:, 1:], batch.target[:, None]], dim=1)
    targets = int(((batch.history != 0) & (labels != 0)).sum())
    best_epoch = max(range(len(timer.val_ndcg)), key=lambda i: timer.val_ndcg[i])
    result = {
        "seed": seed, "threads": threads, "epochs_run": len(timer.train), "best_epoch": best_epoch,
        "epoch_train_seconds": timer.train, "epoch_eval_seconds": timer.val,
        "train_targets_per_epoch": targets,
        "wall_seconds_to_best": sum(timer.train[: best_epoch + 1]) + sum(timer.val[: best_epoch + 1]),
        "wall_seconds_total": time.perf_counter() - started,
    }
    best = SASRec.load_from_checkpoint(checkpoint.best_model_path) if checkpoint.best_model_path else model
    best.eval()
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)
    result["val"] = {k[4:]: float(v) for k, v in pl.Trainer(**quiet).validate(best, datamodule=data, verbose=False)[0].items()}
    result["test"] = {k[5:]: float(v) for k, v in pl.Trainer(**quiet).test(best, datamodule=data, verbose=False)[0].items()}
    masked = SeqDataModule("ml-100k", max_len=50, eval_batch_size=1024, mask_history=True, tie_break="file")
    result["test_masked"] = {k[5:]: float(v) for k, v in pl.Trainer(**quiet).test(best, datamodule=masked, verbose=False)[0].items()}
    # Full-ranking evaluation of every user, without the Trainer: one batch, no grad.
    evaluation = data.test_dataloader().dataset
    all_users = evaluation.__getitems__(range(len(evaluation)))
    with torch.inference_mode():
        best.rank(all_users)
        timings = []
        for _ in range(5):
            t = time.perf_counter()
            best.rank(all_users)
            timings.append(time.perf_counter() - t)
    result["rank_all_users_seconds"] = min(timings)
    result["users_evaluated"] = len(evaluation)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps(result, indent=2))


def ours(seed: int, max_epochs: int, patience: int, threads: int, batch_size: int, train_stride: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ours.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        subprocess.run(
            [sys.executable, __file__, "--worker", "--seed", str(seed), "--max-epochs", str(max_epochs),
             "--patience", str(patience), "--threads", str(threads), "--out", str(out), "--workdir", tmp,
             "--batch-size", str(batch_size), *(["--train-stride", str(train_stride)] if train_stride else [])],
            check=True, env=env,
        )
        return json.loads(out.read_text())


def recbole(python: str, epochs: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recbole.json"
        subprocess.run(
            [python, str(HERE / "recbole_side.py"), "--epochs", str(epochs), "--seed", "2020",
             "--threads", str(threads), "--out", str(out), "--workdir", tmp],
            check=True, stdout=subprocess.DEVNULL,
        )
        return json.loads(out.read_text())


# ---- report --------------------------------------------------------------------------------


def _median(values):
    return statistics.median(values) if values else float("nan")


def speed_rows(ours_run: dict, recbole_run: dict | None) -> list[tuple[str, float, float | None]]:
    mine = {
        "training throughput (targets/s)": ours_run["train_targets_per_epoch"] / _median(ours_run["epoch_train_seconds"]),
        "seconds per training epoch": _median(ours_run["epoch_train_seconds"]),
        "seconds per evaluation (Trainer, all users)": _median(ours_run["epoch_eval_seconds"]),
        "peak RSS (MiB)": ours_run["peak_rss_mib"],
    }
    theirs = {}
    if recbole_run:
        theirs = {
            "training throughput (targets/s)": recbole_run["train_targets_per_epoch"] / _median(recbole_run["epoch_train_seconds"]),
            "seconds per training epoch": _median(recbole_run["epoch_train_seconds"]),
            "seconds per evaluation (Trainer, all users)": _median(recbole_run["epoch_eval_seconds"]),
            "peak RSS (MiB)": recbole_run["peak_rss_mib"],
        }
    return [(name, mine[name], theirs.get(name)) for name in mine]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16, help="our training windows per batch")
    parser.add_argument("--train-stride", type=int, default=25, help="distance between our training windows")
    parser.add_argument("--recbole-python", default=os.environ.get("RECBOLE_PYTHON", "/work/rbvenv/bin/python"))
    parser.add_argument("--skip-recbole-speed", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the table from --out and the converged RecBole JSON, without running anything")
    parser.add_argument("--out", default=str(RESULTS / "recbole_parity.json"))
    # internal: one run of our side
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.worker:
        run_ours(args.seed, args.max_epochs, args.patience, args.threads, args.out, args.workdir,
                 args.batch_size, args.train_stride)
        return

    if args.report_only:
        saved = json.loads(Path(args.out).read_text())
        ours_speed, recbole_speed, accuracy = saved["ours_speed"], saved["recbole_speed"], saved["ours_accuracy"]
        command, args.threads, args.seeds = saved["command"], saved["threads"], saved["seeds"]
        args.batch_size, args.train_stride = saved["batch_size"], saved["train_stride"]
    else:
        command = " ".join(["python", *sys.argv])
        print(f"speed: {args.speed_epochs} epochs each, {args.threads} thread(s), one after the other", flush=True)
        ours_speed = ours(0, args.speed_epochs, 10**6, args.threads, args.batch_size, args.train_stride)
        recbole_speed = None
        if not args.skip_recbole_speed:
            recbole_speed = recbole(args.recbole_python, args.speed_epochs, args.threads)
        accuracy = []
        for seed in args.seeds:
            print(f"accuracy: ours, seed {seed}, to convergence", flush=True)
            accuracy.append(ours(seed, args.max_epochs, args.patience, args.threads, args.batch_size, args.train_stride))
    converged = json.loads(RECBOLE_CONVERGED.read_text()) if RECBOLE_CONVERGED.exists() else None

    lines = ["## Speed (same machine, same run, %d thread(s))" % args.threads, "",
             "| measure | recsys | RecBole 1.2.1 | ratio |", "|---|---:|---:|---:|"]
    for name, mine, theirs in speed_rows(ours_speed, recbole_speed):
        if theirs is None:
            lines.append(f"| {name} | {mine:.3f} | n/a | n/a |")
        else:
            ratio = mine / theirs if "throughput" in name else theirs / mine
            lines.append(f"| {name} | {mine:.3f} | {theirs:.3f} | {ratio:.1f}x |")
    lines.append(f"| full-ranking of all {ours_speed['users_evaluated']} users, no Trainer (s) | "
                 f"{ours_speed['rank_all_users_seconds']:.4f} | | |")
    lines.insert(1, f"(ours: batch {args.batch_size} windows, stride {args.train_stride}; RecBole: batch 256 pairs)")
    lines += ["", "Ratios: throughput = ours / RecBole; times and memory = RecBole / ours (higher = ours better).", ""]

    def fmt(values, digits=4):
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    lines += ["## Accuracy at convergence (test, loo, no history masking, file-order ties)", "",
              "| model | " + " | ".join(METRICS) + " | epochs (best) | s to best |",
              "|---|" + "---:|" * (len(METRICS) + 2)]
    lines.append(
        f"| recsys SASRec, seeds {args.seeds} | " + " | ".join(fmt([r['test'][m] for r in accuracy]) for m in METRICS)
        + f" | {fmt([r['epochs_run'] for r in accuracy], 1)} ({fmt([r['best_epoch'] for r in accuracy], 1)}) | "
        f"{fmt([r['wall_seconds_to_best'] for r in accuracy], 0)} |"
    )
    if converged:
        test = converged.get("test_metrics", {})
        keys = {m: m.replace("hit@", "recall@") for m in METRICS}
        status = "" if converged.get("complete") else " (run not complete)"
        lines.append(
            f"| RecBole SASRec, seed 2020{status} | " + " | ".join(
                f"{test[keys[m]]:.4f}" if keys[m] in test else "n/a" for m in METRICS)
            + f" | {converged.get('epochs_run')} ({converged.get('best_epoch')}) | {converged.get('wall_seconds_to_best', float('nan')):.0f} |"
        )
    lines += ["", "## Our default protocol (history masked), same checkpoints", "",
              "| model | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS),
              f"| recsys SASRec, seeds {args.seeds} | " + " | ".join(fmt([r['test_masked'][m] for r in accuracy]) for m in METRICS) + " |"]
    if converged and converged.get("wall_seconds_to_best") and accuracy:
        ratio = converged["wall_seconds_to_best"] / statistics.mean(r["wall_seconds_to_best"] for r in accuracy)
        lines += ["", f"Wall-clock to the early-stopped best model: RecBole / ours = {ratio:.1f}x."]
    table = "\n".join(lines)
    print("\n" + table)
    report = {"command": command, "threads": args.threads, "seeds": args.seeds, "batch_size": args.batch_size,
              "train_stride": args.train_stride, "ours_speed": ours_speed,
              "recbole_speed": recbole_speed, "ours_accuracy": accuracy, "recbole_converged": converged,
              "table": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
