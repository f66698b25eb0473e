"""Per-user item sequences, the evaluation splits (``loo``, ``global_time``), and lazy windows over them.

Nothing here materialises one row per training prefix (RecBole's "augmentation"): a window
is the pair (user, end) and is computed from a few per-user arrays when a batch is fetched,
so memory grows with the number of users and interactions, never with the number of windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
from torch.utils.data import Dataset

from recsys.data.batch import Batch


@dataclass(frozen=True)
class Sequences:
    """Every user's items in time order, in CSR form.

    User ``u`` (1..U; 0 = PAD has none) has items ``items[offsets[u]:offsets[u + 1]]``.
    """

    offsets: np.ndarray  #: (U + 2,) int64
    items: np.ndarray  #: (n,) int64 item indices in 1..N

    @classmethod
    def from_sorted(cls, users: np.ndarray, items: np.ndarray, num_users: int) -> "Sequences":
        """Build from interactions already sorted by (user, time, item); users in 1..num_users."""
        counts = np.bincount(users, minlength=num_users + 1)
        offsets = np.zeros(num_users + 2, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(offsets, items.astype(np.int64))

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 2

    @property
    def lengths(self) -> np.ndarray:
        """(U + 1,) number of items per user (index 0 = PAD user, always 0)."""
        return np.diff(self.offsets)

    def of(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]


class Split:
    """Which interactions of each user's sequence train, and which are evaluation targets.

    Training is always a prefix of each user's sequence (``train_length[u]`` leading items), so
    training windows are cut the same way under every protocol; protocols differ in where the
    prefix ends and in which later positions are evaluated (:meth:`evaluation`).
    """

    sequences: Sequences
    name: str = ""

    @property
    def train_length(self) -> np.ndarray:
        """(U + 1,) number of leading training items per user."""
        raise NotImplementedError

    def evaluation(self, stage: Literal["val", "test"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Evaluation windows of ``stage`` as (users, last_end, count): user ``users[i]`` has
        targets at positions ``last_end[i] - count[i] + 1 .. last_end[i]`` of their sequence."""
        raise NotImplementedError

    def num_windows(self, stage: Literal["val", "test"]) -> int:
        return int(self.evaluation(stage)[2].sum())

    def _is_training(self) -> np.ndarray:
        """(n,) bool: which entries of ``sequences.items`` are training interactions."""
        seq = self.sequences
        position = np.arange(len(seq.items)) - np.repeat(seq.offsets[:-1], seq.lengths)
        return position < np.repeat(self.train_length, seq.lengths)

    def train_items(self) -> np.ndarray:
        """All training interactions' item indices (for popularity counts)."""
        return self.sequences.items[self._is_training()]

    def without_items(self, items: np.ndarray) -> "TrainingPrefixes":
        """The training interactions minus every interaction with ``items`` (cold items).

        Held-out targets stay where they are (in ``self``); only training changes.
        """
        seq = self.sequences
        keep = self._is_training() & ~np.isin(seq.items, items)
        users = np.repeat(np.arange(len(seq.lengths)), seq.lengths)
        return TrainingPrefixes(Sequences.from_sorted(users[keep], seq.items[keep], seq.num_users))


@dataclass(frozen=True)
class LeaveOneOut(Split):
    """The ``loo`` protocol: per user, the last item is the test target, the one before it the
    validation target, and everything earlier is training. Users with fewer than 3 items are
    training-only (they have no held-out targets).
    """

    sequences: Sequences
    name: str = "loo"

    @property
    def evaluated(self) -> np.ndarray:
        """Users (1..U) that have a validation and a test target."""
        lengths = self.sequences.lengths
        users = np.arange(len(lengths))
        return users[(users > 0) & (lengths >= 3)]

    @property
    def train_length(self) -> np.ndarray:
        lengths = self.sequences.lengths
        return np.where(lengths >= 3, lengths - 2, lengths)

    def evaluation(self, stage):
        users = self.evaluated
        lengths = self.sequences.lengths[users]
        return users, lengths - (2 if stage == "val" else 1), np.ones_like(users)


@dataclass(frozen=True, eq=False)
class GlobalTime(Split):
    """The ``global_time`` protocol (BIGRec's): all interactions are ordered by time and cut
    8:1:1 (``fractions``) into training, validation and test periods. Every interaction of a
    period that has at least one earlier item of its user is a target of that period, with
    everything before it as history (also items of earlier evaluation periods: the model sees
    what happened until then, as a deployed recommender would).

    ``period`` (n,) int8 aligned with ``sequences.items``: 0 train, 1 validation, 2 test;
    non-decreasing along each user's sequence.
    """

    sequences: Sequences
    period: np.ndarray
    name: str = "global_time"

    @classmethod
    def from_order(cls, sequences: Sequences, global_rank: np.ndarray,
                   fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> "GlobalTime":
        """``global_rank`` (n,): each entry's position 0..n-1 in the global time order."""
        if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
            raise ValueError(f"the global_time split needs three fractions summing to 1, got {fractions}")
        n = len(sequences.items)
        cuts = np.round(np.cumsum(fractions[:2]) * n).astype(np.int64)
        period = np.searchsorted(cuts, global_rank, side="right").astype(np.int8)
        return cls(sequences, period)

    @property
    def train_length(self) -> np.ndarray:
        seq = self.sequences
        users = np.repeat(np.arange(len(seq.lengths)), seq.lengths)
        return np.bincount(users[self.period == 0], minlength=len(seq.lengths)).astype(np.int64)

    def evaluation(self, stage):
        seq = self.sequences
        wanted = 1 if stage == "val" else 2
        users = np.repeat(np.arange(len(seq.lengths)), seq.lengths)
        before = np.bincount(users[self.period < wanted], minlength=len(seq.lengths))
        upto = np.bincount(users[self.period <= wanted], minlength=len(seq.lengths))
        first = np.maximum(before, 1)  # a target needs at least one item of history
        count = np.maximum(upto - first, 0)
        chosen = np.flatnonzero(count > 0)
        return chosen, upto[chosen] - 1, count[chosen]


@dataclass(frozen=True)
class TrainingPrefixes:
    """Training sequences on their own: every item is a training interaction.

    What :meth:`Split.without_items` returns; it has what training windows and popularity
    counts read from a split (``sequences``, ``train_length``, ``train_items``).
    """

    sequences: Sequences

    @property
    def train_length(self) -> np.ndarray:
        """(U + 1,) number of training items per user: all of them."""
        return self.sequences.lengths

    def train_items(self) -> np.ndarray:
        return self.sequences.items


def sample_cold_items(num_items: int, fraction: float, seed: int = 0) -> np.ndarray:
    """``round(fraction * num_items)`` items (at most ``num_items - 1``) drawn uniformly from
    1..num_items with ``numpy.random.default_rng(seed)``: sorted (C,) int64, empty for 0."""
    if not 0 <= fraction < 1:
        raise ValueError(f"cold_items must be a fraction in [0, 1), got {fraction}")
    count = min(round(fraction * num_items), num_items - 1)  # at least one item stays trainable
    chosen = np.random.default_rng(seed).choice(np.arange(1, num_items + 1), size=count, replace=False)
    return np.sort(chosen).astype(np.int64)


TrainWindows = Literal["every", "tiled"]


class Windows(Dataset):
    """Lazy (user, end) windows: history = items[end - max_len : end], target = items[end].

    Each user ``u`` in ``users`` contributes ``count[u]`` windows whose ends step back from
    ``last_end[u]`` by ``stride``. Window ``i`` is found by binary search over the cumulative
    counts, so the dataset stores O(users) integers however many windows it has.

    - training, ``every``: one window per target position (end = 1 .. train_length - 1);
    - training, ``tiled``: windows ``stride`` apart (default ``max_len``) for models that predict
      at every position; ``labels`` marks the positions that are this window's targets, so each
      training target is covered exactly once per epoch. A stride below ``max_len`` makes windows
      overlap: every target but a user's first few then sees at least ``max_len - stride`` items
      of context, at ``max_len / stride`` times the compute;
    - evaluation: one window per user (end = the target's position), with ``seen`` = every
      earlier item when the history is to be masked;
    - prediction: one window per user past their last item (target unknown, 0).

    With ``cold_item_ids`` (sorted item indices held out of training), evaluation batches carry
    ``cold``: whether each target is one of them.

    ``__getitems__`` builds a whole :class:`Batch` with vectorised numpy gathers; use it with
    :func:`identity_collate`.
    """

    def __init__(
        self,
        sequences: Sequences,
        users: np.ndarray,
        last_end: np.ndarray,
        count: np.ndarray,
        stride: int,
        max_len: int,
        with_seen: bool = False,
        with_labels: bool = False,
        cold_item_ids: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
    ):
        keep = count > 0
        #: (users with a window, C) candidate lists, one per user (evaluation windows only)
        self.candidates = None if candidates is None else np.asarray(candidates)[keep]
        self.sequences = sequences
        self.users = users[keep].astype(np.int64)
        self.last_end = last_end[keep].astype(np.int64)
        self.stride = int(stride)
        self.max_len = int(max_len)
        self.with_seen = with_seen
        self.with_labels = with_labels
        self.cold_item_ids = cold_item_ids
        self.cumulative = np.cumsum(count[keep]).astype(np.int64)
        self.first_index = np.concatenate(([0], self.cumulative[:-1]))  # index of each user's first window

    @classmethod
    def for_training(
        cls, split: Split | TrainingPrefixes, max_len: int, mode: TrainWindows = "every", stride: int | None = None
    ) -> "Windows":
        train_length = split.train_length
        users = np.flatnonzero(train_length >= 2)
        targets = train_length[users] - 1  # positions 1 .. n_train - 1 are targets
        if mode == "every":
            return cls(split.sequences, users, train_length[users] - 1, targets, 1, max_len)
        if mode != "tiled":
            raise ValueError(f"train windows must be 'every' or 'tiled', got {mode!r}")
        stride = max_len if stride is None else stride
        if not 1 <= stride <= max_len:
            raise ValueError(f"the stride of tiled windows must be in 1..max_len ({max_len}), got {stride}")
        count = -(-targets // stride)
        return cls(split.sequences, users, train_length[users] - 1, count, stride, max_len, with_labels=True)

    @classmethod
    def for_evaluation(
        cls, split: Split, stage: Literal["val", "test"], max_len: int, mask_history: bool,
        cold_item_ids: np.ndarray | None = None, candidates: np.ndarray | None = None,
    ) -> "Windows":
        """One window per evaluated user; ``candidates`` (one row per user of
        ``split.evaluation(stage)``) go into the batches as ``Batch.candidates``."""
        users, last_end, count = split.evaluation(stage)
        return cls(split.sequences, users, last_end, count, 1, max_len, with_seen=mask_history,
                   cold_item_ids=cold_item_ids, candidates=candidates)

    @classmethod
    def for_prediction(cls, sequences: Sequences, max_len: int, mask_history: bool) -> "Windows":
        lengths = sequences.lengths
        users = np.flatnonzero(lengths >= 1)
        return cls(sequences, users, lengths[users], np.ones_like(users), 1, max_len, with_seen=mask_history)

    def __len__(self) -> int:
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window indices -> (users, ends)."""
        return self._locate(indices)[1:]

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window indices -> (the position of each window's user in ``users``, users, ends)."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window index out of range 0..{len(self) - 1}")
        slot = np.searchsorted(self.cumulative, indices, side="right")
        return slot, self.users[slot], self.last_end[slot] - (indices - self.first_index[slot]) * self.stride

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])

    def __getitems__(self, indices) -> Batch:
        slot, users, ends = self._locate(np.asarray(indices))
        seq = self.sequences
        starts = seq.offsets[users]
        lengths = seq.offsets[users + 1] - starts
        history = _left_padded(seq.items, starts, ends, self.max_len)
        has_target = ends < lengths
        target = np.where(has_target, seq.items[starts + np.minimum(ends, lengths - 1)], 0)
        seen: torch.Tensor | None = None
        labels: torch.Tensor | None = None
        if self.with_seen:
            seen = torch.from_numpy(_left_padded(seq.items, starts, ends, max(int(ends.max()), 1)))
        if self.with_labels:
            # Position p predicts sequence index end - L + p + 1; it is a target of this window if
            # that index is among the last `stride` (earlier ones belong to the next window back).
            following = _left_padded(seq.items, starts, ends + 1, self.max_len + 1)[:, 1:]
            label_index = ends[:, None] - self.max_len + 1 + np.arange(self.max_len)[None, :]
            labels = torch.from_numpy(
                np.where((label_index > ends[:, None] - self.stride) & (label_index >= 1), following, 0))
        cold = None if self.cold_item_ids is None else torch.from_numpy(np.isin(target, self.cold_item_ids))
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        candidates = None if self.candidates is None else torch.from_numpy(self.candidates[slot])
        return Batch(torch.from_numpy(history), torch.from_numpy(target), torch.from_numpy(users), seen, labels, cold,
                     index, candidates)


def _left_padded(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Rows ``items[start + max(0, end - width) : start + end]``, left-padded with 0 to ``width``."""
    positions = ends[:, None] - width + np.arange(width)[None, :]  # (B, width) positions in each sequence
    valid = positions >= 0
    gathered = items[np.where(valid, starts[:, None] + positions, 0)]
    return np.where(valid, gathered, 0).astype(np.int64)


def identity_collate(batch: Batch) -> Batch:
    """``Windows.__getitems__`` already returns a collated batch."""
    return batch


class SampledWindows(Dataset):
    """A fixed random sample of ``size`` windows of ``windows`` (drawn once with ``seed``, kept in
    window order), for protocols that evaluate on a sample (BIGRec's test windows)."""

    def __init__(self, windows: Windows, size: int, seed: int = 0):
        if size < 1:
            raise ValueError(f"the evaluation sample size must be >= 1, got {size}")
        chosen = np.random.default_rng(seed).choice(len(windows), size=min(size, len(windows)), replace=False)
        self.windows = windows
        self.chosen = np.sort(chosen).astype(np.int64)

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])

    def __getitems__(self, indices) -> Batch:
        return self.windows.__getitems__(self.chosen[np.asarray(indices, dtype=np.int64)])


class EpochShuffle(torch.utils.data.DistributedSampler):
    """A random order of ``size`` indices drawn from ``(seed, epoch)`` alone, split between
    ``num_replicas`` processes.

    Lightning calls ``set_epoch`` before every training epoch, so a run resumed from a checkpoint
    sees exactly the batches an uninterrupted run would have seen (``shuffle=True`` draws from
    the global RNG, whose state a restart loses). Under DDP, process ``rank`` takes every
    ``num_replicas``-th index of the same order (the order padded with its first indices to a
    multiple of ``num_replicas``), so one step's per-process batches together are the batch one
    process would take. Being a ``DistributedSampler``, Lightning uses it as it is (it would
    otherwise wrap it and re-shuffle).
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        # DistributedSampler only takes len() of its dataset
        super().__init__(cast("Dataset[int]", range(size)), num_replicas=num_replicas, rank=rank, shuffle=False,
                         seed=seed)
        self.size = size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: self.total_size - self.size]  # every process takes as many indices
        return iter(order[self.rank : self.total_size : self.num_replicas])
