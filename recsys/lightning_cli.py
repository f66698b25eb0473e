"""``recsys fit|validate|test|predict``: LightningCLI with recsys defaults."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from jsonargparse.typing import NonNegativeInt

from recsys.callbacks import TopKWriter
from recsys.config_checks import config_problems
from recsys.lazy import object_at
from recsys.noise import silence_evaluation_only_noise, silence_library_noise
from recsys.progress import LogProgress
from recsys.results import format_table, write_results
from recsys.data.datamodule import RecDataModule
from recsys.models.base import RecModule
from recsys.plugins import import_models, load_plugins

MONITOR = "val/ndcg@10"
PATIENCE = 10  #: validations without improvement before the default EarlyStopping ends a fit


class ConfigError(ValueError):
    """A run's configuration cannot work (e.g. a callback monitors a metric nobody logs)."""


#: Lines of a jsonargparse error that say nothing about what is wrong with the user's value.
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Expected a <class 'NoneType'>"
    r"|Given value( type)?: .*|Expected a path but .* either not accessible or invalid)$"
)


def _registered_names(key: str) -> list[str]:
    """Names a ``model`` / ``data`` value may take (the short class names)."""
    if key.split(".")[0] == "model":
        from recsys.plugins import get_models, unimportable

        return sorted(name for name in get_models() if name not in unimportable)
    if key.split(".")[0] == "data":
        from recsys.data.datamodule import RecDataModule

        found, todo = set(), [RecDataModule]
        while todo:
            for sub in todo.pop().__subclasses__():
                found.add(sub.__name__)
                todo.append(sub)
        return sorted(found)
    return []


def _accepted_options(class_path: str) -> list[str]:
    try:
        cls = object_at(class_path)
        if cls is None:
            return []
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # only a hint: never let it hide the real error
        return []


def explain(message: str) -> str:
    """A jsonargparse error (nested, many lines) -> one line that keeps what names the problem,
    plus the candidates for an unknown class name or option."""
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not _NOISE.match(line)]
    text = " ".join(kept) if kept else message.strip()
    key = re.search(r'Parser key "([^"]+)"', message)
    unknown = re.search(r"Expected a dot import path string: (\S+)", message)
    from recsys.plugins import unimportable

    if unknown and key and unknown.group(1) in unimportable:
        return f"{unimportable[unknown.group(1)]} (so {key.group(1)} cannot be {unknown.group(1)})"
    if unknown and key:
        names = _registered_names(key.group(1))
        if names:
            close = difflib.get_close_matches(unknown.group(1), names, n=3)
            text = text.rstrip(".") + (f". Did you mean {' or '.join(close)}?" if close else "") + f" Registered: {', '.join(names)}"
    option = re.search(r"Problem with given class_path '([^']+)':\s*Option '([^']+)' is not accepted", message)
    if option:
        accepted = _accepted_options(option.group(1))
        close = difflib.get_close_matches(option.group(2), accepted, n=3)
        if close:
            text = text.rstrip(".") + f". Did you mean {' or '.join(close)}?"
        if accepted:
            text += f" Accepted: {', '.join(accepted)}"
    return text


def follow_model_monitor(config) -> None:
    """Callbacks left on the CLI's default monitor follow ``--monitor`` when given, else the
    model's own ``monitor`` (``RecModule.monitor``: ``val/ndcg@10`` for ranking models,
    ``val/auc`` for CTR ones), so ``recsys fit --model=DIN --data=CTRDataModule`` selects
    checkpoints on AUC without a callbacks block, and ``--monitor val/hit@20`` moves both the
    checkpoint and the early stopping. A monitor set explicitly to anything else is kept as
    written. Edits ``config`` (one subcommand's parsed configuration) in place."""
    if not hasattr(config, "get"):
        return
    if config.get("monitor"):
        monitor, mode = config["monitor"], config.get("monitor_mode") or "max"
    else:
        model = config.get("model")
        class_path = model.get("class_path") if model is not None and hasattr(model, "get") else None
        if not class_path:
            return
        try:
            model_class = object_at(class_path)
        except ImportError:
            return  # reported by the parser's own check of class_path
        monitor, mode = getattr(model_class, "monitor", (MONITOR, "max"))
    if (monitor, mode) == (MONITOR, "max"):
        return
    for _, init_args in _callback_args(config):
        if init_args.get("monitor") == MONITOR:
            init_args["monitor"], init_args["mode"] = monitor, mode


def _callback_args(config) -> list[tuple[str, Any]]:
    """(class_path, init_args) of each callback in ``trainer.callbacks`` that has init_args."""
    pairs = []
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        init_args = callback.get("init_args") if hasattr(callback, "get") else None
        if init_args is not None:
            pairs.append((str(callback.get("class_path", "")), init_args))
    return pairs


def apply_patience(config) -> None:
    """``--patience N`` (or ``patience: N`` at the top of a config) sets the patience of every
    EarlyStopping callback whose own patience is the CLI's default (10), so a model whose epochs
    are short (BERT4Rec's windows, say) can wait longer without restating the callbacks list. A
    patience set explicitly on a callback is kept as written. Edits ``config`` in place."""
    if not hasattr(config, "get") or config.get("patience") is None:
        return
    for class_path, init_args in _callback_args(config):
        if class_path.endswith("EarlyStopping") and init_args.get("patience") == PATIENCE:
            init_args["patience"] = int(config["patience"])


class RecsysArgumentParser(LightningArgumentParser):
    """Configuration errors as one ``recsys: error: ...`` line naming the key (and the candidates
    for an unknown model or option), not argparse's usage block; ``RECSYS_DEBUG=1`` restores it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --trainer.max_epoch must not quietly mean max_epochs
        super().__init__(*args, **kwargs)

    def dump(self, cfg, *args, **kwargs) -> str:
        # --print_config and the run's saved config.yaml show the monitor the run will use.
        cfg = cfg.clone() if hasattr(cfg, "clone") else cfg
        follow_model_monitor(cfg)
        apply_patience(cfg)
        return super().dump(cfg, *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        from jsonargparse._common import debug_mode_active

        if not self.exit_on_error or debug_mode_active() or os.environ.get("RECSYS_DEBUG"):
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        print(f"recsys: error: {explain(message)} (options: {prog} --help)", file=sys.stderr)
        self.exit(2)


class RecsysCLI(LightningCLI):
    """LightningCLI with recsys defaults: ``num_items`` linked from the data, checkpoints and
    early stopping on ``val/ndcg@10``, validation and test of the best checkpoint after ``fit``,
    and a top-K writer for ``predict``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        parser.add_lightning_class_args(TopKWriter, "predictions")
        parser.add_argument(
            "--monitor", type=Optional[str], default=None,
            help="the validation metric that selects the checkpoint and stops training early (e.g. val/hit@20; "
                 "the model must log it); default: the model's own (val/ndcg@10 for ranking models)",
        )
        parser.add_argument("--monitor_mode", type=Optional[Literal["max", "min"]], default=None,
                            help="whether --monitor improves upward (max, the default) or downward (min)")
        parser.add_argument(
            "--patience", type=Optional[NonNegativeInt], default=None,
            help=f"validations without improvement of the monitor before early stopping ends training "
                 f"(default {PATIENCE}); e.g. more for a model whose epochs are short",
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="after fit, validate and test the best checkpoint and print both metric tables",
        )
        parser.set_defaults(
            {
                "trainer.callbacks": [
                    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                     "init_args": {"monitor": MONITOR, "mode": "max", "save_last": False,
                                   "filename": "best-{epoch}", "auto_insert_metric_name": False}},
                    # last.ckpt after every validation, for --ckpt_path last. (Since Lightning 2.6 the
                    # best one's save_last writes it only when a new best is saved: a resume would go
                    # back to the best epoch and redo every epoch since.) save_last "link" is a no-op
                    # here (the link would be the file itself) except at the end of a fit that took no
                    # step (Pop, EASE): then it writes last.ckpt once, so those runs have one too.
                    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                     "init_args": {"monitor": None, "save_top_k": 1, "filename": "last",
                                   "enable_version_counter": False, "save_last": "link"}},
                    {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                     "init_args": {"monitor": MONITOR, "mode": "max", "patience": PATIENCE}},
                ],
            }
        )

    def _prepare_subcommand_parser(self, klass, subcommand: str, **kwargs):
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        # --ckpt_path reads tensors and plain values only. torch >= 2.6 already defaults to that for
        # local files, but Lightning 2.6 passes weights_only=False for http(s) URLs unless told.
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, {}):
            parser.set_defaults(weights_only=True)
        # validate/test print recsys's short table (after_validate/after_test), not Lightning's.
        if "verbose" in self._subcommand_method_arguments.get(subcommand, {}):
            parser.set_defaults(verbose=False)
        return parser

    def parse_arguments(self, parser, args) -> None:
        self._argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the model's arguments with the hyper-parameters saved in ``--ckpt_path``
        (the checkpoint rebuilds the model it was saved from, whatever a ``--config`` file says);
        a model argument given on the command line (:func:`explicit_model_keys`) still wins, so a
        test-time option (``recsys test --ckpt_path X --model.ties random``, a ranking mode, a
        grounder) is applied as written, not dropped."""
        subcommand = self.config.get("subcommand")
        before = self.config.clone() if subcommand else None
        super()._parse_ckpt_path()
        if before is None:
            return
        for key in explicit_model_keys(getattr(self, "_argv", [])):
            path = f"{subcommand}.model.{key}"
            if path in before:
                self.config[path] = before[path]

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        follow_model_monitor(config)
        apply_patience(config)
        problems = config_problems(config)
        if problems:
            raise ConfigError("; ".join(problems))

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but a class refusing its arguments (``ValueError`` from ``__init__``,
        wrapped by jsonargparse in a many-line union error) is one :class:`ConfigError` line."""
        try:
            super().instantiate_classes()
        except ValueError as exc:
            if os.environ.get("RECSYS_DEBUG"):
                raise
            raise ConfigError(explain(str(exc))) from exc

    def instantiate_trainer(self, **kwargs: Any):
        """LightningCLI's trainer, with two defaults of our own: ``logger: true`` means CSV plus
        TensorBoard (when installed) in one ``lightning_logs/version_N`` folder, without Lightning's
        notice about tensorboardX; and when standard output is not a terminal, plain progress
        lines (:class:`~recsys.progress.LogProgress`) instead of a bar that prints nothing."""
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True):  # Lightning reads None as its default logger
            kwargs.setdefault("logger", default_loggers(config.get("default_root_dir") or os.getcwd()))
        callbacks = config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        wants_bar = config.get("enable_progress_bar", True) is not False
        if wants_bar and not sys.stdout.isatty() and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs.setdefault("callbacks", [*callbacks, LogProgress()])
        return super().instantiate_trainer(**kwargs)

    def before_validate(self) -> None:
        silence_evaluation_only_noise()

    def before_test(self) -> None:
        silence_evaluation_only_noise()

    def before_predict(self) -> None:
        silence_evaluation_only_noise()

    def before_fit(self) -> None:
        self._resolve_last_checkpoint()
        if not isinstance(self.model, RecModule):
            return
        logged = self.model.logged_metrics("train") | self.model.logged_metrics("val")
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning's callback connector
            monitor = getattr(callback, "monitor", None)
            if monitor and monitor not in logged:
                raise ConfigError(
                    f"{type(callback).__name__} monitors {monitor!r}, which the model does not log; "
                    f"it logs {sorted(logged)} (set model.init_args.metrics, or the callback's monitor)"
                )

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last`` resumes from the newest ``last*.ckpt`` of any earlier run under
        this run's root directory. (Lightning looks only in the new run's own checkpoint folder,
        which a fresh logger version leaves empty, and would silently start from scratch.)"""
        assert self.subcommand is not None  # the before_/after_ hooks run only for a subcommand
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        roots = {Path(self.trainer.default_root_dir)}
        roots |= {Path(save_dir) for logger in self.trainer.loggers if (save_dir := getattr(logger, "save_dir", None))}
        found = [path for root in roots if root.is_dir() for path in root.rglob("last*.ckpt")]
        if found:
            last = max(found, key=lambda path: path.stat().st_mtime)
            config["ckpt_path"] = str(last)
            # Keep checkpointing into the same folder: ModelCheckpoint then restores its best score
            # too (it drops it when the folder changes, and would crown the next epoch "best").
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                    callback.dirpath = str(last.parent)
            print(f"recsys: resuming from {last}", file=sys.stderr)
        else:
            print(f"recsys: --ckpt_path last: no last*.ckpt under {', '.join(map(str, sorted(roots)))}; "
                  "starting from scratch", file=sys.stderr)
            config["ckpt_path"] = None

    def after_fit(self) -> None:
        assert self.subcommand is not None  # the before_/after_ hooks run only for a subcommand
        fast_dev_run = self.trainer.fast_dev_run  # type: ignore[attr-defined]  # set by Lightning's trainer setup
        if not self.config_init[self.subcommand].get("test_after_fit", True) or fast_dev_run:
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and bool(getattr(checkpoint, "best_model_path", "")) else None
        metrics: dict[str, Any] = {}
        for evaluate in (self.trainer.validate, self.trainer.test):
            for results in evaluate(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False):
                metrics.update(results)
        best = getattr(checkpoint, "best_model_path", "") or None
        self._report(metrics, checkpoint=best, best_epoch=_epoch_of(best))

    def after_validate(self) -> None:
        self._report(self._stage_metrics("val"), checkpoint=self._ckpt_path())

    def after_test(self) -> None:
        self._report(self._stage_metrics("test"), checkpoint=self._ckpt_path())

    def _stage_metrics(self, stage: str) -> dict[str, Any]:
        return {k: v for k, v in self.trainer.callback_metrics.items() if k.startswith(f"{stage}/")}

    def _ckpt_path(self) -> str | None:
        assert self.subcommand is not None
        return self.config_init[self.subcommand].get("ckpt_path")

    def _report(self, metrics: dict[str, Any], **about: Any) -> None:
        """Print the short metric table; save every value, the config and the versions in the run
        folder (``results.json``, beside ``config.yaml`` and the checkpoints)."""
        folder = self.trainer.log_dir  # a broadcast under DDP: every process must ask, not only rank 0
        if not metrics or not self.trainer.is_global_zero:
            return
        if about.get("checkpoint"):
            print(f"recsys: metrics of {about['checkpoint']}")
        print(format_table(metrics))
        if folder is None or not Path(folder).is_dir():
            return
        assert self.subcommand is not None
        try:
            config = yaml.safe_load(self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False))
        except Exception as error:  # never lose the numbers over a config that will not serialize
            config = {"error": f"could not serialize the configuration: {error}"}
        path = write_results(folder, metrics, subcommand=self.subcommand, **about, config=config)
        print(f"recsys: every metric, the config and the versions: {path}")


def explicit_model_keys(argv: list[str]) -> list[str]:
    """The model arguments an argument list sets, as config keys under ``model``, for every way
    jsonargparse takes them: ``--model.ties=random``, ``--model.init_args.ties random``,
    ``--model.metrics+=ild@10``, ``--model.init_args='{"ties": "random"}'``, and ``--model=`` a
    JSON/YAML mapping or a YAML file with ``init_args`` -> ``init_args.ties``, ``init_args.metrics``.
    (A ``--config`` file is not an explicit model option: the checkpoint's values replace it.)"""
    keys: list[str] = []
    for i, token in enumerate(argv):
        if not token.startswith("--model"):
            continue
        name, has_value, value = token[2:].partition("=")
        if not has_value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
        name = name.rstrip("+")
        if name == "model":  # --model=SASRec, or a whole class spec as a mapping or a file
            keys += [f"init_args.{k}" for k in _mapping_of(value).get("init_args") or {}]
        elif name == "model.init_args":
            keys += [f"init_args.{k}" for k in _mapping_of(value)]
        elif name.startswith("model.") and name not in ("model.help", "model.class_path"):
            key = name[len("model."):]
            keys.append(key if key.startswith(("init_args.", "dict_kwargs.")) else f"init_args.{key}")
    return keys


def _mapping_of(value: str) -> dict[str, Any]:
    """A command-line value read as a mapping: inline JSON/YAML, or a YAML file; else {}."""
    text = value
    if value.endswith((".yaml", ".yml", ".json")) and Path(value).is_file():
        text = Path(value).read_text()
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _epoch_of(checkpoint: str | None) -> int | None:
    """The epoch a checkpoint was saved at: from the default ``best-{epoch}`` file name, else
    from the file (memory-mapped, weights only: no tensor is read); None when neither says."""
    if not checkpoint:
        return None
    match = re.search(r"best-(\d+)\.ckpt$", checkpoint)
    if match:
        return int(match.group(1))
    try:
        import torch

        epoch = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True).get("epoch")
    except Exception:  # a custom file format: the best epoch is only missing from results.json
        return None
    return int(epoch) if isinstance(epoch, int) else None


def default_loggers(root: str) -> list[Logger]:
    """CSV (``metrics.csv``, always) and TensorBoard (if ``tensorboard`` is installed: the
    ``tensorboard`` extra), writing into the same ``<root>/lightning_logs/version_N``."""
    # CSV first: it warns about (and would clear) a folder another logger wrote into first.
    csv = CSVLogger(save_dir=root, version=SLURMEnvironment.job_id())  # one folder per Slurm job, as Lightning's
    loggers: list[Logger] = [csv]
    if importlib.util.find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=root, version=csv.version))
    return loggers


def run_cli(argv: list[str] | None, run: bool = True) -> RecsysCLI:
    """Build (and by default run) the LightningCLI on ``argv`` (None = the command line);
    plugins load first, and their models are imported, so each resolves by short class name."""
    load_plugins()
    import_models()
    silence_library_noise()
    return RecsysCLI(
        RecModule, RecDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, args=argv, run=run, parser_class=RecsysArgumentParser,
    )
