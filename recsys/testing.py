"""The model contract: checks any model plugin can run from its own tests.

With pytest, subclass :class:`ModelContract` (each contract is one test)::

    import recsys.testing
    from my_plugin import plugin
    from my_plugin.model import MyModel

    class TestMyModel(recsys.testing.ModelContract):
        model = MyModel            # selected by its short class name, as users do
        plugin = plugin            # the module your entry point names (None: already registered)
        init_args = {"dim": 16}    # small: the contract trains on CPU, in seconds
        learn = {"max_epochs": 10, "init_args": {"lr": 0.01}}  # budget of the "learns" check

Without pytest, ``check_model(MyModel, plugin=plugin, init_args=..., tmp_path=...)`` runs the
same checks and raises ``AssertionError`` at the first broken one.

Everything runs through the LightningCLI, on CPU, with histories of at most :data:`MAX_LEN`
items. Most checks share two fits of ``max_epochs`` epochs on a tiny dataset packaged with
recsys (:func:`tiny_dataset`: 8 users, 15 items): one on the dataset and one on a copy in which
only the test targets differ (so a model that peeks at held-out targets is caught). The
"learns" check trains once more, with the ``learn`` budget, on :func:`rule_dataset` (a next-item
rule a sequential model can find) and compares the model with Pop and with itself read against
wrong targets, so a model that trains but scores the wrong items is caught. pytest is not
imported: test methods take pytest's built-in ``tmp_path_factory`` fixture by name.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

__all__ = ["LEARN_MARGIN", "MAX_LEN", "ModelContract", "check_model", "registered", "rule_dataset", "run_cli", "tiny_dataset"]

#: History length the contract's data module gives models (``data.max_len``).
MAX_LEN = 5
#: Longest top-k list the output checks ask ``recommend`` for.
TOP_K = 5
#: Two fits with the same seed must agree to this tolerance (float noise, not randomness).
TOLERANCE = 1e-6


#: The "learns" contract: a trained model's test hit@10 on :func:`rule_dataset` must beat Pop's and
#: every control's (the same model, with each test target swapped for a wrong item) by this much.
LEARN_MARGIN = 0.3


def tiny_dataset() -> Path:
    """The packaged tiny dataset (RecBole atomic files ``tiny/tiny.{inter,item,user}``); read-only."""
    return Path(__file__).parent / "testing_data" / "tiny"


_ADJECTIVES = ("Amber", "Bright", "Silent", "Golden", "Hidden", "Crimson", "Frozen", "Wild")
_NOUNS = ("River", "Harbor", "Forest", "Engine", "Garden", "Mirror", "Valley", "Tower")


def rule_dataset(out: Path, *, users: int = 96, items: int = 40, min_length: int = 6, max_length: int = 10,
                 seed: int = 0) -> Path:
    """Write a synthetic dataset whose next item follows a fixed rule, and return its folder.

    A random cyclic order of the ``items`` items is drawn; each user starts at a random item and
    steps along the cycle, so every next item is a function of the previous one (and never a
    repeat: ``max_length <= items``). A model that learns sequences finds the rule; popularity,
    nearly uniform here, does not. Items have distinct two-word titles (``movie_title``) for
    text models. Atomic files ``<out>/rule/rule.{inter,item}``; timestamps increase along each
    sequence.
    """
    import pandas as pd

    from recsys.data.atomic import write_atomic

    if not 2 <= min_length <= max_length <= items <= len(_ADJECTIVES) * len(_NOUNS):
        raise ValueError(f"need 2 <= min_length <= max_length <= items <= {len(_ADJECTIVES) * len(_NOUNS)}")
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(items) + 1  # item ids 1..items in the rule's order
    rows = []
    for user in range(1, users + 1):
        start, length = rng.integers(items), rng.integers(min_length, max_length + 1)
        for step in range(length):
            rows.append((str(user), str(cycle[(start + step) % items]), 1_000_000 + 1000 * user + step))
    folder = Path(out) / "rule"
    folder.mkdir(parents=True, exist_ok=True)
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    write_atomic(inter, folder / "rule.inter", {"user_id": "token", "item_id": "token", "timestamp": "float"})
    # Neighbouring ids share no word, so a text model's "next id" control is not helped by text.
    titles = [f"{_ADJECTIVES[i % 8]} {_NOUNS[(i // 8 + i) % 8]}" for i in range(items)]
    item = pd.DataFrame({"item_id": [str(i + 1) for i in range(items)], "movie_title": titles})
    write_atomic(item, folder / "rule.item", {"item_id": "token", "movie_title": "token_seq"})
    return folder


def run_cli(args: list[str], run: bool = True):
    """Run ``recsys`` with ``args`` (e.g. ``["fit", "--config", path, "--trainer.max_epochs=1"]``)
    in this process, as the command line would, and return the LightningCLI: its ``model``,
    ``datamodule`` and ``trainer`` are there to inspect. ``run=False`` only builds them.
    Plugins registered with :func:`registered` resolve by their short class names."""
    from recsys.lightning_cli import run_cli as run_lightning_cli

    return run_lightning_cli(list(args), run=run)


@contextmanager
def registered(plugin: object | None, name: str | None = None) -> Iterator[None]:
    """Register ``plugin`` (a module or object with ``@recsys.hookimpl`` functions) for the
    block, exactly as its entry point would be: declared version ranges checked, hooks and
    registrations validated. ``None``, or a plugin already registered, changes nothing."""
    from recsys.plugins import load_plugins, pm, register_plugin

    load_plugins()
    if plugin is None or pm.is_registered(plugin):
        yield
        return
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    register_plugin(plugin, name)
    try:
        yield
    finally:
        pm.unregister(plugin)


class TrainingProbe(pl.Callback):
    """Added to the contract's fits: records what training did and the metrics of the last
    validation and test runs (those of the best checkpoint, after ``fit``)."""

    def __init__(self) -> None:
        self.batches = 0
        self.bad_losses = 0
        self.changed: list[str] = []
        self.trainable = 0
        self.val: dict[str, float] = {}
        self.test: dict[str, float] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self._initial = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        self.trainable = len(self._initial)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and not torch.isfinite(loss).all():
            self.bad_losses += 1

    def on_train_end(self, trainer, pl_module) -> None:
        now = dict(pl_module.named_parameters())
        self.changed = [n for n, before in self._initial.items() if not torch.equal(before, now[n].detach())]
        del self._initial

    def _metrics(self, trainer, prefix: str) -> dict[str, float]:
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val = self._metrics(trainer, "val/")

    def on_test_end(self, trainer, pl_module) -> None:
        self.test = self._metrics(trainer, "test/")


class _Fit:
    """One finished ``recsys fit`` run of the contract: the CLI object and its probe."""

    def __init__(self, cli):
        self.cli = cli
        self.model = cli.model
        self.datamodule = cli.datamodule
        self.probe = next(c for c in cli.trainer.callbacks if isinstance(c, TrainingProbe))

    def test_batch(self):
        """Every evaluated user's test window, with ``seen`` (the history mask)."""
        return next(iter(self.datamodule.test_dataloader()))


class _Runs:
    """The model under test and its two fits, each made once (and a failure remembered)."""

    def __init__(self, model: type | None, plugin: object | None, init_args: dict | None, max_epochs: int, root: Path,
                 learn: dict | None = None):
        from recsys.models.base import SeqRecModule

        if not (isinstance(model, type) and issubclass(model, SeqRecModule)):
            raise TypeError(f"the model contract checks subclasses of recsys.SeqRecModule, got {model!r}")
        self.model, self.plugin, self.init_args = model, plugin, dict(init_args or {})
        self.max_epochs, self.root = max_epochs, Path(root)
        unknown = set(learn or {}) - {"max_epochs", "init_args", "data"}
        if unknown:
            raise TypeError(f"`learn` takes max_epochs, init_args and data, got {sorted(unknown)}")
        self.learn = None if learn is None else {"max_epochs": 10, **learn}
        self._fits: dict[str, _Fit] = {}
        self._failed: dict[str, Exception] = {}

    def fit(self, which: str = "tiny") -> _Fit:
        """``tiny``: the packaged dataset; ``rotated``: the same with other test targets; ``rule``:
        :func:`rule_dataset` with the ``learn`` budget; ``rule-pop``: Pop on the same data."""
        if which in self._failed:
            failed = self._failed[which]
            raise AssertionError(f"the contract's fit on the {which} data failed earlier: {failed}") from failed
        if which not in self._fits:
            try:
                self._fits[which] = _Fit(self._start(which))
            except Exception as exc:
                self._failed[which] = exc
                raise
        return self._fits[which]

    def _start(self, which: str):
        root = self.root / f"run-{which}"
        if which == "tiny":
            return self._run_cli(tiny_dataset(), root)
        if which == "rotated":
            return self._run_cli(_rotate_test_targets(tiny_dataset(), self.root / which), root)
        rule = self.root / "rule" / "rule"
        if not rule.exists():
            rule_dataset(self.root / "rule")
        learn = self.learn or {}
        data = [f"--data.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in learn.get("data", {}).items()]
        if which == "rule-pop":
            return self._run_cli(rule, root, model="Pop", init_args={}, max_epochs=1, extra=data)
        return self._run_cli(rule, root, init_args={**self.init_args, **learn.get("init_args", {})},
                             max_epochs=learn["max_epochs"], extra=data)

    def _run_cli(self, data: Path, root: Path, model: str | None = None, init_args: dict | None = None,
                 max_epochs: int | None = None, extra: tuple[str, ...] | list[str] = ()):
        from recsys.lightning_cli import run_cli

        init_args = self.init_args if init_args is None else init_args
        args = ["fit", f"--model={model or self.model.__name__}",
                *(f"--model.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in init_args.items()),
                "--data=SeqDataModule", f"--data.path={data}", f"--data.max_len={MAX_LEN}", *extra,
                "--seed_everything=0",
                f"--trainer.max_epochs={max_epochs or self.max_epochs}", "--trainer.accelerator=cpu",
                "--trainer.devices=1",
                f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1",
                f"--trainer.callbacks+={__name__}.TrainingProbe"]
        try:
            with registered(self.plugin), warnings.catch_warnings():
                # Inside pytest, LightningCLI warns that sys.argv holds pytest's arguments: it ignores them.
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
                return run_cli(args)
        except SystemExit as exc:  # jsonargparse exits on arguments it rejects
            raise AssertionError(f"`recsys {' '.join(args)}` was rejected (exit {exc.code}); "
                                 "its error is in the captured stderr") from None


def _rotate_test_targets(source: Path, out: Path) -> Path:
    """A copy of an atomic dataset in which each user's last interaction (the ``loo`` test
    target) takes the item of another user's: training and validation data are unchanged."""
    from recsys.data.atomic import read_atomic, write_atomic
    from recsys.data.dataset import load_sequences
    from recsys.data.sequences import LeaveOneOut

    name = source.name
    (out / name).mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        shutil.copy(file, out / name / file.name)
    inter, types = read_atomic(source / f"{name}.inter")
    # The engine's order: by time, equal times in file order (a stable sort).
    last = inter.sort_values("timestamp", kind="stable").groupby("user_id").tail(1).index
    inter.loc[last, "item_id"] = np.roll(inter.loc[last, "item_id"].to_numpy(), 1)
    write_atomic(inter, out / name / f"{name}.inter", types)
    before, after = load_sequences(source), load_sequences(out / name)
    assert isinstance(before.split, LeaveOneOut) and isinstance(after.split, LeaveOneOut)  # the default protocol
    same_training = (np.array_equal(before.catalog.popularity, after.catalog.popularity)
                     and before.split.evaluated.tolist() == after.split.evaluated.tolist()
                     and np.array_equal(before.sequences.offsets, after.sequences.offsets))
    assert same_training, "internal: the rotated copy changed more than the test targets"
    return out / name


# ---- the contracts -------------------------------------------------------------------------


def _top_k(model, batch) -> int:
    """The longest list every user has enough unseen items for (so no PAD or seen item must fill it)."""
    seen = batch.seen if batch.seen is not None else batch.history
    most_seen = max(len(set(row.tolist()) - {0}) for row in seen)
    return max(1, min(TOP_K, model.num_items - most_seen))


@torch.no_grad()
def _outputs(model, batch, k: int) -> dict[str, Tensor]:
    """What evaluation reads from a model, in eval mode: dense scores if any, and the top-k list."""
    model.eval()
    out = {}
    if model.is_dense:
        out["score()"] = model.score(batch)
    out["recommend() ids"], out["recommend() scores"] = model.recommend(batch, k)
    return out


def _assert_same(a: dict[str, Tensor], b: dict[str, Tensor], message: str) -> None:
    for key, value in a.items():
        same = value.shape == b[key].shape and torch.allclose(
            value.float(), b[key].float(), rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True)
        assert same, f"{key}: {message}"


def _check_registered(runs: _Runs) -> None:
    from recsys.plugins import get_models

    models = get_models()
    name = runs.model.__name__
    assert name in models, (
        f"{name} is not registered (registered models: {sorted(models)}): set `plugin` to the module your "
        "`recsys` entry point names, whose register_models hook registers it")
    assert models[name].obj is runs.model, (
        f"the short name {name!r} resolves to {models[name].obj!r}, not {runs.model!r}")


def _check_fits_and_evaluates(runs: _Runs) -> None:
    fit = runs.fit()
    probe, name = fit.probe, runs.model.__name__
    assert probe.batches > 0, f"{name}: `recsys fit` ran no training batch"
    assert probe.bad_losses == 0, f"{name}: loss() returned a non-finite value in {probe.bad_losses} training step(s)"
    if probe.trainable:
        assert probe.changed, (
            f"{name} has {probe.trainable} trainable parameter tensors but training changed none of them: "
            "does loss() depend on them, and does configure_optimizers() return an optimizer?")
    expected = [logged for logged, _, _ in fit.model.metric_set.entries]
    for stage, logged in (("val", probe.val), ("test", probe.test)):
        missing = [f"{stage}/{m}" for m in expected if f"{stage}/{m}" not in logged]
        assert not missing, f"{name}: after fit, {missing} were not logged (logged: {sorted(logged)})"
        bad = {k: v for k, v in logged.items()
               if not k.endswith("/windows") and not (math.isfinite(v) and 0 <= v <= 1)}  # windows: a count
        assert not bad, f"{name}: metrics must be finite and within [0, 1], got {bad}"


def _check_outputs(runs: _Runs) -> None:
    fit = runs.fit()
    model, batch, name = fit.model, fit.test_batch(), runs.model.__name__
    n, b = model.num_items, len(batch.target)
    k = _top_k(model, batch)
    first = _outputs(model, batch, k)
    _assert_same(first, _outputs(model, batch, k),
                 "two calls on the same batch in eval mode disagree: evaluation must be deterministic")
    if "score()" in first:
        scores = first["score()"]
        assert scores.shape == (b, n + 1), (
            f"{name}.score() must return (B, N + 1) = {(b, n + 1)}, got {tuple(scores.shape)}")
        assert scores.is_floating_point(), f"{name}.score() must return floats, got {scores.dtype}"
        assert not scores.isnan().any(), f"{name}.score() returned NaN"
        expected = scores.clone()
        try:
            scores.fill_(float("-inf"))  # the engine masks scores in place ...
        except RuntimeError as exc:
            raise AssertionError(f"{name}.score() returned a tensor that cannot be written in place "
                                 f"({exc}): return a new tensor (e.g. .clone() an expanded one)") from exc
        _assert_same({"score()": expected}, _outputs(model, batch, k),  # ... which must not reach the model
                     "returned a tensor the model keeps (a buffer or a view of one): return a new tensor")
    ids, top = first["recommend() ids"], first["recommend() scores"]
    assert ids.shape == (b, k) and top.shape == (b, k), (
        f"{name}.recommend(batch, {k}) must return ids and scores of shape (B, k) = {(b, k)}, "
        f"got {tuple(ids.shape)} and {tuple(top.shape)}")
    assert ids.dtype == torch.int64, f"{name}.recommend() ids must be int64, got {ids.dtype}"
    assert ((ids >= 1) & (ids <= n)).all(), f"{name}.recommend() returned ids outside 1..N = 1..{n} (0 is PAD)"
    assert (ids.sort(dim=1).values.diff(dim=1) != 0).all(), f"{name}.recommend() repeated an item in a row"
    if batch.seen is not None:
        repeated = (ids[:, :, None] == batch.seen[:, None, :]).any(-1)
        assert not repeated.any(), (
            f"{name}.recommend() returned items of batch.seen (the user's earlier items), e.g. user row "
            f"{int(repeated.any(1).nonzero()[0])}: exclude them")
    assert not top.isnan().any() and (top[:, :-1] >= top[:, 1:]).all(), (
        f"{name}.recommend() scores must be best first (non-increasing along each row, no NaN)")


def _check_no_target_leakage(runs: _Runs) -> None:
    fit = runs.fit()
    model, batch, name = fit.model, fit.test_batch(), runs.model.__name__
    # The data side: an evaluation history holds only the items before the target.
    sequences = fit.datamodule.data.sequences
    for row, user in enumerate(batch.user.tolist()):
        items = sequences.of(user)
        real = batch.history[row][batch.history[row] != 0].tolist()
        assert int(batch.target[row]) == items[-1] and real == items[:-1][-MAX_LEN:].tolist(), (
            f"internal: the test window of user {user} is not the items before the target")
    k = _top_k(model, batch)
    expected = _outputs(model, batch, k)
    other = batch._replace(target=batch.target % model.num_items + 1, labels=None, cold=None)
    _assert_same(expected, _outputs(model, other, k),
                 f"{name} reads batch.target (or labels, cold) at evaluation: the answer it must predict")
    # The model side: trained on data that differs only in the held-out test targets, it must
    # score the same test histories the same (given that it is deterministic, checked apart).
    _assert_same(expected, _outputs(runs.fit("rotated").model, batch, k),
                 f"{name} scores the same histories differently after training on data that differ only in "
                 "their test targets: it reads held-out targets (e.g. datamodule.data.sequences) instead of "
                 "the training batches and the catalog (or it is not deterministic under a seed)")


def _check_deterministic(runs: _Runs) -> None:
    a, b = runs.fit().probe.val, runs.fit("rotated").probe.val
    differ = {k: (a[k], b.get(k)) for k in a if b.get(k) is None or abs(a[k] - b[k]) > TOLERANCE}
    assert not differ, (
        f"{runs.model.__name__}: two fits with seed 0 on the same training and validation data gave different "
        f"validation metrics {differ}: draw every random number from torch/numpy/random (seeded by "
        "seed_everything), not from the clock, os.urandom or a global counter")


def _check_checkpoint_round_trip(runs: _Runs) -> None:
    from recsys.models.base import RecModule

    fit, name = runs.fit(), runs.model.__name__
    # Saved here rather than taken from ModelCheckpoint, which saves nothing for models that
    # take no optimizer step (Pop); after fit, the model holds the best checkpoint's state.
    path = runs.root / "round-trip.ckpt"
    fit.cli.trainer.save_checkpoint(path)
    try:
        restored = RecModule.load_from_checkpoint(path)
    except Exception as exc:
        raise AssertionError(
            f"{name}: RecModule.load_from_checkpoint(path) failed ({type(exc).__name__}: {exc}): call "
            "self.save_hyperparameters() in __init__, with plain values only (checkpoints load with weights_only)"
        ) from exc
    assert type(restored) is runs.model, f"{name}: the checkpoint restored a {type(restored).__name__}"
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=runs.root)
    tested = {k: float(v) for k, v in trainer.test(restored, datamodule=fit.datamodule, verbose=False)[0].items()}
    differ = {k: (v, tested.get(k)) for k, v in fit.probe.test.items()
              if tested.get(k) is None or abs(v - tested[k]) > TOLERANCE}
    assert not differ, f"{name}: the restored checkpoint tests differently from the model that saved it: {differ}"
    batch = fit.test_batch()
    k = _top_k(restored, batch)
    _assert_same(_outputs(fit.model, batch, k), _outputs(restored, batch, k),
                 "the restored checkpoint answers differently from the model that saved it: keep every "
                 "learned value in parameters or buffers (register_buffer), or in on_save_checkpoint")


def _check_learns(runs: _Runs) -> None:
    """On :func:`rule_dataset`, the trained model finds the next item: its test hit@10 beats Pop's
    and the controls' (the same rankings read against wrong targets) by :data:`LEARN_MARGIN`."""
    if runs.learn is None:
        return
    fit, name = runs.fit("rule"), runs.model.__name__
    model, batch = fit.model.eval(), fit.test_batch()
    n = model.num_items
    permutation = torch.from_numpy(np.random.default_rng(1).permutation(n) + 1)
    controls = {
        # A model that scores item i with another item's evidence (an off-by-one column, a
        # neighbouring catalog row, ids relabelled on one side only) hits these, not the targets.
        "next id": batch.target % n + 1,
        "previous id": (batch.target - 2) % n + 1,
        "permuted ids": permutation[batch.target - 1],
    }
    seen = batch.seen if batch.seen is not None else batch.history
    with torch.no_grad():
        hit = _hit_at(model, batch, 10)
        hits = {}
        for label, target in controls.items():
            # Only rows where the wrong item is neither the target nor already seen (a seen item
            # keeps its score when it is the target, as a repeat would, which no control wants).
            fair = (target != batch.target) & ~(seen == target[:, None]).any(1)
            hits[label] = _hit_at(model, batch._replace(target=target), 10, fair)
    pop = float(runs.fit("rule-pop").probe.test["test/hit@10"])
    best_control = max(hits.values())
    assert hit >= pop + LEARN_MARGIN and hit >= best_control + LEARN_MARGIN, (
        f"{name} did not learn the rule of recsys.testing.rule_dataset ({len(batch.target)} test users, {n} items, "
        f"{runs.learn['max_epochs']} epochs): test hit@10 {hit:.3f}, Pop {pop:.3f}, controls "
        f"{ {k: round(v, 3) for k, v in hits.items()} }; it must beat each by {LEARN_MARGIN}. If the model does learn, "
        "give it more budget (ModelContract.learn); if it beats Pop but not a control, it scores the wrong items")


def _hit_at(model, batch, k: int, rows: Tensor | None = None) -> float:
    """Mean hit@k of ``batch``'s targets (over ``rows``, a (B,) mask, if given) under the
    engine's own ranking (masking, ties)."""
    hits = (model.rank(batch) <= k).float()
    return float(hits[rows].mean() if rows is not None else hits.mean())


CONTRACTS = (_check_registered, _check_fits_and_evaluates, _check_outputs, _check_no_target_leakage,
             _check_deterministic, _check_checkpoint_round_trip, _check_learns)


def check_model(model: type, *, tmp_path: Path, plugin: object | None = None, init_args: dict | None = None,
                max_epochs: int = 2, learn: dict | None = None) -> None:
    """Run every contract on ``model`` (a ``recsys.SeqRecModule`` subclass), in order; raise
    ``AssertionError`` at the first one it breaks. ``learn`` as :attr:`ModelContract.learn`
    (``None``, the default here, skips the "learns" contract)."""
    runs = _Runs(model, plugin, init_args, max_epochs, tmp_path, learn)
    with registered(plugin):
        for contract in CONTRACTS:
            contract(runs)


class ModelContract:
    """Subclass as ``TestSomething`` and set ``model`` (and ``plugin``, ``init_args``): pytest
    then runs one test per contract. The two fits are made once per class."""

    #: the model class (a subclass of recsys.SeqRecModule)
    model: ClassVar[type | None] = None
    _contract_runs: ClassVar[_Runs]  # set on each subclass by its first test
    #: the module (or object) your ``recsys`` entry point names; None if already registered
    plugin: ClassVar[Any] = None
    #: the model's init arguments, besides num_items: keep it small
    init_args: ClassVar[dict] = {}
    #: epochs per fit
    max_epochs: ClassVar[int] = 2
    #: the budget of the "learns" contract on :func:`rule_dataset`: ``max_epochs`` (default 10),
    #: ``init_args`` merged over ``init_args`` (e.g. a higher lr) and ``data`` (SeqDataModule
    #: options, e.g. batch_size). ``None`` skips it: only for models that do not learn from
    #: sequences (Pop, the reference it is compared with).
    learn: ClassVar[dict | None] = {}

    def _check(self, contract, tmp_path_factory) -> None:
        cls = type(self)
        if "_contract_runs" not in cls.__dict__:  # one per subclass, shared by its tests
            cls._contract_runs = _Runs(cls.model, cls.plugin, cls.init_args, cls.max_epochs,
                                       tmp_path_factory.mktemp(f"contract-{cls.__name__}"), cls.learn)
        with registered(cls.plugin):
            contract(cls._contract_runs)

    def test_registered_by_short_name(self, tmp_path_factory):
        self._check(_check_registered, tmp_path_factory)

    def test_fits_and_evaluates_through_the_cli(self, tmp_path_factory):
        self._check(_check_fits_and_evaluates, tmp_path_factory)

    def test_scores_and_recommendations_are_valid(self, tmp_path_factory):
        self._check(_check_outputs, tmp_path_factory)

    def test_no_target_leakage(self, tmp_path_factory):
        self._check(_check_no_target_leakage, tmp_path_factory)

    def test_deterministic_with_a_seed(self, tmp_path_factory):
        self._check(_check_deterministic, tmp_path_factory)

    def test_checkpoint_round_trip(self, tmp_path_factory):
        self._check(_check_checkpoint_round_trip, tmp_path_factory)

    def test_learns_a_next_item_rule(self, tmp_path_factory):
        if type(self).learn is None:
            import unittest

            raise unittest.SkipTest(f"{type(self).__name__}.learn is None")  # pytest reports a skip
        self._check(_check_learns, tmp_path_factory)
