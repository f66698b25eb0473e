"""What a study keeps of each run, on disk beside the run's own Lightning logs.

A run directory (``<output>/runs/<dataset>/<model>/<tune-K | seed-S>``) is an ordinary
``recsys fit`` ``default_root_dir`` plus three files:

- ``record.json``, written by :class:`~recsys.study.recorder.RunRecorder` inside the run: per-epoch
  validation metrics and times, the selected epoch, test metrics and seconds, parameters, peak
  memory, the data module's settings and a hash of the test split;
- ``ranks.csv``, also the recorder's: one row per test window (``window,user,rank,cold``), so any
  rank metric and any paired test can be recomputed without re-running;
- ``run.json``, written by the runner: the unit (dataset, model, phase, slot, seed, params), the
  command, its status, the resolved config's hash, package and plugin versions, the git commit.

Each is replaced atomically, so a killed process leaves the previous version, never half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.data.atomic import atomic_path
from recsys.study.spec import StudyError

RECORD, RANKS, RUN = "record.json", "ranks.csv", "run.json"
PRUNED = "pruned.json"  # written by a run the pruner stopped (recsys.study.pruning)


class RecordError(StudyError):
    """A run's file is unreadable (truncated, corrupt); the message names the file. A StudyError,
    so ``recsys study`` prints it as one line."""


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Replace ``path`` with ``value`` as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1, default=str), encoding="utf-8")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when there is none yet."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecordError(f"{path}: not JSON ({error}); delete it to re-run this run") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path}: expected a JSON object; delete it to re-run this run")
    return value


def write_ranks(path: Path, frame: pd.DataFrame) -> None:
    """``window,user,rank,cold`` rows, sorted by window, atomically."""
    with atomic_path(path) as tmp:
        frame.sort_values("window").to_csv(tmp, index=False)


def read_ranks(path: Path) -> pd.DataFrame:
    """A run's test ranks: columns window (int), user (str), rank (int >= 1), cold (bool)."""
    try:
        frame = pd.read_csv(path, dtype={"window": "int64", "user": "string", "rank": "int64", "cold": "bool"})
    except (ValueError, KeyError) as error:  # pandas' parser and dtype errors are ValueErrors
        raise RecordError(f"{path}: not a ranks file (window,user,rank,cold): {error}") from None
    missing = {"window", "user", "rank", "cold"} - set(frame.columns)
    if missing:
        raise RecordError(f"{path}: missing column(s) {sorted(missing)}")
    if (frame["rank"] < 1).any():
        line = int(frame.index[frame["rank"] < 1][0]) + 2  # header is line 1
        raise RecordError(f"{path}:{line}: rank must be >= 1")
    return frame
