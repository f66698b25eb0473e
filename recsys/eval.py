"""Deprecated alias of :mod:`recsys.metrics` (renamed in API 1.5; removed in 2.0)."""

import sys

from recsys import metrics

sys.modules[__name__] = metrics
