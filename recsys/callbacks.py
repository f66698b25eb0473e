"""Callbacks the CLI wires in: writing top-K recommendations from ``recsys predict``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from recsys.data.atomic import atomic_path


class TopKWriter(BasePredictionWriter):
    """Writes each user's top-k items (raw id, title, score) after a ``predict`` run.

    Args:
        path: output file, ``.csv`` (one row per user and rank) or ``.jsonl`` (one line per
            user); default ``<log dir>/predictions.csv``.
        k: items per user.
    """

    def __init__(self, path: str | None = None, k: int = 10):
        super().__init__(write_interval="epoch")
        if k < 1:
            raise ValueError(f"predictions.k must be >= 1, got {k}")
        if path is not None and Path(path).suffix not in (".csv", ".jsonl"):
            raise ValueError(f"predictions.path must end in .csv or .jsonl, got {path!r}")
        self.path = path
        self.k = k

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.predict_k = self.k

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if not predictions:
            return
        data = trainer.datamodule.data
        users = torch.cat([p["user"] for p in predictions]).tolist()
        items = torch.cat([p["items"][:, : self.k] for p in predictions]).tolist()
        scores = torch.cat([p["scores"][:, : self.k] for p in predictions]).float().tolist()
        path = Path(self.path or Path(trainer.log_dir or ".") / "predictions.csv")
        titles = data.catalog.titles
        rows = []
        for user, row, row_scores in zip(users, items, scores):
            # Fewer unseen items than k: the list ends where the masked (-inf) items begin.
            kept = [(i, s) for i, s in zip(row, row_scores) if i > 0 and math.isfinite(s)]
            rows.append({"user_id": data.users.token(user), "items": [data.items.token(i) for i, _ in kept],
                         "titles": [titles[i] for i, _ in kept], "scores": [s for _, s in kept]})
        with atomic_path(path) as tmp:
            if path.suffix == ".jsonl":
                with open(tmp, "w", encoding="utf-8") as f:
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            else:
                flat = [
                    {"user_id": r["user_id"], "rank": rank, "item_id": item, "title": title, "score": score}
                    for r in rows
                    for rank, (item, title, score) in enumerate(zip(r["items"], r["titles"], r["scores"]), start=1)
                ]
                pd.DataFrame(flat, columns=["user_id", "rank", "item_id", "title", "score"]).to_csv(tmp, index=False)
        print(f"recsys: wrote top-{self.k} recommendations for {len(rows)} users to {path}")


class EpochTimer(pl.Callback):
    """Logs ``time/train_epoch_s``: wall-clock seconds of each training epoch (validation excluded)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("time/train_epoch_s", time.perf_counter() - self._start, on_epoch=True, on_step=False)
