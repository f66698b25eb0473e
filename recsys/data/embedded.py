"""Datasets that ship inside installed packages, so the default run needs no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def recbole_example(name: str) -> Path:
    """``recbole/dataset_example/<name>`` from the installed ``recbole`` wheel.

    The package is located with ``find_spec`` and never imported: importing RecBole patches
    numpy and turns on autograd anomaly detection for the whole process.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dataset {name!r} ships inside the recbole wheel, which is not installed; "
            "install it with `pip install --no-deps recbole==1.2.1` (the data only) or `pip install recbole`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / name
    if not (path / f"{name}.inter").exists():
        raise FileNotFoundError(f"the installed recbole has no bundled dataset {name!r} (looked in {path})")
    return path


#: Names a data module accepts in place of a path.
EMBEDDED = {"ml-100k": lambda: recbole_example("ml-100k")}


def resolve_dataset(path: str | Path) -> Path:
    """A dataset directory or ``.inter`` file, or the name of an embedded dataset."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    if str(path) in EMBEDDED:
        return EMBEDDED[str(path)]()
    raise FileNotFoundError(
        f"no dataset at {str(path)!r}: give a directory of RecBole atomic files (see `recsys convert`) "
        f"or one of the embedded datasets {sorted(EMBEDDED)}"
    )
