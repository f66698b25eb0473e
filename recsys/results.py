"""What a run prints and saves at its end: a short metric table and ``results.json``.

Lightning's own table lists every logged value with 17 digits, one per row. A reader compares
the metrics at a few cutoffs, so :func:`format_table` prints one row per stage and metric and
one column per cutoff, with 4 significant digits; :func:`write_results` keeps every value at full
precision in the run folder, with the configuration and the versions that produced it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.data.atomic import atomic_path
from recsys.provenance import git_state, versions

RESULTS = "results.json"
_CUTOFF = re.compile(r"^(?P<name>.+)@(?P<k>\d+|all)$")
#: Metric names in reading order; others follow alphabetically.
_ORDER = ("hit", "recall", "ndcg", "mrr", "map", "precision")


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def _sig(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _row_key(label: str) -> tuple:
    stage, _, name = label.partition("/")
    base = name.rsplit("/", 1)[-1]
    return (stage != "val", name.count("/"), _ORDER.index(base) if base in _ORDER else len(_ORDER), name)


def format_table(metrics: Mapping[str, Any]) -> str:
    """``{"val/ndcg@10": 0.0776, "test/hit@5": ..., "test/windows": 943}`` -> a table::

        metric       @5      @10     @20
        val/hit      0.09226 0.1506  0.2587
        val/ndcg     0.05875 0.07763 0.1048
        test/hit     ...
        test/windows 943

    Metrics with a cutoff share the columns; the others (AUC, counts) are listed below them."""
    grid: dict[str, dict[str, float]] = {}
    single: dict[str, float] = {}
    for key, value in metrics.items():
        match = _CUTOFF.match(key)
        if match:
            grid.setdefault(match["name"], {})[match["k"]] = _number(value)
        else:
            single[key] = _number(value)
    cutoffs = sorted({k for row in grid.values() for k in row}, key=lambda k: (k == "all", int(k) if k != "all" else 0))
    rows = [[label, *(_sig(grid[label][k]) if k in grid[label] else "" for k in cutoffs)]
            for label in sorted(grid, key=_row_key)]
    rows += [[label, _sig(value) if not float(value).is_integer() else str(int(value))]
             for label, value in sorted(single.items(), key=lambda item: _row_key(item[0]))]
    header = ["metric", *(f"@{k}" for k in cutoffs)]
    widths = [max(len(str(row[i])) for row in [header, *rows] if i < len(row)) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def write_results(folder: str | Path, metrics: Mapping[str, Any], **about: Any) -> Path:
    """Write ``folder/results.json``: every metric at full precision, what ``about`` says (the
    checkpoint, the configuration, ...), package versions and the git state; atomically, so a
    killed run leaves the previous file or the new one, never half of one."""
    path = Path(folder) / RESULTS
    body = {"metrics": {key: _number(value) for key, value in sorted(metrics.items())}, **about,
            "versions": versions(), "git": git_state(Path.cwd())}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(body, indent=1, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path
