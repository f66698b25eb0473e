"""Candidate lists: evaluation that ranks each user's target among a short list of items (the
target and N - 1 others) instead of the whole catalog, as LLM rerankers are evaluated
(LLMRank: 20 candidates, 19 drawn at random plus the target).

:class:`CandidateLists` gives every evaluation window its list, drawn with a seed or read from a
file; ``SeqDataModule(candidates=...)`` puts them in evaluation batches (``Batch.candidates``) and
the engine ranks only them: every other item's score is -inf (:func:`recsys.metrics.keep_candidates`). Any split
protocol (``loo``, ``global_time``, your own) composes with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from recsys.data.atomic import DataFormatError
from recsys.data.vocab import Vocab

Stage = Literal["val", "test"]


class CandidateLists:
    """Each evaluation window's candidates: (W, C) item indices, 0-padded on the right.

    Args:
        num: candidates per window (C), the target included: ``num - 1`` items drawn uniformly
            with ``seed`` from those the user has not interacted with before the target, and
            the target put at a position drawn with the same seed (so no model can learn "the
            first one"). Ignored with ``path``.
        seed: the seed of those draws; a window's list depends on (seed, stage, user) only, so
            every model and every batch order sees the same lists.
        path: a file of lists instead: one line per user, ``user_id item_id item_id ...`` (raw
            ids as in the dataset, whitespace-separated; ``#`` starts a comment line), LLMRank's
            layout for its sampled candidates. Lists may differ in length.
        must_hold_target: a list read from ``path`` must contain its window's target (an error
            names the line otherwise); when False, a target outside its list counts as a miss.
    """

    def __init__(self, num: int = 20, seed: int = 0, path: str | None = None, must_hold_target: bool = True):
        if path is None and num < 2:
            raise ValueError(f"data.candidates.num must be >= 2 (the target and at least one other), got {num}")
        self.num, self.seed, self.path, self.must_hold_target = num, seed, path, must_hold_target

    def __repr__(self) -> str:
        return f"CandidateLists(path={self.path!r})" if self.path else f"CandidateLists(num={self.num}, seed={self.seed})"

    def for_windows(self, stage: Stage, users: np.ndarray, targets: np.ndarray, seen: list[np.ndarray],
                    num_items: int, user_vocab: Vocab, item_vocab: Vocab) -> np.ndarray:
        """(W, C) int64 candidate item indices of the windows (user indices ``users``, target item
        indices ``targets``, ``seen[w]`` the items before window w's target)."""
        if self.path is not None:
            return self._read(stage, users, targets, user_vocab, item_vocab)
        return self._draw(stage, users, targets, seen, num_items)

    def _draw(self, stage: Stage, users: np.ndarray, targets: np.ndarray, seen: list[np.ndarray],
              num_items: int) -> np.ndarray:
        out = np.zeros((len(users), self.num), dtype=np.int64)
        stage_id = {"val": 1, "test": 2}[stage]
        for w, (user, target) in enumerate(zip(users, targets)):
            rng = np.random.default_rng([self.seed, stage_id, int(user)])
            excluded = np.union1d(seen[w], [0, target])
            pool = np.setdiff1d(np.arange(num_items + 1), excluded, assume_unique=True)
            if len(pool) < self.num - 1:
                raise DataFormatError(f"user index {user}: only {len(pool)} items are left to draw "
                                      f"{self.num - 1} candidates from (data.candidates.num is too large)")
            others = rng.choice(pool, size=self.num - 1, replace=False)
            out[w] = np.insert(others, rng.integers(0, self.num), target)
        return out

    def _read(self, stage: Stage, users: np.ndarray, targets: np.ndarray, user_vocab: Vocab,
              item_vocab: Vocab) -> np.ndarray:
        path = Path(str(self.path))
        if not path.is_file():
            raise DataFormatError(f"{path}: no such candidate-list file (data.candidates.path)")
        lists: dict[int, tuple[int, np.ndarray]] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            where = f"{path}:{number}"
            if len(tokens) < 2:
                raise DataFormatError(f"{where}: user {tokens[0]!r} has an empty list")
            try:
                user = int(user_vocab.index([tokens[0]], "user id")[0])
                items = item_vocab.index(tokens[1:], "item id")
            except KeyError as error:
                raise DataFormatError(f"{where}: {error.args[0]}") from None
            if user in lists:
                raise DataFormatError(f"{where}: user {tokens[0]!r} has a list already (line {lists[user][0]})")
            if len(np.unique(items)) < len(items):
                duplicated = sorted({t for t in tokens[1:] if tokens[1:].count(t) > 1})
                raise DataFormatError(f"{where}: item id(s) {duplicated[:5]} listed twice")
            lists[user] = (number, items)
        missing = [int(u) for u in users if int(u) not in lists]
        if missing:
            raise DataFormatError(f"{path}: no list for {len(missing)} {stage} user(s), e.g. "
                                  f"{[user_vocab.token(u) for u in missing[:5]]}")
        width = max(len(lists[int(u)][1]) for u in users) if len(users) else 1
        out = np.zeros((len(users), width), dtype=np.int64)
        for w, (user, target) in enumerate(zip(users, targets)):
            number, items = lists[int(user)]
            if self.must_hold_target and target not in items:
                raise DataFormatError(f"{path}:{number}: the list of user {user_vocab.token(int(user))!r} does not "
                                      f"hold its {stage} target {item_vocab.token(int(target))!r} "
                                      "(data.candidates.must_hold_target)")
            out[w, : len(items)] = items
        return out
