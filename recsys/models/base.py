"""Base classes of every model: the training and evaluation loop is written once, here."""

from __future__ import annotations

import contextvars
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence, cast

import lightning.pytorch as pl
import torch
from torch import Tensor

from recsys.data.batch import Batch
from recsys.metrics import (DEFAULT_KS, DEFAULT_METRICS, ListContext, MetricSet, dense_ranks, keep_candidates, list_ranks,
                            mask_seen)

if TYPE_CHECKING:
    from recsys.data.catalog import Catalog


class RecModule(pl.LightningModule):
    """Everything recsys trains.

    ``__init__`` must accept ``num_items`` (LightningCLI links it from the data module) and
    subclasses call ``self.save_hyperparameters()`` so a checkpoint restores them:
    ``RecModule.load_from_checkpoint(path)`` returns the saved subclass.

    Args:
        num_items: catalog size N; item indices are 1..N, 0 is PAD.
        lr: learning rate of the default Adam optimizer.
        weight_decay: its weight decay.
        metrics: metric names from ``register_metrics``; ``'ndcg'`` is logged at every k in
            ``ks``, ``'ndcg@10'`` only at 10, ``'mrr@all'`` without cutoff.
        ks: cutoffs for metrics given without one.
        ties: how a target tied with other items is ranked: ``pessimistic`` (behind all of
            them: a collapsed model scores 0) or ``random`` (a deterministic uniform draw among
            them: the expected value of random tie-breaking; a constant model gets k/N).

    ``monitor`` names the validation metric that selects checkpoints and stops training early
    when a run does not choose one (the CLI's default callbacks read it), with its ``mode``;
    :meth:`logged_metrics` says what the model logs, so a run monitoring anything else fails
    before training.

    Item features: :attr:`catalog` is the data's :class:`~recsys.Catalog`. In ``setup()`` the
    base class takes it from the attached data module, checks it has ``num_items`` items, and
    calls :meth:`on_catalog` once per catalog: read item features there. Without a Trainer
    (notebooks, serving, tests) call :meth:`set_catalog` yourself. A subclass that overrides
    ``setup`` calls ``super().setup(stage)``.
    """

    monitor: ClassVar[tuple[str, str]] = ("val/ndcg@10", "max")

    def __init__(
        self,
        num_items: int,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        metrics: Sequence[str] = DEFAULT_METRICS,
        ks: Sequence[int] = DEFAULT_KS,
        ties: Literal["pessimistic", "random"] = "pessimistic",
    ):
        super().__init__()
        if ties not in ("pessimistic", "random"):
            raise ValueError(f"ties must be 'pessimistic' or 'random', got {ties!r}")
        self.ties = ties
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = num_items
        self.lr = lr
        self.weight_decay = weight_decay
        # The one import cycle of the core, on purpose: the plugin manager validates model
        # classes against RecModule, and models look up the metrics plugins registered.
        from recsys.plugins import MetricFunctions, get_metrics

        entries = get_metrics()
        self.metric_set = MetricSet(metrics, ks, MetricFunctions(entries),
                                    owners={name: entry.plugin for name, entry in entries.items()},
                                    kinds={name: entry.extra.get("kind", "rank") for name, entry in entries.items()})
        self._catalog: Catalog | None = None

    # ---- item catalog ---------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog | None:
        """The item catalog this model was given (by ``setup()`` or :meth:`set_catalog`), or None."""
        return self.__dict__.get("_catalog")

    def set_catalog(self, catalog: Catalog) -> None:
        """Give the model its item catalog: checks it has ``num_items`` items, then calls
        :meth:`on_catalog` (once per catalog object: setting the same one again does nothing)."""
        if catalog is self.catalog:
            return
        if len(catalog) != self.num_items:
            raise ValueError(
                f"{type(self).__name__} was built for num_items={self.num_items}, but the data's catalog has "
                f"{len(catalog)} items (a checkpoint or config from another dataset or filter?)"
            )
        previous, self._catalog = self.catalog, catalog  # on_catalog may read self.catalog
        try:
            self.on_catalog(catalog)
        except BaseException:
            self._catalog = previous  # not taken: setting it again retries
            raise

    def on_catalog(self, catalog: Catalog) -> None:
        """Hook: read item features (text, popularity, ...) from the catalog. Called by
        :meth:`set_catalog` after its length check; does nothing by default."""

    def setup(self, stage: str) -> None:
        """Takes the catalog of the attached data module (if it has one): see :attr:`catalog`."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        try:
            catalog = datamodule.catalog if datamodule is not None else None
        except (AttributeError, NotImplementedError):
            catalog = None  # a data module without items (e.g. a tokenizer's item vectors)
        if catalog is not None:
            self.set_catalog(catalog)

    @classmethod
    def config_problems(cls, model: dict[str, Any], data: dict[str, Any]) -> list[str]:
        """Problems across fields of a run's configuration, one message each, naming the fields
        (``model.init_args.max_len``): the CLI calls this with the parsed ``init_args`` of this
        model and of the data module before anything is built (no model loaded, no data read),
        and stops if any is found, printing them all. Override (extending ``super()``'s list) to check your own
        fields; see :mod:`recsys.config_checks`."""
        return []

    def logged_metrics(self, stage: str) -> set[str]:
        """Every name this model logs at ``stage`` (``train``, ``val`` or ``test``), with its
        ``stage/`` prefix. The CLI checks a callback's ``monitor`` against it before training.
        Override (and extend ``super()``'s set) when the model logs more."""
        if stage == "train":
            return {"train/loss"}
        if self.metric_set is None:
            return set()
        return {f"{stage}/{name}" for name in self.metric_set.logged}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lets RecModule.load_from_checkpoint restore the right subclass, CLI or not.
        checkpoint["recsys_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["recsys_rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A resumed fit (--ckpt_path) continues with the random state the checkpoint was saved
        # with (dropout masks, negative samples), so it repeats an uninterrupted run exactly.
        if self._trainer is not None and self.trainer.state.fn == "fit" and "recsys_rng_states" in checkpoint:
            set_rng_states(checkpoint["recsys_rng_states"])

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, weights_only: bool | None = True, **kwargs):
        """Load a checkpoint into the class that saved it (a subclass of ``cls``).

        ``RecModule.load_from_checkpoint(path)`` returns e.g. a ``SASRec``; loading reads
        tensors and plain values only (``weights_only=True``) unless told otherwise.

        Safe inside another model's ``__init__`` (e.g. a frozen CRM loaded by its path): the load
        runs in a fresh ``contextvars`` context, because LightningCLI records the hyper-parameters
        of the class it is building in a context variable that the nested model's
        ``save_hyperparameters`` would otherwise read as its own.
        """
        saved = _saved_class(checkpoint_path, weights_only)
        target = saved if saved is not None and issubclass(saved, cls) else cls
        # a bound classmethod: its __func__ takes the class to build
        load = super(RecModule, target).load_from_checkpoint.__func__  # type: ignore[attr-defined]
        return contextvars.Context().run(load, target, checkpoint_path, *args, weights_only=weights_only, **kwargs)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


def rng_states() -> dict:
    """The random states of torch (CPU and every CUDA device), numpy and ``random``, as plain
    values and tensors (loadable with ``torch.load(weights_only=True)``)."""
    import random

    import numpy as np

    # legacy=True (the default) gives the tuple for the global MT19937 state
    kind, keys, position, has_gauss, cached = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "python": [version, list(state), gauss],
    }


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` returned."""
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


def _saved_class(checkpoint_path, weights_only: bool | None) -> type | None:
    """The RecModule subclass recorded in a checkpoint, imported by its module path.

    Local files are memory-mapped (nothing is read twice in full); file objects are rewound
    for Lightning's own load; remote paths are left to Lightning (the calling class is used).
    """
    import importlib
    from pathlib import Path

    if hasattr(checkpoint_path, "read"):
        position = checkpoint_path.tell()
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=weights_only)
        checkpoint_path.seek(position)
    elif Path(checkpoint_path).is_file():
        checkpoint = torch.load(checkpoint_path, mmap=True, map_location="cpu", weights_only=weights_only)
    else:
        return None
    class_path = checkpoint.get("recsys_class_path")
    if class_path is None:
        return None
    module_name, _, qualname = class_path.rpartition(".")
    try:
        found = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"{checkpoint_path} was saved by {class_path}, which cannot be imported here "
            f"(is its plugin installed?): {exc}"
        ) from exc
    if not (isinstance(found, type) and issubclass(found, RecModule)):
        raise TypeError(f"{checkpoint_path}: {class_path} is not a recsys.RecModule")
    return found


def distinct_items(seen: Tensor) -> Tensor:
    """(B, S) item ids, 0 = PAD -> (B,) int64 number of distinct items per row."""
    ordered = seen.sort(dim=1).values
    starts = torch.cat([ordered[:, :1] != 0, (ordered[:, 1:] != ordered[:, :-1]) & (ordered[:, 1:] != 0)], dim=1)
    return starts.sum(dim=1)


class SeqRecModule(RecModule):
    """A next-item recommender. Implement ``loss`` and ``score`` (dense models) or ``loss`` and
    ``recommend`` (generative models that produce a top-k list).

    ``train_windows`` tells the data module how to cut training sequences: ``every`` gives one
    window per target (the model predicts at the last position only); ``tiled`` gives windows
    ``train_stride`` apart for causal models that can predict at every position, the loss taken
    where the window's ``labels`` mark a target (each target once per epoch).
    """

    train_windows: Literal["every", "tiled"] = "every"
    #: list length of ``predict`` runs (set by the writer callback; None = the largest metric cutoff)
    predict_k: int | None = None

    def loss(self, batch: Batch) -> Tensor:
        """Scalar training loss of one batch."""
        raise NotImplementedError

    def score(self, batch: Batch) -> Tensor:
        """(B, N + 1) scores of every item (column 0 = PAD, ignored); a new tensor, which the
        caller may modify in place (masking)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither score() nor recommend()")

    def recommend(self, batch: Batch, k: int) -> tuple[Tensor, Tensor]:
        """(B, k) item indices, best first, and their scores; PAD and ``batch.seen`` excluded."""
        scores = mask_seen(self.score(batch), batch.seen)
        top = scores.topk(min(k, scores.shape[1] - 1), dim=1)
        return top.indices, top.values

    @property
    def is_dense(self) -> bool:
        """True when the model scores every item (``score``); False when it produces a list
        (``recommend`` only). Evaluation ranks the two differently (see :meth:`rank`). The default
        asks whether ``score`` is implemented; override when that depends on configuration."""
        if type(self)._is_dense is not SeqRecModule._is_dense:
            warnings.warn(f"{type(self).__name__}._is_dense() is deprecated: override the is_dense property "
                          "(API 1.5)", DeprecationWarning, stacklevel=2)
        return bool(self._is_dense())

    def _is_dense(self) -> bool:
        # Deprecated as an override point (API 1.5): subclasses override ``is_dense`` instead.
        return type(self).score is not SeqRecModule.score

    def logged_metrics(self, stage: str) -> set[str]:
        names = super().logged_metrics(stage)
        if stage != "train":
            names.add(f"{stage}/windows")
        return names

    def report_metric(self, name: str, values: Tensor) -> None:
        """Log a model-specific evaluation metric, from inside ``score`` or ``recommend``.

        ``values``: (n,) one value per unit the metric averages over (e.g. a user's top beam
        grounded or not, a returned beam valid or not). Logged as ``{stage}/{name}``, the mean
        over every unit of the epoch. Only the evaluation step's own call reports: outside
        validation/test, and in the engine's re-query of repeated targets (see :meth:`rank`),
        this does nothing. Add the name to :meth:`logged_metrics` so runs may monitor it.
        """
        stage = self.__dict__.get("_reporting_stage")
        if stage is None or values.numel() == 0:
            return
        self.log(f"{stage}/{name}", values.float().mean(), batch_size=values.numel(), on_step=False, on_epoch=True,
                 sync_dist=True)

    def rank(self, batch: Batch) -> Tensor:
        """(B,) rank of each target under the evaluation protocol (1 = best).

        Dense models: every item's score, ``seen`` masked except the target, ties by ``ties``.
        Generative models (``recommend`` only): the same rules applied to their list
        (:func:`recsys.metrics.list_ranks`: scores, not positions; unlisted items tie at the bottom),
        asked one entry longer than the largest cutoff, so that a tie group cut by the list's end
        reaches past every cutoff. A target in ``seen`` (a repeat) is ranked as a dense model ranks
        it, among the unseen items plus itself: see :meth:`_rank_repeats`.
        """
        if self.is_dense:
            scores = self.score(batch).float()
            if self.metric_set.list_k:  # what the user would be shown: seen items masked, the target too
                shown = keep_candidates(mask_seen(scores.clone(), batch.seen), batch.candidates)
                top = shown.topk(self._list_k, dim=1)
                self._keep_lists(top.indices.masked_fill(top.values == float("-inf"), 0))  # past the candidates: none
            scores = keep_candidates(mask_seen(scores, batch.seen, batch.target), batch.candidates)
            return dense_ranks(scores, batch.target, self.ties, batch.user)
        if self.metric_set.has_uncut:
            raise ValueError(
                f"{type(self).__name__} recommends a top-k list, so metrics without a cutoff (e.g. 'mrr@all') "
                "cannot be computed; give them a cutoff"
            )
        k = min(self.metric_set.max_k + 1, self.num_items)
        ids, scores = self.recommend(batch, k)
        if self.metric_set.list_k:
            self._keep_lists(ids[:, : self._list_k])
        ranks = list_ranks(ids, scores, batch.target, batch.seen, self.num_items, self.ties, batch.user,
                           batch.candidates)
        return self._rank_repeats(batch, ranks, k)

    @property
    def _list_k(self) -> int:
        return min(self.metric_set.list_k, self.num_items)

    def _keep_lists(self, ids: Tensor) -> None:
        """Keep this batch's (B, <= list_k) recommended ids for the list metrics (evaluation's own call only)."""
        if self.__dict__.get("_reporting_stage") is None:
            return
        width = self._list_k
        if ids.shape[1] < width:  # a short list: no item (0) in the remaining slots
            ids = torch.cat([ids, ids.new_zeros(ids.shape[0], width - ids.shape[1])], dim=1)
        self._kept_lists = ids.long()

    def _rank_repeats(self, batch: Batch, ranks: Tensor, k: int) -> Tensor:
        """Re-rank the windows whose target is in ``seen`` (a repeat), which ``recommend`` may not list.

        Those windows are asked again without ``seen`` (nothing excluded) and with the target field
        blanked (the model gets histories only), for k + (the window's distinct seen items) entries,
        so at least k entries remain once the engine masks the seen items other than the target
        (:func:`recsys.metrics.list_ranks` masks them, exactly as it masks dense scores). Windows are
        grouped by list length, so a window's list does not depend on the other windows of its batch.
        """
        if batch.seen is None:
            return ranks
        repeat = (batch.seen == batch.target[:, None]).any(dim=1) & (batch.target > 0)
        if not repeat.any():
            return ranks
        ranks = ranks.clone()
        distinct = distinct_items(batch.seen)
        for extra in distinct[repeat].unique().tolist():
            rows = (repeat & (distinct == extra)).nonzero().flatten()
            sub = batch.select(rows)
            # the target field blanked too (0, as in predict runs): the model gets histories only
            asked = sub._replace(seen=None, target=torch.zeros_like(sub.target))
            stage, self._reporting_stage = self.__dict__.get("_reporting_stage"), None  # a re-query reports nothing
            try:
                ids, scores = self.recommend(asked, min(k + extra, self.num_items))
            finally:
                self._reporting_stage = stage
            ranks[rows] = list_ranks(ids, scores, sub.target, sub.seen, self.num_items, self.ties, sub.user,
                                     sub.candidates).to(ranks)
        return ranks

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:  # None: manual optimization (Pop)
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.target))
        return loss

    # Evaluation: each step ranks its batch's targets; the metrics are computed once per epoch
    # from every window's rank, gathered from all ranks and de-duplicated by window index, so a
    # distributed sampler's padding (repeated windows) never counts twice and every process logs
    # the same numbers.

    def _evaluate(self, batch: Batch, stage: str) -> None:
        self._reporting_stage = stage
        try:
            ranks = self.rank(batch)
        finally:
            self._reporting_stage = None
        index = batch.index if batch.index is not None else torch.full_like(ranks, -1)
        cold = batch.cold if batch.cold is not None else torch.zeros_like(ranks, dtype=torch.bool)
        rows = torch.stack([index, ranks.long(), cold.long(), batch.user.long()], dim=1)
        if self.metric_set.list_k:
            lists = self.__dict__.pop("_kept_lists", None)
            if lists is None:
                raise RuntimeError(f"{type(self).__name__} overrides rank(), so the list metrics "
                                   f"({', '.join(n for n, _, _ in self.metric_set.list_entries)}) cannot see its lists")
            rows = torch.cat([rows, lists.to(rows.device)], dim=1)  # columns 4..: the recommended ids
        self._eval_ranks.setdefault(stage, []).append(rows)

    @property
    def _eval_ranks(self) -> dict[str, list[Tensor]]:
        if not hasattr(self, "_eval_buffer"):
            self._eval_buffer: dict[str, list[Tensor]] = {}
        return self._eval_buffer

    def _gathered(self, stage: str) -> Tensor:
        """(n, 4) int64 rows (window index, rank, cold, user) of this epoch's ``stage`` windows,
        from every process, each window once (rows without an index are all kept)."""
        rows = self._eval_ranks.pop(stage, [])
        width = 4 + (self._list_k if self.metric_set.list_k else 0)
        local = torch.cat(rows) if rows else torch.empty(0, width, dtype=torch.long, device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            # all_gather needs equal shapes: pad every process's rows to the longest.
            sizes = cast(Tensor, self.all_gather(torch.tensor(len(local), device=local.device))).reshape(-1)
            padded = torch.full((int(sizes.max()), width), -2, dtype=torch.long, device=local.device)
            padded[: len(local)] = local
            gathered = cast(Tensor, self.all_gather(padded)).reshape(-1, width)  # a tensor in, a tensor out
            local = gathered[gathered[:, 0] != -2]
        indexed = local[:, 0] >= 0
        if indexed.any():
            unique = torch.unique(local[indexed, 0], return_inverse=True)[1]
            first = torch.full((int(unique.max()) + 1,), len(local), dtype=torch.long, device=local.device)
            first.scatter_reduce_(0, unique, torch.arange(int(indexed.sum()), device=local.device), "amin")
            local = torch.cat([local[indexed][first], local[~indexed]])
        return local

    def evaluated_ranks(self, stage: str) -> Tensor | None:
        """The last finished ``stage`` ("val" or "test") epoch's windows: (n, 4) int64 rows
        (window index, rank of the target (1 = best), cold, user index), every window once,
        gathered from every process, on the CPU; None before one has finished. Any rank metric
        and any paired comparison of two models over the same windows can be recomputed from
        these (``recsys study`` saves the test ones of every run)."""
        return self._evaluated.get(stage)

    @property
    def _evaluated(self) -> dict[str, Tensor]:
        if not hasattr(self, "_evaluated_rows"):
            self._evaluated_rows: dict[str, Tensor] = {}
        return self._evaluated_rows

    def _log_epoch_metrics(self, stage: str) -> None:
        rows = self._gathered(stage)
        self._evaluated[stage] = rows[:, :4].cpu()
        if len(rows) == 0:
            return
        ranks, cold = rows[:, 1], rows[:, 2].bool()
        self._log_metrics(ranks, stage)
        if cold.any():
            # Targets held out of training (data.cold_items): the same metrics over them alone.
            self._log_metrics(ranks[cold], f"{stage}/cold", prog_bar=False)
        if self.metric_set.list_k:
            for name, value in self.metric_set.of_lists(rows[:, 4:], self._list_context()).items():
                self.log(f"{stage}/{name}", value.to(self.device), sync_dist=True)
        self.log(f"{stage}/windows", float(len(rows)), sync_dist=True)

    def _list_context(self) -> ListContext:
        catalog = self.catalog
        if catalog is None:
            raise RuntimeError(f"{type(self).__name__} has no catalog: the list metrics need the items' training popularity")
        popularity = torch.as_tensor(catalog.popularity, dtype=torch.float)
        users = getattr(catalog, "num_users", None)
        if users is None:
            raise RuntimeError(f"{type(self).__name__}'s catalog does not say how many users the data has "
                               "(Catalog(..., num_users=)): the list metrics need it")
        return ListContext(self.num_items, popularity, int(users), catalog)

    def _log_metrics(self, ranks: Tensor, prefix: str, prog_bar: bool = True) -> None:
        """Log every metric's mean over ``ranks`` (n,) as ``{prefix}/{name}``."""
        for name, values in self.metric_set(ranks).items():
            # Every process holds the same gathered values; sync_dist only keeps Lightning's
            # epoch-level bookkeeping consistent across processes.
            self.log(f"{prefix}/{name}", values.float().mean(), sync_dist=True,
                     prog_bar=prog_bar and name == "ndcg@10")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._eval_ranks.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._eval_ranks.pop("test", None)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        ids, scores = self.recommend(batch, self.predict_k or self.metric_set.max_k)
        return {"user": batch.user, "items": ids, "scores": scores}
