"""``recsys study``: fair comparisons as a feature: equal tuning budgets, seeds, paired tests, cost.

A study file names datasets, models (config + overrides + optional search space), the budget,
the validation metric that selects, and the reference model. ``run`` claims and runs every slot
(resumable, shareable across workers through one database), ``status`` counts them, ``report``
writes the tables and plots. See docs/studies.md.

The public names load on first use (no submodule is imported with the package), so a run's
``recsys.study.RunRecorder`` does not pull in Optuna, and the package has no import cycle.
"""

from __future__ import annotations

from recsys.lazy import lazy_exports

_EXPORTS = {
    "OptunaPruning": "recsys.study.pruning",
    "RunRecorder": "recsys.study.recorder",
    "StudyError": "recsys.study.spec",
    "StudySpec": "recsys.study.spec",
    "load_study": "recsys.study.spec",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
