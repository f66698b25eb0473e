"""Third-party messages that say nothing about the user's run, silenced narrowly.

Each filter matches one message, by its text and the module that emits it, so a new warning
from the same library still shows. Warnings about the run itself (a dataloader with too few
workers, a metric that could not be logged, ...) are left alone. Called by the CLI at start.
"""

from __future__ import annotations

import logging
import warnings

#: (message regex, emitting module regex) of warnings that concern the libraries, not the run.
WARNINGS = [
    # lightning's own pytree helper calls an API torch deprecated; nothing a user can change.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
]

#: Start of info lines Lightning logs on every run that advertise a service.
INFO_PREFIXES = ("💡 Tip: For seamless cloud logging",)


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(INFO_PREFIXES)


def silence_evaluation_only_noise() -> None:
    """For ``recsys validate|test|predict``: Lightning's notice that a checkpoint's callback state
    will not be reloaded into another folder concerns resuming training, not evaluating it."""
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from",
                            module=r"lightning\.pytorch\.callbacks\.model_checkpoint")


def silence_library_noise() -> None:
    """Install the filters (idempotent)."""
    for message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropAdvert) for f in log.filters):
            log.addFilter(_DropAdvert())
