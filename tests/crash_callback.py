"""A callback that kills its own process (SIGKILL: no cleanup, no checkpoint) mid-epoch."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class KillRunnerOnce(Callback):
    """At the start of ``epoch``, SIGKILL the parent process (a ``recsys study run`` worker), once:
    ``marker`` is created first, so the resumed run (same command, same callback) goes on. The
    run's own process dies with its parent (the runner sets PR_SET_PDEATHSIG)."""

    def __init__(self, epoch: int, marker: str):
        self.epoch, self.marker = epoch, marker

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)  # now, not when the parent's death reaches us
