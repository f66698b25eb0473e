"""Lightning data modules: what every model trains and is evaluated on."""

from __future__ import annotations

import os
import warnings
from functools import cached_property
from collections.abc import Sized
from typing import Any, Callable, Literal, TypedDict, cast

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader, Dataset

from recsys.data.atomic import DataFormatError
from recsys.data.catalog import Catalog
from recsys.data.dataset import SequenceData, load_sequences
from recsys.data.embedded import resolve_dataset
from recsys.data.candidates import CandidateLists
from recsys.data.protocols import EvaluationProtocol, ProtocolName, resolve_protocol
from recsys.data.sequences import EpochShuffle, SampledWindows, Windows, identity_collate


class RecDataModule(pl.LightningDataModule):
    """Base class of every recsys data module.

    A subclass implements :meth:`load_data`; the base class loads once, on first use, and serves
    ``data``, ``num_items``, ``num_users`` and ``catalog`` from it. ``num_items`` is readable
    before ``setup()`` (LightningCLI links it into the model's ``__init__``), and ``catalog`` is
    what models read item features from. Build every DataLoader with :meth:`loader`.
    """

    num_workers: int = 0

    def load_data(self) -> Any:
        """Read the dataset: an object with ``items`` and ``users`` (vocabularies, 1..N and
        1..U) and ``catalog`` (:class:`~recsys.data.catalog.Catalog`). Called once, by ``data``."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_data()")

    @cached_property
    def data(self) -> Any:
        """What :meth:`load_data` returned; loaded on first use (by ``num_items`` at link time,
        or by ``setup()``)."""
        return self.load_data()

    @property
    def num_items(self) -> int:
        return len(self.data.items)

    @property
    def num_users(self) -> int:
        return len(self.data.users)

    @property
    def catalog(self) -> Catalog:
        return self.data.catalog

    @classmethod
    def config_problems(cls, model: dict[str, Any], data: dict[str, Any]) -> list[str]:
        """Problems across fields of a run's configuration, one message each, naming the fields
        (``data.init_args.train_stride``): the CLI calls this with the parsed ``init_args`` of
        the model and of this data module before anything is built, and stops if any is found,
        printing them all. Override (extending ``super()``'s list) to check your own fields; see
        :mod:`recsys.config_checks`."""
        return []

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        """A DataLoader over ``dataset``, whose ``__getitems__`` returns a whole batch (collated
        by :func:`~recsys.data.sequences.identity_collate`), with this module's ``num_workers``.

        With ``shuffle``, the order is :class:`~recsys.data.sequences.EpochShuffle`'s: drawn from
        (the run's seed, epoch) alone (``seed_everything`` sets ``PL_GLOBAL_SEED``), so a resumed
        fit sees the batches an uninterrupted one would; under DDP each process takes its share
        of that one order. Data modules (and plugins' subclasses) build every loader here to
        keep that guarantee.
        """
        sampler = None
        if shuffle:
            # Split between processes here: Lightning would wrap the sampler for DDP and re-shuffle it.
            trainer = getattr(self, "trainer", None)
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = EpochShuffle(len(cast(Sized, dataset)), int(os.environ.get("PL_GLOBAL_SEED", "0")), world, rank)
        return DataLoader(
            # the dataset's __getitems__ returns a Batch, which identity_collate passes on
            dataset, batch_size=batch_size, sampler=sampler,
            collate_fn=cast("Callable[[list[Any]], Any]", identity_collate),
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        """Deprecated alias of :meth:`loader` (removed in API 1.6)."""
        warnings.warn("RecDataModule._loader is deprecated; use RecDataModule.loader", DeprecationWarning, stacklevel=2)
        return self.loader(dataset, batch_size, shuffle)


class _SequenceLoadOptions(TypedDict):
    """:func:`~recsys.data.dataset.load_sequences`'s options a :class:`SeqDataModule` passes."""

    min_rating: float | None
    max_history: int | None
    k_core: int | None
    tie_break: Literal["file", "item"]
    cold_items: float
    cold_seed: int
    protocol: EvaluationProtocol


class SeqDataModule(RecDataModule):
    """Sequential recommendation data under an evaluation protocol (``loo``, ``global_time`` or your own).

    Args:
        path: a directory of RecBole atomic files (``NAME/NAME.inter`` ...), or an embedded
            dataset name (``ml-100k``, read from the installed recbole wheel).
        max_len: history length L given to the model (the most recent L items).
        batch_size: training windows per batch.
        eval_batch_size: users per validation/test/predict batch.
        protocol: ``loo`` (the default): per user, the last item is the test target and the one
            before it the validation target. ``global_time`` (BIGRec's): all interactions cut
            8:1:1 by time; every interaction of the validation (test) period with at least one
            earlier item of its user is a validation (test) target, with all earlier items as
            history. Or another protocol: an :class:`~recsys.data.protocols.EvaluationProtocol`
            instance or subclass (in a config, ``class_path: my_package.MyProtocol``); no
            registration needed. Results always name the protocol they used (``protocol`` holds
            its name).
        mask_history: at evaluation, rank only items the user has not interacted with before
            the target (the target itself is never masked). Default: the protocol's own
            (``default_mask_history``), on for ``loo`` (as HLLM) and off for ``global_time`` (as
            BIGRec). RecBole does not mask for sequential models; switch off to compare with it.
        eval_sample: evaluate on this many windows per stage, drawn once with ``eval_sample_seed``
            (BIGRec samples its test windows); None = all of them.
        eval_sample_seed: seed of that draw.
        train_windows: ``every`` = one window per target (for models that predict only at the
            last position); ``tiled`` = windows ``max_len`` apart (for models that predict at
            every position; each target is seen once per epoch); ``auto`` = ask the model
            (its ``train_windows`` attribute).
        train_stride: distance between ``tiled`` windows (default ``max_len``: no overlap).
            Smaller strides give early positions of each window more context, at ``max_len /
            train_stride`` times the training compute; every target still counts once.
        min_rating: keep interactions rated at least this (e.g. 4 for "liked").
        max_history: keep only each user's last ``max_history`` interactions.
        k_core: drop users and items with fewer interactions, repeatedly.
        tie_break: order of interactions with equal timestamps: ``file`` (file order, as RecBole
            and most published pipelines) or ``item`` (by item id; beware: ids often encode
            catalog age, which biases the held-out targets).
        cold_items: fraction of the catalog's items (``round(cold_items * N)``, drawn uniformly
            from 1..N) held out of training, to evaluate on items never trained on (text-based
            models). Their interactions are dropped from every user's training prefix, so they
            are in no training window (neither target nor history) and have popularity 0.
            Validation/test targets and evaluation histories are left as they are: a cold item
            can be a target, and can appear in a later target's history (and in ``seen``).
            Evaluation batches then flag cold targets (``Batch.cold``) and models also log their
            metrics over them as ``{stage}/cold/{name}``; the catalog still holds every item,
            and cold items are ranked like the others. 0 (the default) changes nothing.
        cold_seed: seed of the cold-item draw (``numpy.random.default_rng``).
        candidates: rank each validation/test target among a short candidate list instead of the
            whole catalog (:class:`~recsys.data.candidates.CandidateLists`: N drawn with a seed,
            the target included, or read from a file); batches carry them as ``Batch.candidates``
            and every other item is ranked -inf. None (the default): the whole catalog.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        path: str = "ml-100k",
        max_len: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        protocol: ProtocolName | EvaluationProtocol = "loo",
        mask_history: bool | None = None,
        eval_sample: int | None = None,
        eval_sample_seed: int = 0,
        train_windows: Literal["auto", "every", "tiled"] = "auto",
        train_stride: int | None = None,
        min_rating: float | None = None,
        max_history: int | None = None,
        k_core: int | None = None,
        tie_break: Literal["file", "item"] = "file",
        cold_items: float = 0.0,
        cold_seed: int = 0,
        candidates: CandidateLists | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        if max_len < 1:
            raise ValueError(f"data.max_len must be >= 1, got {max_len}")
        evaluation_protocol = resolve_protocol(protocol)
        if eval_sample is not None and eval_sample < 1:
            raise ValueError(f"data.eval_sample must be >= 1 (or null for every window), got {eval_sample}")
        if not 0 <= cold_items < 1:
            raise ValueError(f"data.cold_items must be a fraction in [0, 1), got {cold_items}")
        self.save_hyperparameters()
        self.path = path
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.evaluation_protocol = evaluation_protocol  #: the protocol itself
        self.protocol: str = evaluation_protocol.name  #: its name (``loo``, ``global_time``, ...)
        self.mask_history = evaluation_protocol.default_mask_history if mask_history is None else mask_history
        self.eval_sample = eval_sample
        self.eval_sample_seed = eval_sample_seed
        self.train_windows = train_windows
        self.train_stride = train_stride
        self.cold_items = cold_items
        self.load_options = _SequenceLoadOptions(
            min_rating=min_rating, max_history=max_history, k_core=k_core, tie_break=tie_break,
            cold_items=cold_items, cold_seed=cold_seed, protocol=evaluation_protocol)
        self.num_workers = num_workers
        self.candidates = candidates
        self._candidate_lists: dict[str, np.ndarray] = {}

    @classmethod
    def config_problems(cls, model: dict[str, Any], data: dict[str, Any]) -> list[str]:
        problems = super().config_problems(model, data)
        max_len, stride, windows = data.get("max_len"), data.get("train_stride"), data.get("train_windows")
        if stride is not None and isinstance(max_len, int) and not 1 <= stride <= max_len:
            problems.append(f"data.init_args.train_stride ({stride}) must be in 1..data.init_args.max_len ({max_len}): "
                            "tiled training windows would skip targets")
        if stride is not None and windows == "every":
            problems.append(f"data.init_args.train_stride ({stride}) has no effect with data.init_args.train_windows "
                            "'every' (one window per target): drop it, or use 'tiled'")
        return problems

    def load_data(self) -> SequenceData:
        return load_sequences(resolve_dataset(self.path), **self.load_options)

    @property
    def cold_item_ids(self) -> np.ndarray:
        """(C,) sorted int64 indices of the items held out of training (empty unless ``cold_items``)."""
        return self.data.cold_item_ids

    def setup(self, stage: str | None = None) -> None:
        data = self.data  # load now, not inside the first dataloader call
        if stage in ("fit", "validate", "test") and min(data.split.num_windows(s) for s in ("val", "test")) == 0:
            raise DataFormatError(f"{self.path}: {self.evaluation_protocol.explain_empty(data.sequences)}")

    def _resolved_train_windows(self) -> Literal["every", "tiled"]:
        if self.train_windows != "auto":
            return self.train_windows
        model = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(model, "train_windows", "every")

    def train_dataloader(self) -> DataLoader:
        windows = Windows.for_training(self.data.training, self.max_len, self._resolved_train_windows(), self.train_stride)
        if len(windows) == 0:
            raise DataFormatError(f"{self.path}: no training windows (no user has 2 or more training interactions)")
        return self.loader(windows, self.batch_size, shuffle=True)

    def _evaluation_loader(self, stage: Literal["val", "test"]) -> DataLoader:
        cold = self.cold_item_ids if self.cold_items > 0 else None  # no flags unless asked for
        windows = Windows.for_evaluation(self.data.split, stage, self.max_len, self.mask_history, cold,
                                         self._candidates_of(stage))
        dataset: Windows | SampledWindows = windows
        if self.eval_sample is not None:
            dataset = SampledWindows(windows, self.eval_sample, self.eval_sample_seed)
        return self.loader(dataset, self.eval_batch_size, shuffle=False)

    def _candidates_of(self, stage: Literal["val", "test"]) -> np.ndarray | None:
        """(users of ``split.evaluation(stage)``, C) candidate lists, made once per stage."""
        if self.candidates is None:
            return None
        if stage not in self._candidate_lists:
            data = self.data
            users, last_end, count = data.split.evaluation(stage)
            if (count > 1).any():
                raise DataFormatError(f"{self.path}: data.candidates needs one {stage} window per user; protocol "
                                      f"{self.protocol!r} gives some users {int(count.max())}")
            evaluated = count > 0
            users, last_end = users[evaluated], last_end[evaluated]
            starts = data.sequences.offsets[users]
            targets = data.sequences.items[starts + last_end]
            seen = [data.sequences.items[start:start + end] for start, end in zip(starts, last_end)]
            lists = self.candidates.for_windows(stage, users, targets, seen, self.num_items, data.users, data.items)
            rows = np.zeros((len(evaluated), lists.shape[1]), dtype=np.int64)  # a row per user Windows is given
            rows[evaluated] = lists
            self._candidate_lists[stage] = rows
        return self._candidate_lists[stage]

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Every user, with their whole sequence as history: what comes next?"""
        windows = Windows.for_prediction(self.data.sequences, self.max_len, self.mask_history)
        return self.loader(windows, self.eval_batch_size, shuffle=False)
