"""Deprecated alias of :mod:`recsys.plugins`, which now owns the lookups (merged in API 1.5; removed in 2.0)."""

import sys

from recsys import plugins

sys.modules[__name__] = plugins
