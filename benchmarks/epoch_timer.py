"""Benchmark instrumentation: ``time/train_epoch_s`` in a run's metrics.csv.

Benchmarks add it to ``recsys fit`` runs with ``--trainer.callbacks+=epoch_timer.EpochTimer``
and ``benchmarks/`` on ``PYTHONPATH`` (``BENCHMARK_PATH`` below). It lived in ``recsys.callbacks``
until issue 17: it is measurement for this repository's benchmarks, not part of the product.
"""

import os
import time
from pathlib import Path

import lightning.pytorch as pl

CALLBACK = "--trainer.callbacks+=epoch_timer.EpochTimer"
BENCHMARK_PATH = str(Path(__file__).resolve().parent)


def with_benchmarks_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this folder first on PYTHONPATH, so a ``recsys`` subprocess can import the callback."""
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (BENCHMARK_PATH, env.get("PYTHONPATH")) if p)}


class EpochTimer(pl.Callback):
    """Logs ``time/train_epoch_s``: wall-clock seconds of each training epoch (validation excluded)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("time/train_epoch_s", time.perf_counter() - self._start, on_epoch=True, on_step=False)
