"""Progress for runs whose output is a file (``nohup``, Slurm, CI, ``recsys study``).

Lightning's bars draw in place on a terminal; written to a file, the rich bar prints nothing
until an epoch ends, so a 7-minute epoch is silent. :class:`LogProgress` replaces the bar there
with plain lines at a steady interval. The CLI uses it when standard output is not a terminal
and the run configures no progress bar of its own; put it in ``trainer.callbacks`` to use it
anywhere.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


def _value(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LogProgress(ProgressBar):
    """Plain progress lines, one per ``every_seconds`` (and per ``every_n_steps`` when set), and
    one per finished epoch with its validation metrics::

        epoch 3/200  step 120/270  loss 6.31  8.7 it/s  epoch ETA 0:00:17
        epoch 3/200 done in 0:00:31  val/ndcg@10 0.0776

    Args:
        every_seconds: a training line at least this often (seconds; 0 = never by time).
        every_n_steps: also a line every this many training steps (None = by time only).
        stream: where the lines go (default: standard output, flushed each line).
    """

    def __init__(self, every_seconds: float = 30.0, every_n_steps: int | None = None, stream: TextIO | None = None):
        super().__init__()
        if every_seconds < 0 or (every_n_steps is not None and every_n_steps < 1):
            raise ValueError(f"every_seconds must be >= 0 and every_n_steps >= 1 or null, got {every_seconds}, {every_n_steps}")
        self.every_seconds = every_seconds
        self.every_n_steps = every_n_steps
        self.stream = stream
        self._enabled = True
        self._epoch_start = self._last_line = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _say(self, text: str) -> None:
        if self._enabled and self.trainer.is_global_zero:
            print(text, file=self.stream or sys.stdout, flush=True)

    def _epoch(self, trainer: pl.Trainer) -> str:
        return f"epoch {trainer.current_epoch}/{trainer.max_epochs - 1}" if trainer.max_epochs and trainer.max_epochs > 0 \
            else f"epoch {trainer.current_epoch}"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_line = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now, step = time.monotonic(), batch_idx + 1
        by_steps = self.every_n_steps is not None and step % self.every_n_steps == 0
        by_time = self.every_seconds > 0 and now - self._last_line >= self.every_seconds
        if not (by_steps or by_time):
            return
        self._last_line = now
        total = self.total_train_batches
        rate = step / max(now - self._epoch_start, 1e-9)
        parts = [self._epoch(trainer), f"step {step}/{total if math.isfinite(total) else '?'}"]
        loss = self.get_metrics(trainer, pl_module).get("train/loss")
        if loss is not None:
            parts.append(f"loss {_value(loss)}")
        parts.append(f"{rate:.3g} it/s")
        if math.isfinite(total):
            parts.append(f"epoch ETA {_duration((total - step) / rate)}")
        self._say("  ".join(parts))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        shown = [f"{name} {_value(metrics[name])}" for name in self._monitored(trainer) if name in metrics]
        self._say("  ".join([f"{self._epoch(trainer)} done in {_duration(time.monotonic() - self._epoch_start)}", *shown]))

    @staticmethod
    def _monitored(trainer: pl.Trainer) -> list[str]:
        """The metrics the run selects or stops on (what a reader of the log waits for)."""
        names = [getattr(callback, "monitor", None) for callback in trainer.callbacks]  # type: ignore[attr-defined]
        return list(dict.fromkeys(name for name in names if isinstance(name, str)))
