"""Optuna pruning from inside a run: report the validation metric each epoch, stop when told.

The runner launches each tuning trial as its own ``recsys fit`` process and adds this callback
with the trial's storage URL and id, so the process reports to the same study database the
runner (or a runner on another machine) reads. A pruned run stops like an early-stopped one
and writes ``pruned.json``; the runner then marks the trial PRUNED.
"""

from __future__ import annotations

from pathlib import Path
import lightning.pytorch as pl

from recsys.study.records import PRUNED, write_json


class OptunaPruning(pl.Callback):
    """storage: the study's SQLAlchemy URL; study_name, trial_id: the trial this run is;
    monitor: the validation metric reported (the study's ``select``); trials: the study's trial
    budget (decides the pruner's startup trials, as in the runner)."""

    def __init__(self, storage: str, study_name: str, trial_id: int, monitor: str = "val/ndcg@10", trials: int = 0):
        self.storage, self.study_name, self.trial_id, self.monitor = storage, study_name, trial_id, monitor
        self.trials = trials
        self._trial = None

    def _get_trial(self):
        if self._trial is None:
            import optuna

            from recsys.study.claims import median_pruner, open_storage

            # the database opened as the runner's workers open it (SQLite serialized, a long lock timeout)
            study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage),
                                      pruner=median_pruner(self.trials))
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        prune = False
        if value is not None and trainer.is_global_zero:  # one process talks to the database
            trial = self._get_trial()
            trial.report(float(value), step=trainer.current_epoch)
            prune = trial.should_prune()
            if prune:
                write_json(Path(trainer.default_root_dir) / PRUNED, {"epoch": trainer.current_epoch,
                                                                      "value": float(value)})
        # every process stops together (a lone stop would hang the others at their next sync)
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
