"""``recsys fit|validate|test|predict``: LightningCLI with recsys defaults."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from recsys.callbacks import TopKWriter
from recsys.data.datamodule import RecDataModule
from recsys.models.base import RecModule
from recsys.plugins import load_plugins

MONITOR = "val/ndcg@10"


class ConfigError(ValueError):
    """A run's configuration cannot work (e.g. a callback monitors a metric nobody logs)."""


class RecsysCLI(LightningCLI):
    """LightningCLI with recsys defaults: ``num_items`` linked from the data, checkpoints and
    early stopping on ``val/ndcg@10``, validation and test of the best checkpoint after ``fit``,
    and a top-K writer for ``predict``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        parser.add_lightning_class_args(TopKWriter, "predictions")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="after fit, validate and test the best checkpoint and print both metric tables",
        )
        parser.set_defaults(
            {
                "trainer.callbacks": [
                    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                     "init_args": {"monitor": MONITOR, "mode": "max", "save_last": True,
                                   "filename": "best-{epoch}", "auto_insert_metric_name": False}},
                    {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                     "init_args": {"monitor": MONITOR, "mode": "max", "patience": 10}},
                ],
            }
        )

    def before_fit(self) -> None:
        metric_set = getattr(self.model, "metric_set", None)
        if metric_set is None:
            return
        logged = {f"val/{name}" for name, _, _ in metric_set.entries} | {"train/loss"}
        for callback in self.trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if monitor and monitor not in logged:
                raise ConfigError(
                    f"{type(callback).__name__} monitors {monitor!r}, which the model does not log; "
                    f"it logs {sorted(logged)} (set model.init_args.metrics, or the callback's monitor)"
                )

    def after_fit(self) -> None:
        if not self.config_init[self.subcommand].get("test_after_fit", True) or self.trainer.fast_dev_run:
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and getattr(checkpoint, "best_model_path", "") else None
        self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)


def run_cli(argv: list[str] | None, run: bool = True) -> RecsysCLI:
    """Build (and by default run) the LightningCLI on ``argv`` (None = the command line);
    plugins load first so their models resolve by short class name."""
    load_plugins()
    return RecsysCLI(
        RecModule, RecDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, args=argv, run=run,
    )
