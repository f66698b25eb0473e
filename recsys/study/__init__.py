"""``recsys study``: fair comparisons as a feature: equal tuning budgets, seeds, paired tests, cost.

A study file names datasets, models (config + overrides + optional search space), the budget,
the validation metric that selects, and the reference model. ``run`` claims and runs every slot
(resumable, shareable across workers through one database), ``status`` counts them, ``report``
writes the tables and plots. See docs/studies.md.

The public names load on first use (no submodule is imported with the package), so a run's
``recsys.study.RunRecorder`` does not pull in Optuna, and the package has no import cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OptunaPruning": "recsys.study.pruning",
    "RunRecorder": "recsys.study.recorder",
    "StudyError": "recsys.study.spec",
    "StudySpec": "recsys.study.spec",
    "load_study": "recsys.study.spec",
}
__all__ = sorted(_EXPORTS)

def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
