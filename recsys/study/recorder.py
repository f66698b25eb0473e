"""The callback a study adds to each run: what the report needs, written as the run goes.

Added by the runner as ``--trainer.callbacks+={"class_path": "recsys.study.RunRecorder", ...}``,
so the run stays an ordinary ``recsys fit`` (its config.yaml shows the callback). It can be added
to any run by hand too.
"""

from __future__ import annotations

import hashlib
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from recsys.study.records import RANKS, RECORD, write_json, write_ranks


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class RunRecorder(pl.Callback):
    """Writes ``record.json`` and ``ranks.csv`` into the trainer's ``default_root_dir``.

    select: the validation metric the study selects on; the run's checkpoint callback must
        monitor the same one (else the "selected epoch" would not be the one tested), checked
        at the start of fit.
    """

    def __init__(self, select: str = "val/ndcg@10", select_mode: str = "max"):
        self.select, self.select_mode = select, select_mode
        self.record: dict[str, Any] = {"select": select, "select_mode": select_mode, "epochs": [], "status": "running"}
        self._fit_start = self._epoch_start = self._test_start = 0.0
        self._train_seconds = 0.0
        self._restored: dict[str, Any] | None = None  # the state of the checkpoint a fit resumes from

    # ---- resuming (``recsys fit --ckpt_path last``) ------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint (after this epoch's entry: Lightning runs checkpointing last)."""
        return {"record": self.record, "elapsed_s": time.perf_counter() - self._fit_start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning calls this for every checkpoint it restores, a test's too (after fit, or in
        # ``recsys test``): only a fit that resumes applies it, in on_fit_start; or, with the
        # strategies that restore after setup (DeepSpeed, FSDP: after on_fit_start), in on_train_start.
        self._restored = dict(state_dict)

    def _resume(self) -> float:
        """Keep the epochs recorded up to the checkpoint a fit resumes from; returns the fit
        seconds they took. Seconds the attempt that died spent after that checkpoint are not
        counted: the new attempt does that work again, and counts it."""
        state, self._restored = self._restored, None
        if state is None:
            return 0.0
        epochs = state["record"].get("epochs") or []
        resumed = [*state["record"].get("resumed", []),
                   {"after_epoch": epochs[-1]["epoch"] if epochs else None, "elapsed_s": float(state["elapsed_s"])}]
        self.record = {**state["record"], "status": "running", "resumed": resumed}
        return float(state["elapsed_s"])

    # ---- fit -------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]  # type: ignore[attr-defined]
        monitors = {c.monitor for c in checkpoints if c.monitor}
        if monitors and monitors != {self.select}:
            raise ValueError(f"the study selects on {self.select!r} but the run's checkpoint monitors "
                             f"{sorted(monitors)}: set the study's select (or the config's monitor) to match")
        modes = {c.mode for c in checkpoints if c.monitor}
        if modes and modes != {self.select_mode}:  # else the tested checkpoint is the worst, not the selected
            raise ValueError(f"the study selects the {self.select_mode} of {self.select!r} but the run's checkpoint "
                             f"keeps the {sorted(modes)} one: set the study's select_mode (or the config's mode) "
                             "to match")
        self._start(trainer, pl_module, self._resume())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored is not None:  # restored after on_fit_start (DeepSpeed, FSDP)
            self._start(trainer, pl_module, self._resume())

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, elapsed_before: float) -> None:
        """What the record says of the fit as it starts; ``elapsed_before``: the fit seconds of the
        epochs a resumed run keeps."""
        params = list(pl_module.parameters())
        datamodule = getattr(trainer, "datamodule", None)
        self.record.update(
            model=type(pl_module).__qualname__, model_class=f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            params_total=sum(p.numel() for p in params), params_trainable=sum(p.numel() for p in params if p.requires_grad),
            device=str(pl_module.device), accelerator=type(trainer.accelerator).__name__,
            max_epochs=trainer.max_epochs, data=self._data_settings(datamodule),
            data_class=type(datamodule).__qualname__ if datamodule is not None else None)
        self._fit_start = time.perf_counter() - elapsed_before
        self._write(trainer)

    @staticmethod
    def _data_settings(datamodule: Any) -> dict[str, Any]:
        """The data module's arguments, with settings its protocol resolved (e.g. mask_history
        None -> the protocol's default) as the run used them."""
        if datamodule is None:
            return {}
        settings = dict(datamodule.hparams)
        for name in ("mask_history",):
            if hasattr(datamodule, name):
                settings[name] = getattr(datamodule, name)
        return settings

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # validation runs inside the training epoch: the epoch's training time ends here
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.record["epochs"].append({"epoch": trainer.current_epoch, "train_s": self._train_seconds,
                                      "elapsed_s": time.perf_counter() - self._fit_start, "val": metrics})
        self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs = [e for e in self.record["epochs"] if self.select in e["val"]]
        if epochs:
            pick = max if self.select_mode == "max" else min
            best = pick(epochs, key=lambda e: e["val"][self.select])  # the first of equals, as checkpoints do
            self.record.update(best_epoch=best["epoch"], best_score=best["val"][self.select],
                               seconds_to_best=best["elapsed_s"], epochs_run=len(self.record["epochs"]))
            train = [e["train_s"] for e in self.record["epochs"] if e["train_s"] > 0]
            self.record["train_s_per_epoch"] = sum(train) / len(train) if train else None
        self.record.update(fit_s=time.perf_counter() - self._fit_start, status="fitted",
                           stopped_early=trainer.current_epoch + 1 < (trainer.max_epochs or 0))
        self._write(trainer)

    # ---- test ------------------------------------------------------------------------------------

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_start = time.perf_counter()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["test_s"] = time.perf_counter() - self._test_start
        self.record["test"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        evaluated = getattr(pl_module, "evaluated_ranks", None)
        rows = evaluated("test") if callable(evaluated) else None
        if rows is not None and trainer.is_global_zero:
            frame = self._ranks_frame(trainer, rows)
            write_ranks(_root(trainer) / RANKS, frame)
            # Two runs were tested on the same split iff they saw the same (window, user) pairs.
            pairs = "\n".join(f"{w},{u}" for w, u in zip(frame["window"], frame["user"]))
            self.record.update(test_windows=len(frame), split_hash=hashlib.sha256(pairs.encode()).hexdigest()[:16])
        self.record["status"] = "tested"
        self._write(trainer)

    @staticmethod
    def _ranks_frame(trainer: pl.Trainer, rows: torch.Tensor) -> pd.DataFrame:
        """(n, 4) (window, rank, cold, user index) rows -> the ranks file's frame, users by raw id."""
        datamodule = getattr(trainer, "datamodule", None)
        users = getattr(getattr(datamodule, "data", None), "users", None)
        user_ids = [users.token(int(u)) if users is not None else str(int(u)) for u in rows[:, 3].tolist()]
        return pd.DataFrame({"window": rows[:, 0].numpy(), "user": user_ids, "rank": rows[:, 1].numpy(),
                             "cold": rows[:, 2].bool().numpy()})

    # ---- output ----------------------------------------------------------------------------------

    def _write(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        self.record["peak_rss_mb"] = peak_rss_mb()
        if torch.cuda.is_available():
            self.record["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        write_json(_root(trainer) / RECORD, self.record)


def _root(trainer: pl.Trainer) -> Path:
    return Path(trainer.default_root_dir)
