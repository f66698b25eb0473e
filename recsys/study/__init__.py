"""``recsys study``: fair comparisons as a feature: equal tuning budgets, seeds, paired tests, cost.

A study file names datasets, models (config + overrides + optional search space), the budget,
the validation metric that selects, and the reference model. ``run`` claims and runs every slot
(resumable, shareable across workers through one database), ``status`` counts them, ``report``
writes the tables and plots. See docs/studies.md.
"""

from recsys.study.pruning import OptunaPruning
from recsys.study.recorder import RunRecorder
from recsys.study.spec import StudyError, StudySpec, load_study

__all__ = ["OptunaPruning", "RunRecorder", "StudyError", "StudySpec", "load_study"]
