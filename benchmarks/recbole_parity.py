#!/usr/bin/env python3
"""SASRec on MovieLens-100k: recsys against RecBole 1.2.1, same split and hyper-parameters.

Prints one table and writes ``benchmarks/results/recbole_parity.json``.

Two parts:

1. **Speed, side by side in this run.** A few epochs of RecBole's SASRec (through
   ``benchmarks/recbole_side.py``, in RecBole's own virtualenv, ``--recbole-python``) and of
   ours, one after the other, each in its own process with the same thread count. Reported:
   training throughput in next-item targets per second (the targets the loss covers, 97,171 per
   epoch on both sides: our windows' ``labels``, RecBole's (prefix, next item) pairs; context
   positions of overlapping windows are not targets), seconds per training epoch, seconds per
   full-ranking evaluation of all users, peak RSS, and the ratios.
2. **Accuracy at convergence.** Ours trained with early stopping on validation NDCG@10 for each
   ``--seeds``; RecBole's converged runs are slow here (about an hour each), so they are run
   separately (``recbole_side.py --epochs 300 --seed N ...``) and every complete
   ``benchmarks/results/recbole_sasrec_ml-100k*.json`` is read back (each records its command
   and versions). The table gives per-seed numbers of both sides and the difference of means
   (ours - RecBole) with Welch's 95% confidence interval.

Protocol: RecBole ranks the target against all items and does *not* mask the user's history
for sequential models, and keeps file order for equal timestamps; the parity rows therefore
use ``data.mask_history=false`` and ``data.tie_break=file``. The same checkpoints are also
tested with history masking (our default protocol) and reported beside.

Hyper-parameters (both): d=64, 2 layers, 2 heads, inner 256, dropout 0.5/0.5, L=50, Adam lr
1e-3, full cross-entropy, early stopping on validation NDCG@10. ``--patience`` is RecBole's
``stopping_step`` (10): RecBole stops when ``cur_step > stopping_step``, i.e. after 11
validations in a row without improvement, so our Lightning ``EarlyStopping`` gets
``patience + 1``; both count validation epochs (one per training epoch).

Known differences, each named in docs/results.md:

- Batching, by design: a RecBole batch is 256 (prefix, next item) pairs, each a separate forward
  pass over its prefix (up to 50 items); ours is ``--batch-size`` windows of 50 items, windows
  ``--train-stride`` apart (25), the loss at each window's newest 25 positions (its ``labels``),
  so a target sees 26-50 items of context where RecBole's sees up to 50. Every target is trained
  on exactly once per epoch on both sides.
- The padding id: RecBole's training softmax includes it, ours does not (``--pad-in-softmax``
  measures the difference).
- Positions: RecBole numbers positions from the oldest item of the prefix, our
  ``position_alignment=left``; the default here is ``right`` (the original SASRec's, and
  ``configs/ml-100k/sasrec.yaml``'s, chosen on validation NDCG@10 over 5 seeds of each),
  ``--position-alignment left`` measures RecBole's.
- Timestamps: RecBole sorts on min-max-normalised float32 timestamps, which merges some distinct
  seconds and changes a few users' test and validation targets; the table lists them.

Usage::

    python benchmarks/recbole_parity.py --skip-speed     # accuracy: ours for seeds 0-4
    python benchmarks/recbole_parity.py --speed-only     # speed (3 epochs each), keeps accuracy
    python benchmarks/recbole_parity.py --report-only    # rebuild the table from the JSONs
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
RECBOLE_CONVERGED_GLOB = "recbole_sasrec_ml-100k*.json"
DEFAULT_BATCH_SIZE = 16
METRICS = ("hit@10", "ndcg@10", "mrr@10", "hit@20", "ndcg@20")


# ---- our side, run in a subprocess (clean peak RSS, same thread settings as RecBole) --------


def run_ours(seed: int, max_epochs: int, patience: int, threads: int, out: str, workdir: str,
             batch_size: int, train_stride: int | None, position_alignment: str, pad_in_softmax: bool) -> None:
    import resource

    import torch

    torch.set_num_threads(threads)
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from recsys import SeqDataModule
    from recsys.models.sasrec import SASRec

    if pad_in_softmax:
        SASRec = _pad_in_softmax(SASRec)  # noqa: N806

    class Timer(pl.Callback):
        def __init__(self):
            self.train, self.val, self.val_ndcg = [], [], []

        def on_train_epoch_start(self, trainer, module):
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.train.append(time.perf_counter() - self._t)

        def on_validation_epoch_start(self, trainer, module):
            self._v = time.perf_counter()

        def on_validation_end(self, trainer, module):
            # After the module's own epoch-end hook has logged the epoch's metrics.
            if not trainer.sanity_checking:
                self.val.append(time.perf_counter() - self._v)
                self.val_ndcg.append(float(trainer.callback_metrics["val/ndcg@10"]))

    pl.seed_everything(seed, verbose=False)
    started = time.perf_counter()
    data = SeqDataModule("ml-100k", max_len=50, batch_size=batch_size, train_stride=train_stride,
                         eval_batch_size=1024, mask_history=False, tie_break="file")
    model = SASRec(data.num_items, max_len=50, d_model=64, num_layers=2, num_heads=2, ffn_dim=256,
                   dropout=0.5, attn_dropout=0.5, loss_type="ce", lr=1e-3,
                   position_alignment=position_alignment)
    timer = Timer()
    checkpoint = ModelCheckpoint(dirpath=workdir, monitor="val/ndcg@10", mode="max", filename="best")
    trainer = pl.Trainer(
        max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=workdir,
        # `patience` is RecBole's stopping_step: RecBole stops once `cur_step > stopping_step`, i.e.
        # after stopping_step + 1 validations without improvement; Lightning stops once
        # `wait_count >= patience`. Both count validation epochs.
        callbacks=[timer, checkpoint, EarlyStopping(monitor="val/ndcg@10", mode="max", patience=patience + 1)],
    )
    trainer.fit(model, datamodule=data)
    loader = data.train_dataloader()
    windows = loader.dataset
    batch = windows.__getitems__(range(len(windows)))
    # Targets = the positions the loss covers (`labels`, each training target once per epoch).
    # Overlapping windows (stride < L) also run the encoder over context positions that are
    # another window's targets; those are counted apart, not as targets.
    targets = int((batch.labels != 0).sum()) if batch.labels is not None else int((batch.target != 0).sum())
    best_epoch = max(range(len(timer.val_ndcg)), key=lambda i: timer.val_ndcg[i])
    result = {
        "seed": seed, "threads": threads, "position_alignment": position_alignment,
        "pad_in_softmax": pad_in_softmax, "batch_size": batch_size, "train_stride": train_stride,
        "lightning_patience": patience + 1,
        "epochs_run": len(timer.train), "best_epoch": best_epoch,
        "epoch_train_seconds": timer.train, "epoch_eval_seconds": timer.val, "epoch_val_ndcg@10": timer.val_ndcg,
        "train_targets_per_epoch": targets,
        "train_windows_per_epoch": len(windows),
        "train_steps_per_epoch": len(loader),
        "history_positions_per_epoch": int((batch.history != 0).sum()),
        "wall_seconds_to_best": sum(timer.train[: best_epoch + 1]) + sum(timer.val[: best_epoch + 1]),
        "wall_seconds_total": time.perf_counter() - started,
    }
    if checkpoint.best_model_path:
        # The best epoch's weights into this model (the --pad-in-softmax class is local to this
        # script, so a checkpoint of it cannot be re-imported by its class path).
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    best = model
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


def _pad_in_softmax(base):
    """Ablation: ``base`` with the padding id left in the training softmax, as RecBole's
    ``CrossEntropyLoss`` over all ``n_items`` logits (id 0 included). Scoring is unchanged (both
    sides set the padding id to -inf when ranking)."""
    import torch.nn.functional as F

    class SASRecPadInSoftmax(base):
        def loss(self, batch):
            if self.loss_type != "ce" or batch.labels is None:
                return super().loss(batch)
            hidden = self.encode(batch.history)
            valid = batch.labels != 0
            return F.cross_entropy(self._logits(hidden[valid]), batch.labels[valid])

    return SASRecPadInSoftmax


def ours(seed: int, max_epochs: int, patience: int, threads: int, batch_size: int, train_stride: int | None,
         position_alignment: str, pad_in_softmax: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ours.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        subprocess.run(
            [sys.executable, __file__, "--worker", "--seed", str(seed), "--max-epochs", str(max_epochs),
             "--patience", str(patience), "--threads", str(threads), "--out", str(out), "--workdir", tmp,
             "--batch-size", str(batch_size), *(["--train-stride", str(train_stride)] if train_stride else []),
             "--position-alignment", position_alignment, *(["--pad-in-softmax"] if pad_in_softmax else [])],
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


def recbole_converged_runs() -> list[dict]:
    """Every complete converged RecBole run (``recbole_sasrec_ml-100k*.json``), by seed."""
    runs = []
    for path in sorted(RESULTS.glob(RECBOLE_CONVERGED_GLOB)):
        run = json.loads(path.read_text())
        if run.get("complete") and run.get("test_metrics"):
            run["file"] = str(path.relative_to(HERE.parent))
            runs.append(run)
    return sorted(runs, key=lambda r: r["hyper_parameters"]["seed"])


def recbole_incomplete_runs() -> list[str]:
    return [f"{p.name} ({len(json.loads(p.read_text()).get('epoch_train_seconds', []))} epochs so far)"
            for p in sorted(RESULTS.glob(RECBOLE_CONVERGED_GLOB)) if not json.loads(p.read_text()).get("complete")]


def welch(a: list[float], b: list[float], confidence: float = 0.95) -> dict:
    """Difference of means a - b with Welch's t confidence interval (unequal variances)."""
    from scipy import stats

    mean_a, mean_b = statistics.mean(a), statistics.mean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = (va + vb) ** 0.5
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, dof) * se
    diff = mean_a - mean_b
    return {"difference": diff, "ci_low": diff - half, "ci_high": diff + half, "confidence": confidence,
            "standard_error": se, "welch_dof": dof, "p_value": float(2 * stats.t.sf(abs(diff) / se, dof)),
            "n_ours": len(a), "n_recbole": len(b)}


def timestamp_ties() -> dict:
    """Which leave-one-out targets RecBole's float32 timestamps change.

    RecBole min-max normalises ``timestamp`` (ml-100k.yaml: ``normalize_all``) and stores it as
    float32, which merges some distinct seconds; its stable sort then keeps file order inside the
    merged group. We sort on the raw integer timestamp (ties in file order too)."""
    import numpy as np
    import pandas as pd

    from recsys.data.embedded import recbole_example

    raw = pd.read_csv(recbole_example("ml-100k") / "ml-100k.inter", sep="\t")
    raw.columns = ["user", "item", "rating", "timestamp"]
    seconds = raw["timestamp"].astype("float64")
    raw["float32"] = ((seconds - seconds.min()) / (seconds.max() - seconds.min())).astype(np.float32)
    ours_order = raw.sort_values(["user", "timestamp"], kind="stable")
    recbole_order = raw.sort_values(["user", "float32"], kind="stable")
    report = {}
    for stage, back in (("test", 1), ("val", 2)):
        mine = ours_order.groupby("user").nth(-back).set_index("user")["item"]
        theirs = recbole_order.groupby("user").nth(-back).set_index("user")["item"]
        differ = mine.index[mine != theirs.reindex(mine.index)]
        report[stage] = [{"user": int(u), "ours": int(mine[u]), "recbole": int(theirs[u])} for u in differ]
    return report


def speed_rows(ours_run: dict, recbole_run: dict | None) -> list[tuple[str, float, float | None]]:
    def measures(run):
        return {
            "training throughput (targets/s)": run["train_targets_per_epoch"] / _median(run["epoch_train_seconds"]),
            "seconds per training epoch": _median(run["epoch_train_seconds"]),
            "seconds per evaluation (Trainer, all users)": _median(run["epoch_eval_seconds"]),
            "peak RSS (MiB)": run["peak_rss_mib"],
        }

    mine, theirs = measures(ours_run), measures(recbole_run) if recbole_run else {}
    return [(name, mine[name], theirs.get(name)) for name in mine]


def _recbole_metric(run: dict, metric: str, split: str = "test") -> float:
    values = run["test_metrics"] if split == "test" else run["best_valid_metrics"]
    return values[metric] if metric in values else values[metric.replace("hit@", "recall@")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patience", type=int, default=10,
                        help="RecBole's stopping_step: stop after patience + 1 validations without improvement")
    parser.add_argument("--max-epochs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="our training windows per batch")
    parser.add_argument("--train-stride", type=int, default=25, help="distance between our training windows")
    parser.add_argument("--position-alignment", choices=("left", "right"), default="right",
                        help="our SASRec's position_alignment: right = configs/ml-100k/sasrec.yaml, chosen on "
                             "validation; left = RecBole's positions (ablation)")
    parser.add_argument("--pad-in-softmax", action="store_true",
                        help="ablation: keep the padding id in our training softmax, as RecBole does")
    parser.add_argument("--recbole-python", default=os.environ.get("RECBOLE_PYTHON", "/work/rbvenv/bin/python"))
    parser.add_argument("--skip-recbole-speed", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="accuracy only; keeps the speed part of --out")
    parser.add_argument("--speed-only", action="store_true", help="speed only; keeps the accuracy part of --out")
    parser.add_argument("--accuracy-from", nargs="+", metavar="JSON",
                        help="take our accuracy runs from these earlier --out files instead of training")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the table from --out and the converged RecBole JSONs, without running anything")
    parser.add_argument("--out", default=str(RESULTS / "recbole_parity.json"))
    # internal: one run of our side
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.worker:
        run_ours(args.seed, args.max_epochs, args.patience, args.threads, args.out, args.workdir,
                 args.batch_size, args.train_stride, args.position_alignment, args.pad_in_softmax)
        return

    saved = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    settings = ("threads", "seeds", "batch_size", "train_stride", "position_alignment", "pad_in_softmax", "patience")
    command = saved.get("commands", {})
    if isinstance(command, str):
        command = {}
    if args.report_only:
        ours_speed, recbole_speed, accuracy = saved.get("ours_speed"), saved.get("recbole_speed"), saved["ours_accuracy"]
        for name in settings:
            setattr(args, name, saved.get(name, getattr(args, name)))
    else:
        invocation = " ".join(["python", *sys.argv])
        ours_speed, recbole_speed = saved.get("ours_speed"), saved.get("recbole_speed")
        accuracy = saved.get("ours_accuracy", [])
        if not args.skip_speed:
            command["speed"] = invocation
            print(f"speed: {args.speed_epochs} epochs each, {args.threads} thread(s), one after the other", flush=True)
            ours_speed = ours(0, args.speed_epochs, 10**6, args.threads, args.batch_size, args.train_stride,
                              args.position_alignment, args.pad_in_softmax)
            recbole_speed = None
            if not args.skip_recbole_speed:
                recbole_speed = recbole(args.recbole_python, args.speed_epochs, args.threads)
        if args.accuracy_from:
            # Our per-seed runs, made by separate invocations (e.g. one seed each), merged.
            command["accuracy"] = invocation
            accuracy = [run for path in args.accuracy_from for run in json.loads(Path(path).read_text())["ours_accuracy"]]
            first = accuracy[0]
            for name in ("batch_size", "train_stride", "position_alignment", "pad_in_softmax"):
                values = {run[name] for run in accuracy}
                if len(values) != 1:
                    raise SystemExit(f"--accuracy-from: runs differ in {name}: {sorted(values)}")
                setattr(args, name, first[name])
            args.patience = first["lightning_patience"] - 1
            args.seeds = [run["seed"] for run in accuracy]
        elif args.speed_only:
            for name in settings:
                setattr(args, name, saved.get(name, getattr(args, name)))
        else:
            command["accuracy"] = invocation
            accuracy = []
            for seed in args.seeds:
                print(f"accuracy: ours, seed {seed}, to convergence", flush=True)
                accuracy.append(ours(seed, args.max_epochs, args.patience, args.threads, args.batch_size,
                                     args.train_stride, args.position_alignment, args.pad_in_softmax))
                run = accuracy[-1]
                Path(args.out + ".partial").write_text(json.dumps({"ours_accuracy": accuracy}, indent=2))
                print(f"seed {seed}: val ndcg@10 {run['val']['ndcg@10']:.4f}, test ndcg@10 {run['test']['ndcg@10']:.4f}, "
                      f"best epoch {run['best_epoch']} of {run['epochs_run']}, "
                      f"median epoch {_median(run['epoch_train_seconds']):.1f} s", flush=True)
    converged = recbole_converged_runs()
    incomplete = recbole_incomplete_runs()
    ties = timestamp_ties()

    lines = []
    if ours_speed:
        lines += ["## Speed (same machine, same run, %d thread(s))" % args.threads,
                  f"(ours: batch {ours_speed.get('batch_size', args.batch_size)} windows, stride "
                  f"{ours_speed.get('train_stride', args.train_stride)}, "
                  f"{ours_speed.get('train_steps_per_epoch', '?')} steps per epoch; RecBole: batch 256 pairs, "
                  f"{recbole_speed['data']['train_batches_per_epoch'] if recbole_speed else '?'} steps per epoch; "
                  f"targets = next-item targets in the loss, {ours_speed['train_targets_per_epoch']:,} per epoch"
                  + (" on both sides)" if recbole_speed and recbole_speed["train_targets_per_epoch"]
                     == ours_speed["train_targets_per_epoch"] else ")"), "",
                  "| measure | recsys | RecBole 1.2.1 | ratio |", "|---|---:|---:|---:|"]
        for name, mine, theirs in speed_rows(ours_speed, recbole_speed):
            if theirs is None:
                lines.append(f"| {name} | {mine:.3f} | n/a | n/a |")
            else:
                ratio = mine / theirs if "throughput" in name else theirs / mine
                lines.append(f"| {name} | {mine:.3f} | {theirs:.3f} | {ratio:.1f}x |")
        lines.append(f"| full-ranking of all {ours_speed['users_evaluated']} users, no Trainer (s) | "
                     f"{ours_speed['rank_all_users_seconds']:.4f} | | |")
        lines += ["", "Ratios: throughput = ours / RecBole; times and memory = RecBole / ours (higher = ours better).",
                  f"Our encoder also runs over {ours_speed.get('history_positions_per_epoch', 0):,} history "
                  "positions per epoch (windows overlap), RecBole's over every pair's whole prefix.", ""]

    def fmt(values, digits=4):
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    recbole_seeds = [r["hyper_parameters"]["seed"] for r in converged]
    ours_seeds = [r["seed"] for r in accuracy]
    setting = (f"position_alignment {args.position_alignment}, batch {args.batch_size} windows, stride "
               f"{args.train_stride}, PAD {'in' if args.pad_in_softmax else 'not in'} the training softmax")
    lines += ["## Accuracy at convergence (test, loo, no history masking, file-order ties)", "",
              f"(ours: {setting}; early stopping after {args.patience + 1} validations without improvement on "
              f"both sides; mean ± standard deviation over seeds)", "",
              "| model | seeds | " + " | ".join(METRICS) + " | val ndcg@10 | epochs (best) | s to best |",
              "|---|---|" + "---:|" * (len(METRICS) + 3)]
    if accuracy:
        lines.append(
            f"| recsys SASRec | {len(accuracy)}: {ours_seeds} | "
            + " | ".join(fmt([r['test'][m] for r in accuracy]) for m in METRICS)
            + f" | {fmt([r['val']['ndcg@10'] for r in accuracy])}"
            + f" | {fmt([r['epochs_run'] for r in accuracy], 1)} ({fmt([r['best_epoch'] for r in accuracy], 1)}) | "
            f"{fmt([r['wall_seconds_to_best'] for r in accuracy], 0)} |")
    if converged:
        lines.append(
            f"| RecBole SASRec | {len(converged)}: {recbole_seeds} | "
            + " | ".join(fmt([_recbole_metric(r, m) for r in converged]) for m in METRICS)
            + f" | {fmt([_recbole_metric(r, 'ndcg@10', 'val') for r in converged])}"
            + f" | {fmt([r['epochs_run'] for r in converged], 1)} ({fmt([r['best_epoch'] for r in converged], 1)}) | "
            f"{fmt([r['wall_seconds_to_best'] for r in converged], 0)} |")
    comparison = {}
    if len(accuracy) >= 2 and len(converged) >= 2:
        for m in METRICS:
            comparison[m] = welch([r["test"][m] for r in accuracy], [_recbole_metric(r, m) for r in converged])
        comparison["val ndcg@10"] = welch([r["val"]["ndcg@10"] for r in accuracy],
                                          [_recbole_metric(r, "ndcg@10", "val") for r in converged])
        lines += ["", "Difference of means, ours − RecBole, with Welch's 95% confidence interval:", "",
                  "| metric | ours − RecBole | 95% CI | p (two-sided) |", "|---|---:|---:|---:|"]
        for m, w in comparison.items():
            lines.append(f"| {'test ' + m if m in METRICS else m} | {w['difference']:+.4f} | "
                         f"[{w['ci_low']:+.4f}, {w['ci_high']:+.4f}] | {w['p_value']:.2f} |")
    lines += ["", "Per seed (test ndcg@10, test hit@10, best validation ndcg@10, best epoch):", "",
              "| side | seed | test ndcg@10 | test hit@10 | val ndcg@10 | best epoch / epochs |", "|---|---:|---:|---:|---:|---:|"]
    for r in accuracy:
        lines.append(f"| recsys | {r['seed']} | {r['test']['ndcg@10']:.4f} | {r['test']['hit@10']:.4f} | "
                     f"{r['val']['ndcg@10']:.4f} | {r['best_epoch']} / {r['epochs_run']} |")
    for r in converged:
        lines.append(f"| RecBole | {r['hyper_parameters']['seed']} | {_recbole_metric(r, 'ndcg@10'):.4f} | "
                     f"{_recbole_metric(r, 'hit@10'):.4f} | {_recbole_metric(r, 'ndcg@10', 'val'):.4f} | "
                     f"{r['best_epoch']} / {r['epochs_run']} |")
    if incomplete:
        lines += ["", "RecBole runs not complete, not counted: " + ", ".join(incomplete) + "."]
    lines += ["", f"RecBole's float32 timestamps change {len(ties['test'])} test and {len(ties['val'])} validation "
              "targets (user: ours -> RecBole's item): test "
              + ", ".join(f"{t['user']}: {t['ours']} -> {t['recbole']}" for t in ties["test"]) + "; validation "
              + ", ".join(f"{t['user']}: {t['ours']} -> {t['recbole']}" for t in ties["val"]) + "."]
    if accuracy:
        lines += ["", "## Our default protocol (history masked), same checkpoints", "",
                  "| model | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS),
                  f"| recsys SASRec, seeds {ours_seeds} | "
                  + " | ".join(fmt([r['test_masked'][m] for r in accuracy]) for m in METRICS) + " |"]
    if converged and accuracy:
        ratio = (statistics.mean(r["wall_seconds_to_best"] for r in converged)
                 / statistics.mean(r["wall_seconds_to_best"] for r in accuracy))
        lines += ["", f"Wall-clock to the early-stopped best model (means over seeds): RecBole / ours = {ratio:.1f}x."]
    table = "\n".join(lines)
    print("\n" + table)
    report = {"commands": command, **{name: getattr(args, name) for name in settings},
              "ours_speed": ours_speed, "recbole_speed": recbole_speed, "ours_accuracy": accuracy,
              "recbole_converged": [{k: r.get(k) for k in (
                  "file", "command", "epochs_run", "best_epoch", "best_valid_metrics", "test_metrics",
                  "wall_seconds_to_best", "median_epoch_train_seconds", "train_targets_per_epoch")}
                  | {"seed": r["hyper_parameters"]["seed"]} for r in converged],
              "recbole_not_complete": incomplete, "ours_minus_recbole": comparison,
              "timestamp_targets_changed_by_recbole_float32": ties, "table": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
