"""Callbacks the CLI wires in: writing top-K recommendations from ``recsys predict``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from recsys.data.atomic import atomic_path


class TopKWriter(BasePredictionWriter):
    """Writes what a ``predict`` run returns, once, at its end.

    - Ranking models (``{"user", "items", "scores"}`` per batch): each user's top-k items (raw
      id, title, score).
    - CTR models (``{"user", "item", "prob"}``): each sample's click probability.
    - Models whose ``predict_step`` returns nothing (e.g. one that writes its own file): nothing.

    Args:
        path: output file, ``.csv`` (one row per user and rank, or per sample) or ``.jsonl``
            (one line per user, or per sample); default ``<log dir>/predictions.csv``.
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
        setattr(pl_module, "predict_k", self.k)  # read by the model's predict_step

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        predictions = [p for p in predictions if p is not None]
        if not predictions:
            return
        path = Path(self.path or Path(trainer.log_dir or ".") / "predictions.csv")
        flatten: Callable[[list[dict]], list[dict]]
        if all("items" in p for p in predictions):
            rows = self._top_k(trainer.datamodule.data, predictions)
            columns, flatten = ["user_id", "rank", "item_id", "title", "score"], self._per_rank
            what = f"top-{self.k} recommendations for {len(rows)} users"
        elif all("prob" in p for p in predictions):
            rows = self._probabilities(trainer.datamodule.data, predictions)
            columns, flatten = ["user_id", "item_id", "prob"], list
            what = f"click probabilities of {len(rows)} samples"
        else:
            print(f"recsys: predictions have keys {sorted(predictions[0])}, neither a top-k list nor click "
                  f"probabilities; nothing written to {path}")
            return
        with atomic_path(path) as tmp:
            if path.suffix == ".jsonl":
                with open(tmp, "w", encoding="utf-8") as f:
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            else:
                pd.DataFrame(flatten(rows), columns=columns).to_csv(tmp, index=False)
        print(f"recsys: wrote {what} to {path}")

    def _top_k(self, data, predictions) -> list[dict]:
        """One dict per user: raw item ids, titles and scores, best first."""
        users = torch.cat([p["user"] for p in predictions]).tolist()
        items = torch.cat([p["items"][:, : self.k] for p in predictions]).tolist()
        scores = torch.cat([p["scores"][:, : self.k] for p in predictions]).float().tolist()
        titles = data.catalog.titles
        rows = []
        for user, row, row_scores in zip(users, items, scores):
            # Fewer unseen items than k: the list ends where the masked (-inf) items begin.
            kept = [(i, s) for i, s in zip(row, row_scores) if i > 0 and math.isfinite(s)]
            rows.append({"user_id": data.users.token(user), "items": [data.items.token(i) for i, _ in kept],
                         "titles": [titles[i] for i, _ in kept], "scores": [s for _, s in kept]})
        return rows

    @staticmethod
    def _per_rank(rows: list[dict]) -> list[dict]:
        """CSV layout of top-k lists: one row per user and rank."""
        return [{"user_id": r["user_id"], "rank": rank, "item_id": item, "title": title, "score": score}
                for r in rows
                for rank, (item, title, score) in enumerate(zip(r["items"], r["titles"], r["scores"]), start=1)]

    @staticmethod
    def _probabilities(data, predictions) -> list[dict]:
        """One dict per CTR sample: raw user and item ids and the predicted probability."""
        users = torch.cat([p["user"] for p in predictions]).tolist()
        items = torch.cat([p["item"] for p in predictions]).tolist()
        probs = torch.cat([p["prob"] for p in predictions]).float().tolist()
        return [{"user_id": data.users.token(u), "item_id": data.items.token(i), "prob": p}
                for u, i, p in zip(users, items, probs)]
