"""Built-in sequential models on MovieLens-100k: recsys against RecBole 1.2.1, same split and hyper-parameters.

``--model`` is one of SASRec (the default; its layout and options are unchanged), GRU4Rec, NARM,
Caser, CORE, BERT4Rec. Our side trains ``configs/ml-100k/<model>.yaml`` (model and data
settings as written there) with ``data.mask_history=false`` and ``data.tie_break=file``; RecBole's
side is ``benchmarks/recbole_side.py --model <Model>`` (RecBole's defaults for the model, with the
same values as our config where it differs; recbole_side.py's ``MODELS`` lists them). The settings
that differ per model are in one table, ``MODELS`` below. Prints one table and writes
``benchmarks/results/recbole_parity.json`` (SASRec) or ``recbole_parity_<model>.json``.

Two parts:

1. **Speed, side by side in this run.** A few epochs of RecBole's model (through
   ``benchmarks/recbole_side.py``, in RecBole's own virtualenv, ``--recbole-python``) and of
   ours, one after the other, each in its own process with the same thread count. Reported:
   training throughput in labelled next-item targets per second, seconds per training epoch,
   seconds per full-ranking evaluation of all users, peak RSS, and the ratios. Targets are what
   each side's loss covers, counted while it trains: ours by wrapping the model's ``item_loss``
   (one row per target: our windows' ``labels``, or one per window for Caser's ``every``
   windows, or BERT4Rec's masked positions), RecBole's by wrapping ``calculate_loss`` (one per
   (prefix, next item) row, or BERT4Rec's masked positions, ``MASK_INDEX > 0``). Context
   positions of overlapping windows are not targets. BERT4Rec's masks are random, so its count
   is each epoch's actual count (the mean over the timed epochs is reported).
2. **Accuracy at convergence.** Ours trained with early stopping on validation NDCG@10 for each
   ``--seeds``; RecBole's converged runs are slow here, so they are run separately
   (``recbole_side.py --model M --epochs 300 --seed N ...``) and every complete
   ``benchmarks/results/recbole_<model>_ml-100k*.json`` is read back (each records its command
   and versions). The table gives per-seed numbers of both sides and the difference of means
   (ours - RecBole) with Welch's 95% confidence interval.

Protocol: RecBole ranks the target against all items and does *not* mask the user's history
for sequential models, and keeps file order for equal timestamps; the parity rows therefore
use ``data.mask_history=false`` and ``data.tie_break=file``. The same checkpoints are also
tested with history masking (our default protocol) and reported beside.

Hyper-parameters (SASRec, both): d=64, 2 layers, 2 heads, inner 256, dropout 0.5/0.5, L=50, Adam lr
1e-3, full cross-entropy, early stopping on validation NDCG@10 (other models: their configs). ``--patience`` is RecBole's
``stopping_step`` (10): RecBole stops when ``cur_step > stopping_step``, i.e. after 11
validations in a row without improvement, so our Lightning ``EarlyStopping`` gets
``patience + 1``; both count validation epochs (one per training epoch).

Known differences for SASRec, each named in docs/results.md (other models: ``MODELS[...]["notes"]``):

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
    python benchmarks/recbole_parity.py --model GRU4Rec --speed-only --speed-epochs 2
    python benchmarks/recbole_parity.py --model GRU4Rec --skip-speed --seeds 0 \
        --out benchmarks/results/recbole_parity_gru4rec_seed0.json   # one seed; merge with --accuracy-from
    python benchmarks/recbole_parity.py --model CORE --skip-speed --seeds 0 --train-stride 1 --batch-size 256 \
        --run-dir runs/parity --out ...   # a long run: started again, it goes on from its last epoch
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
METRICS = ("hit@10", "ndcg@10", "mrr@10", "hit@20", "ndcg@20")

# One row per model: our config (model + data settings, mask_history switched off here), the
# default output, and what differs from RecBole's implementation by design (read from both codes;
# the model files' docstrings give the reasons).
MODELS: dict[str, dict] = {
    "SASRec": dict(config="configs/ml-100k/sasrec.yaml", out="recbole_parity.json", notes=[
        "positions: ours position_alignment right by default (RecBole: left, --position-alignment left)",
        "PAD id in RecBole's training softmax, not in ours (--pad-in-softmax)",
    ]),
    "GRU4Rec": dict(config="configs/ml-100k/gru4rec.yaml", notes=[
        "PAD id in RecBole's training softmax, not in ours",
    ]),
    "NARM": dict(config="configs/ml-100k/narm.yaml", notes=[
        "embedding dropout drawn once per window (shared by its prefixes) here, once per prefix in RecBole",
        "PAD id in RecBole's training softmax, not in ours",
    ]),
    "Caser": dict(config="configs/ml-100k/caser.yaml", notes=[
        "L = 5 on both sides (RecBole's MAX_ITEM_LIST_LENGTH set to our config's max_len)",
        "histories shorter than L: left-padded here, right-padded in RecBole; RecBole's PAD row is a "
        "fixed N(0, 1/d) vector (its init overwrites the padding row), ours zero",
        "PAD id in RecBole's training softmax, not in ours",
    ]),
    "CORE": dict(config="configs/ml-100k/core.yaml", notes=[
        "PAD id in RecBole's training softmax, not in ours",
    ]),
    "BERT4Rec": dict(config="configs/ml-100k/bert4rec.yaml", notes=[
        "training data: ours 50-item windows 5 apart (the config; 10 before 2026-12-07) with the target appended (a cloze position like "
        "any other), RecBole every (prefix) row with its own target never used",
        "masking: ours exactly max(1, round(0.2 n)) positions per window, or (ft_ratio, per window) only "
        "the last; RecBole Bernoulli(0.2) per item, at most the newest 10 kept, index 0 dropped, or "
        "(ft_ratio, per batch) the prefix's last item",
        "inference: RecBole drops the oldest item of every history (mask appended, first column cut), "
        "ours only when the history fills max_len",
        "PAD id in RecBole's training softmax, not in ours",
    ]),
}


def model_settings(name: str) -> dict:
    """The model's row of ``MODELS`` with its config's model / data ``init_args`` read in."""
    import yaml

    row = dict(MODELS[name])
    config = yaml.safe_load((ROOT / row["config"]).read_text())
    row["class_name"] = config["model"]["class_path"].rsplit(".", 1)[-1]
    row["model_args"] = dict(config["model"].get("init_args") or {})
    row["data_args"] = dict(config["data"].get("init_args") or {})
    row.setdefault("out", f"recbole_parity_{name.lower()}.json")
    row["recbole_glob"] = f"recbole_{name.lower()}_ml-100k*.json"
    return row


# ---- our side, run in a subprocess (clean peak RSS, same thread settings as RecBole) --------


def run_ours(model_name: str, seed: int, max_epochs: int, patience: int, threads: int, out: str, workdir: str,
             batch_size: int | None, train_stride: int | None, position_alignment: str, pad_in_softmax: bool) -> None:
    import resource

    import torch

    torch.set_num_threads(threads)
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from recsys import SeqDataModule
    from recsys.plugins import get_models

    settings = model_settings(model_name)
    model_class = get_models()[settings["class_name"]].obj
    model_args = dict(settings["model_args"])
    if model_name == "SASRec":
        model_args["position_alignment"] = position_alignment
        if pad_in_softmax:
            model_class = _pad_in_softmax(model_class)
    elif pad_in_softmax:
        raise SystemExit("--pad-in-softmax is a SASRec ablation")
    data_args = dict(settings["data_args"], mask_history=False, tie_break="file")
    if batch_size is not None:
        data_args["batch_size"] = batch_size
    if train_stride is not None and "train_stride" in data_args:
        data_args["train_stride"] = train_stride

    targets_seen = {"n": 0}

    class Timer(pl.Callback):
        """Per-epoch seconds, targets and validation NDCG@10; kept in checkpoints, so a resumed
        run reports every epoch once (the seconds before a stop included)."""

        def __init__(self):
            self.train, self.val, self.val_ndcg, self.targets = [], [], [], []
            self.resumed: list[dict] = []
            self.elapsed_before = 0.0  # wall seconds of the attempts before this one

        def state_dict(self):
            return {"train": self.train, "val": self.val, "val_ndcg": self.val_ndcg, "targets": self.targets,
                    "resumed": self.resumed, "elapsed": self.elapsed_before + time.perf_counter() - started}

        def load_state_dict(self, state):
            self.train, self.val, self.val_ndcg, self.targets = (
                state["train"], state["val"], state["val_ndcg"], state["targets"])
            self.elapsed_before = state["elapsed"]
            self.resumed = [*state["resumed"], {"after_epoch": len(state["train"]) - 1}]

        def on_train_epoch_start(self, trainer, module):
            targets_seen["n"] = 0
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.train.append(time.perf_counter() - self._t)
            self.targets.append(targets_seen["n"])

        def on_validation_epoch_start(self, trainer, module):
            self._v = time.perf_counter()

        def on_validation_end(self, trainer, module):
            # After the module's own epoch-end hook has logged the epoch's metrics.
            if not trainer.sanity_checking:
                self.val.append(time.perf_counter() - self._v)
                self.val_ndcg.append(float(trainer.callback_metrics["val/ndcg@10"]))

    pl.seed_everything(seed, verbose=False)
    started = time.perf_counter()
    data = SeqDataModule(**data_args)
    model = model_class(data.num_items, **model_args)
    if hasattr(model, "item_loss"):
        # Count the rows the training loss covers (labels; BERT4Rec's masked positions), per epoch.
        item_loss = model.item_loss

        def counted_item_loss(hidden, labels, *rest, **kwargs):
            if model.training:
                targets_seen["n"] += int(labels.numel())
            return item_loss(hidden, labels, *rest, **kwargs)

        model.item_loss = counted_item_loss
    timer = Timer()
    checkpoint = ModelCheckpoint(dirpath=workdir, monitor="val/ndcg@10", mode="max", filename="best",
                                 enable_version_counter=False)
    # last.ckpt after every epoch: run again with the same --run-dir, the fit goes on from it
    # (the model's checkpoint carries its random state, so the epochs after it are the same).
    last = ModelCheckpoint(dirpath=workdir, monitor=None, filename="last", save_top_k=1, enable_version_counter=False)
    resume, fitted = Path(workdir) / "last.ckpt", Path(workdir) / "fit.done"
    if fitted.exists():
        # Stopped after the fit, in the evaluation: from last.ckpt the fit would train past its
        # early stop (Lightning does not save should_stop), so it restores and stops at that epoch.
        max_epochs = torch.load(resume, map_location="cpu", weights_only=True)["epoch"] + 1
    trainer = pl.Trainer(
        max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=workdir,
        # `patience` is RecBole's stopping_step: RecBole stops once `cur_step > stopping_step`, i.e.
        # after stopping_step + 1 validations without improvement; Lightning stops once
        # `wait_count >= patience`. Both count validation epochs.
        callbacks=[timer, checkpoint, last, EarlyStopping(monitor="val/ndcg@10", mode="max", patience=patience + 1)],
    )
    if resume.exists():
        print(f"resuming from {resume}" + (" (the fit had ended: no epoch more)" if fitted.exists() else ""), flush=True)
    trainer.fit(model, datamodule=data, ckpt_path=str(resume) if resume.exists() else None)
    fitted.touch()
    loader = data.train_dataloader()
    windows = loader.dataset
    batch = windows.__getitems__(range(len(windows)))
    # Targets = the positions the loss covers, counted while training (`labels`, each training
    # target once per epoch; one per window for `every` windows; BERT4Rec's masked positions).
    # Overlapping windows (stride < L) also run the encoder over context positions that are
    # another window's targets; those are counted apart, not as targets.
    label_targets = int((batch.labels != 0).sum()) if batch.labels is not None else int((batch.target != 0).sum())
    counted = [n for n in timer.targets if n]
    targets = statistics.mean(counted) if counted else label_targets
    best_epoch = max(range(len(timer.val_ndcg)), key=lambda i: timer.val_ndcg[i])
    result = {
        "model": model_name, "config": settings["config"], "model_args": model_args, "data_args": data_args,
        "seed": seed, "threads": threads, "position_alignment": model_args.get("position_alignment"),
        "pad_in_softmax": pad_in_softmax, "batch_size": data_args.get("batch_size"),
        "train_stride": data_args.get("train_stride"), "train_windows": data._resolved_train_windows(),
        "lightning_patience": patience + 1,
        "epochs_run": len(timer.train), "best_epoch": best_epoch,
        "epoch_train_seconds": timer.train, "epoch_eval_seconds": timer.val, "epoch_val_ndcg@10": timer.val_ndcg,
        "epoch_train_targets": timer.targets,
        "train_targets_per_epoch": targets,
        "window_label_targets_per_epoch": label_targets,
        "train_windows_per_epoch": len(windows),
        "train_steps_per_epoch": len(loader),
        "history_positions_per_epoch": int((batch.history != 0).sum()),
        "wall_seconds_to_best": sum(timer.train[: best_epoch + 1]) + sum(timer.val[: best_epoch + 1]),
        "wall_seconds_total": timer.elapsed_before + time.perf_counter() - started,
        "resumed": timer.resumed,
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
    masked = SeqDataModule(**dict(data_args, mask_history=True))
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


def ours(model_name: str, seed: int, max_epochs: int, patience: int, threads: int, batch_size: int | None,
         train_stride: int | None, position_alignment: str, pad_in_softmax: bool, run_dirs: Path | None = None) -> dict:
    """One run of our side in its own process; with ``run_dirs``, its checkpoints stay in a folder
    there named after the run, and the run goes on from its last epoch when started again."""
    if run_dirs is not None:
        run_dir = run_dirs / "-".join([
            model_name.lower(), f"seed{seed}", *([f"stride{train_stride}"] if train_stride else []), f"batch{batch_size}",
            *([position_alignment] if position_alignment == "left" else []),
            *(["pad-in-softmax"] if pad_in_softmax else [])])
        # A kept run goes on only with the settings it started with (a changed patience would be
        # overridden by the checkpoint's early-stopping state; other threads would mix timings).
        settings = {"model": model_name, "seed": seed, "max_epochs": max_epochs, "patience": patience,
                    "threads": threads, "batch_size": batch_size, "train_stride": train_stride,
                    "position_alignment": position_alignment, "pad_in_softmax": pad_in_softmax}
        saved = run_dir / "settings.json"
        if saved.exists():
            before = json.loads(saved.read_text())
            changed = sorted(k for k in settings if before.get(k) != settings[k])
            if changed:
                raise SystemExit(f"{run_dir}: started with other settings ({', '.join(f'{k} {before.get(k)!r}' for k in changed)}); "
                                 "give another --run-dir, or delete this one to start over")
        if (run_dir / "ours.json").exists():  # finished
            return json.loads((run_dir / "ours.json").read_text())
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(settings, indent=2))
    with tempfile.TemporaryDirectory() if run_dirs is None else contextlib.nullcontext(str(run_dir)) as tmp:
        out = Path(tmp) / "ours.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        subprocess.run(
            [sys.executable, __file__, "--worker", "--model", model_name, "--seed", str(seed),
             "--max-epochs", str(max_epochs),
             "--patience", str(patience), "--threads", str(threads), "--out", str(out), "--workdir", tmp,
             *(["--batch-size", str(batch_size)] if batch_size else []),
             *(["--train-stride", str(train_stride)] if train_stride else []),
             *(["--position-alignment", position_alignment] if position_alignment else []),
             *(["--pad-in-softmax"] if pad_in_softmax else [])],
            check=True, env=env,
        )
        return json.loads(out.read_text())


def recbole(model_name: str, python: str, epochs: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recbole.json"
        subprocess.run(
            [python, str(HERE / "recbole_side.py"), "--model", model_name, "--epochs", str(epochs), "--seed", "2020",
             "--threads", str(threads), "--out", str(out), "--workdir", tmp],
            check=True, stdout=subprocess.DEVNULL,
        )
        return json.loads(out.read_text())


# ---- report --------------------------------------------------------------------------------


def _median(values):
    return statistics.median(values) if values else float("nan")


def recbole_converged_runs(pattern: str) -> list[dict]:
    """Every complete converged RecBole run (``recbole_<model>_ml-100k*.json``), by seed."""
    runs = []
    for path in sorted(RESULTS.glob(pattern)):
        run = json.loads(path.read_text())
        if run.get("complete") and run.get("test_metrics"):
            run["file"] = str(path.relative_to(HERE.parent))
            runs.append(run)
    return sorted(runs, key=lambda r: r["hyper_parameters"]["seed"])


def recbole_incomplete_runs(pattern: str) -> list[str]:
    """Runs still going or cut off: how far they got and their best validation NDCG@10 so far."""
    notes = []
    for path in sorted(RESULTS.glob(pattern)):
        run = json.loads(path.read_text())
        if run.get("complete"):
            continue
        curve = [m["ndcg@10"] for m in run.get("epoch_valid_metrics") or []]
        best = (f", best val ndcg@10 so far {max(curve):.4f} at epoch {curve.index(max(curve))}" if curve else "")
        notes.append(f"{path.name} ({len(run.get('epoch_train_seconds', []))} epochs so far{best})")
    return notes


def validation_curves(accuracy: list[dict], pattern: str) -> list[str]:
    """Mean validation NDCG@10 per epoch, ours against every RecBole run (complete or not), so runs
    cut off before convergence can still be compared epoch by epoch (one epoch = every training
    target once on both sides; BERT4Rec's epochs cover different numbers of masked targets)."""
    ours = [r["epoch_val_ndcg@10"] for r in accuracy if r.get("epoch_val_ndcg@10")]
    theirs = [[m["ndcg@10"] for m in json.loads(p.read_text()).get("epoch_valid_metrics") or []]
              for p in sorted(RESULTS.glob(pattern))]
    theirs = [c for c in theirs if c]
    if not ours or not theirs:
        return []
    epochs = min(max(len(c) for c in theirs), max(len(c) for c in ours), 40)
    lines = ["| epoch | recsys val ndcg@10 (runs) | RecBole val ndcg@10 (runs) |", "|---:|---:|---:|"]
    for e in range(epochs):
        mine = [c[e] for c in ours if len(c) > e]
        other = [c[e] for c in theirs if len(c) > e]
        cell = lambda v: f"{statistics.mean(v):.4f} ({len(v)})" if v else ""  # noqa: E731
        lines.append(f"| {e} | {cell(mine)} | {cell(other)} |")
    return lines


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
    parser.add_argument("--model", choices=tuple(MODELS), default="SASRec",
                        help="which built-in model (our side: MODELS[model]['config'])")
    parser.add_argument("--speed-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patience", type=int, default=10,
                        help="RecBole's stopping_step: stop after patience + 1 validations without improvement")
    parser.add_argument("--max-epochs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="our training windows per batch (default: the model's config)")
    parser.add_argument("--train-stride", type=int, default=None,
                        help="distance between our training windows (default: the model's config)")
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
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="keep our accuracy runs' checkpoints in RUN_DIR/<model>-seed<N>[-stride<S>]-batch<B>[-ablation]; "
                             "run again, each goes on from its last epoch (for runs longer than a sitting)")
    parser.add_argument("--out", default=None,
                        help="default benchmarks/results/recbole_parity.json (SASRec), recbole_parity_<model>.json")
    # internal: one run of our side
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    settings = model_settings(args.model)
    if args.batch_size is None:
        args.batch_size = settings["data_args"].get("batch_size")
    if args.train_stride is None:
        args.train_stride = settings["data_args"].get("train_stride")
    if args.model != "SASRec":
        args.position_alignment = None  # SASRec's option only
    if args.out is None:
        args.out = str(RESULTS / settings["out"])
    if args.worker:
        run_ours(args.model, args.seed, args.max_epochs, args.patience, args.threads, args.out, args.workdir,
                 args.batch_size, args.train_stride, args.position_alignment, args.pad_in_softmax)
        return

    saved = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    saved_settings = ("model", "threads", "seeds", "batch_size", "train_stride", "position_alignment", "pad_in_softmax", "patience")
    command = saved.get("commands", {})
    if isinstance(command, str):
        command = {}
    if args.report_only:
        ours_speed, recbole_speed, accuracy = saved.get("ours_speed"), saved.get("recbole_speed"), saved["ours_accuracy"]
        for name in saved_settings:
            setattr(args, name, saved.get(name, getattr(args, name)))
    else:
        invocation = " ".join(["python", *sys.argv])
        ours_speed, recbole_speed = saved.get("ours_speed"), saved.get("recbole_speed")
        accuracy = saved.get("ours_accuracy", [])
        if not args.skip_speed:
            command["speed"] = invocation
            print(f"speed: {args.speed_epochs} epochs each, {args.threads} thread(s), one after the other", flush=True)
            load_before = os.getloadavg()  # the ratios are only as clean as the machine was idle
            ours_speed = ours(args.model, 0, args.speed_epochs, 10**6, args.threads, args.batch_size, args.train_stride,
                              args.position_alignment, args.pad_in_softmax)
            ours_speed["load_average_before"] = load_before
            recbole_speed = None
            if not args.skip_recbole_speed:
                load_before = os.getloadavg()
                recbole_speed = recbole(args.model, args.recbole_python, args.speed_epochs, args.threads)
                recbole_speed["load_average_before"] = load_before
        if args.accuracy_from:
            # Our per-seed runs, made by separate invocations (e.g. one seed each), merged.
            command["accuracy"] = invocation
            accuracy = [run for path in args.accuracy_from for run in json.loads(Path(path).read_text())["ours_accuracy"]]
            first = accuracy[0]
            for name in ("model", "batch_size", "train_stride", "position_alignment", "pad_in_softmax"):
                values = {run.get(name, "SASRec" if name == "model" else None) for run in accuracy}
                if len(values) != 1:
                    raise SystemExit(f"--accuracy-from: runs differ in {name}: {sorted(values)}")
                setattr(args, name, first[name])
            args.patience = first["lightning_patience"] - 1
            args.seeds = [run["seed"] for run in accuracy]
        elif args.speed_only:
            for name in saved_settings:
                setattr(args, name, saved.get(name, getattr(args, name)))
        else:
            command["accuracy"] = invocation
            accuracy = []
            for seed in args.seeds:
                print(f"accuracy: ours, seed {seed}, to convergence", flush=True)
                accuracy.append(ours(args.model, seed, args.max_epochs, args.patience, args.threads, args.batch_size,
                                     args.train_stride, args.position_alignment, args.pad_in_softmax, args.run_dir))
                run = accuracy[-1]
                Path(args.out + ".partial").write_text(json.dumps({"ours_accuracy": accuracy}, indent=2))
                print(f"seed {seed}: val ndcg@10 {run['val']['ndcg@10']:.4f}, test ndcg@10 {run['test']['ndcg@10']:.4f}, "
                      f"best epoch {run['best_epoch']} of {run['epochs_run']}, "
                      f"median epoch {_median(run['epoch_train_seconds']):.1f} s", flush=True)
    converged = recbole_converged_runs(settings["recbole_glob"])
    incomplete = recbole_incomplete_runs(settings["recbole_glob"])
    ties = timestamp_ties()

    lines = []
    if ours_speed:
        windows = (f"stride {ours_speed.get('train_stride', args.train_stride)}"
                   if ours_speed.get("train_windows", "tiled") == "tiled" else "one window per target")
        same = bool(recbole_speed) and recbole_speed["train_targets_per_epoch"] == ours_speed["train_targets_per_epoch"]
        counted = (f"{ours_speed['train_targets_per_epoch']:,.0f} per epoch" + (" on both sides" if same else
                   f" ours, {recbole_speed['train_targets_per_epoch']:,.0f} RecBole's" if recbole_speed else ""))
        lines += [f"## {args.model}: speed (same machine, same run, {args.threads} thread(s))",
                  f"(ours: batch {ours_speed.get('batch_size', args.batch_size)} windows, {windows}, "
                  f"{ours_speed.get('train_steps_per_epoch', '?')} steps per epoch; RecBole: batch "
                  f"{recbole_speed['hyper_parameters']['train_batch_size'] if recbole_speed else '?'} pairs, "
                  f"{recbole_speed['data']['train_batches_per_epoch'] if recbole_speed else '?'} steps per epoch; "
                  f"targets = {'masked (cloze) positions' if args.model == 'BERT4Rec' else 'next-item targets'} "
                  f"in the loss, counted while training: {counted})", "",
                  "| measure | recsys | RecBole 1.2.1 | ratio |", "|---|---:|---:|---:|"]
        for name, mine, theirs in speed_rows(ours_speed, recbole_speed):
            if theirs is None:
                lines.append(f"| {name} | {mine:.3f} | n/a | n/a |")
            else:
                ratio = mine / theirs if "throughput" in name else theirs / mine
                lines.append(f"| {name} | {mine:.3f} | {theirs:.3f} | {ratio:.1f}x |")
        lines.append(f"| full-ranking of all {ours_speed['users_evaluated']} users, no Trainer (s) | "
                     f"{ours_speed['rank_all_users_seconds']:.4f} | | |")
        if recbole_speed:
            ratio = speed_rows(ours_speed, recbole_speed)[0]
            lines += ["", f"Bar (issue 19): throughput ratio {ratio[1] / ratio[2]:.1f}x >= 10x: "
                      f"{'met' if ratio[1] >= 10 * ratio[2] else 'NOT met'}."]
        lines += ["", "Ratios: throughput = ours / RecBole; times and memory = RecBole / ours (higher = ours better).",
                  f"Our encoder also runs over {ours_speed.get('history_positions_per_epoch', 0):,} history "
                  "positions per epoch (windows overlap), RecBole's over every pair's whole prefix.", ""]

    def fmt(values, digits=4):
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    recbole_seeds = [r["hyper_parameters"]["seed"] for r in converged]
    ours_seeds = [r["seed"] for r in accuracy]
    setting = (f"{settings['config']}, batch {args.batch_size} windows"
               + (f", stride {args.train_stride}" if args.train_stride else "")
               + (f", position_alignment {args.position_alignment}, PAD "
                  f"{'in' if args.pad_in_softmax else 'not in'} the training softmax" if args.model == "SASRec" else ""))
    lines += [f"## {args.model}: accuracy at convergence (test, loo, no history masking, file-order ties)", "",
              f"(ours: {setting}; early stopping after {args.patience + 1} validations without improvement on "
              f"both sides; mean ± standard deviation over seeds)", "",
              "| model | seeds | " + " | ".join(METRICS) + " | val ndcg@10 | epochs (best) | s to best |",
              "|---|---|" + "---:|" * (len(METRICS) + 3)]
    if accuracy:
        lines.append(
            f"| recsys {args.model} | {len(accuracy)}: {ours_seeds} | "
            + " | ".join(fmt([r['test'][m] for r in accuracy]) for m in METRICS)
            + f" | {fmt([r['val']['ndcg@10'] for r in accuracy])}"
            + f" | {fmt([r['epochs_run'] for r in accuracy], 1)} ({fmt([r['best_epoch'] for r in accuracy], 1)}) | "
            f"{fmt([r['wall_seconds_to_best'] for r in accuracy], 0)} |")
    if converged:
        lines.append(
            f"| RecBole {args.model} | {len(converged)}: {recbole_seeds} | "
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
        w = comparison["ndcg@10"]
        lines += ["", f"Bar (issue 19): ours − RecBole test ndcg@10 = {w['difference']:+.4f} >= −1 combined standard "
                  f"error (−{w['standard_error']:.4f}): {'met' if w['difference'] >= -w['standard_error'] else 'NOT met'}."]
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
    curves = validation_curves(accuracy, settings["recbole_glob"])
    if curves and (incomplete or args.model != "SASRec"):
        lines += ["", "Validation NDCG@10 by epoch (0 = after the first), mean over the runs that reached it, "
                  "complete or not:", "", *curves]
    lines += ["", f"RecBole's float32 timestamps change {len(ties['test'])} test and {len(ties['val'])} validation "
              "targets (user: ours -> RecBole's item): test "
              + ", ".join(f"{t['user']}: {t['ours']} -> {t['recbole']}" for t in ties["test"]) + "; validation "
              + ", ".join(f"{t['user']}: {t['ours']} -> {t['recbole']}" for t in ties["val"]) + "."]
    if accuracy:
        lines += ["", "## Our default protocol (history masked), same checkpoints", "",
                  "| model | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS),
                  f"| recsys {args.model}, seeds {ours_seeds} | "
                  + " | ".join(fmt([r['test_masked'][m] for r in accuracy]) for m in METRICS) + " |"]
    if converged and accuracy:
        ratio = (statistics.mean(r["wall_seconds_to_best"] for r in converged)
                 / statistics.mean(r["wall_seconds_to_best"] for r in accuracy))
        lines += ["", f"Wall-clock to the early-stopped best model (means over seeds): RecBole / ours = {ratio:.1f}x."]
    table = "\n".join(lines)
    print("\n" + table)
    report = {"commands": command, **{name: getattr(args, name) for name in saved_settings},
              "model_notes": settings["notes"],
              "ours_speed": ours_speed, "recbole_speed": recbole_speed, "ours_accuracy": accuracy,
              "recbole_converged": [{k: r.get(k) for k in (
                  "file", "command", "epochs_run", "best_epoch", "best_valid_metrics", "test_metrics",
                  "wall_seconds_to_best", "median_epoch_train_seconds", "train_targets_per_epoch")}
                  | {"seed": r["hyper_parameters"]["seed"]} for r in converged],
              "recbole_not_complete": incomplete, "ours_minus_recbole": comparison,
              "timestamp_targets_changed_by_recbole_float32": ties, "table": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    Path(args.out + ".partial").unlink(missing_ok=True)  # the seeds done so far: all in args.out now
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
