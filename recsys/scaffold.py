"""``recsys plugin new NAME``: write a plugin package that passes the model contract as it is.

The package has a model, a metric, the entry point that registers both, and tests that run
``recsys.testing``'s contract; its author replaces the model's ``loss`` and ``score``.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

import recsys

FILES = {
    "pyproject.toml": '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$name"
version = "0.1.0"
description = "A recsys plugin: the $model model and the $metric metric."
requires-python = ">=3.10"
dependencies = ["recsys-llm>=$engine"]

# How recsys finds the plugin: name = the module whose @recsys.hookimpl functions it calls.
[project.entry-points.recsys]
$package = "$package.plugin"

[tool.setuptools.packages.find]
include = ["$package*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''',
    "MANIFEST.in": '''\
# The sdist carries its tests, so the package can be checked from it alone.
include README.md
graft tests
global-exclude __pycache__ *.py[cod]
''',
    "README.md": '''\
# $name

A [recsys](https://pypi.org/project/recsys-llm/) plugin: the `$model` model and the
`$metric` metric. Written by `recsys plugin new`; the guide is recsys's
`docs/writing-plugins.md`.

```sh
pip install -e .
recsys plugins                     # lists $package
recsys fit --model $model --data SeqDataModule --data.path ml-100k \\
    --model.metrics '[hit, ndcg, $metric@10]'
pytest                             # the recsys.testing model contract, and the metric
```
''',
    "$package/__init__.py": '''\
"""$name: the $model model and the $metric metric for recsys."""

from $package.metrics import precision
from $package.model import $model

__all__ = ["$model", "precision"]
''',
    "$package/plugin.py": '''\
"""The module the ``recsys`` entry point names: what this package adds to the engine."""

import recsys

from $package.metrics import precision
from $package.model import $model

#: The recsys public API versions this plugin works with; checked when the engine loads it.
RECSYS_API = "$api_range"


@recsys.hookimpl
def register_models(register):
    register($model)


@recsys.hookimpl
def register_metrics(register):
    register("$metric", precision)  # names are global: prefixed, so no other plugin takes it
''',
    "$package/model.py": '''\
"""$model: replace ``loss`` and ``score`` with your model's (or ``score`` with ``recommend``)."""

from __future__ import annotations

import recsys
import torch.nn.functional as F
from torch import Tensor, nn


class $model(recsys.SeqRecModule):
    """Scores items by what tends to follow the user's most recent item (a first-order model).

    Each item has two vectors: one for "came before", one for "comes next"; an item's score is
    the dot product of the last history item's first vector with its second.

    Args:
        num_items: catalog size N, items 1..N, 0 = PAD (linked from the data: never set it).
        dim: size of the item vectors.
    """

    def __init__(self, num_items: int, dim: int = 64, **kwargs):
        super().__init__(num_items, **kwargs)  # lr, weight_decay, metrics, ks, ties
        self.save_hyperparameters()  # so RecModule.load_from_checkpoint can rebuild the model
        self.before = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.after = nn.Embedding(num_items + 1, dim)

    def score(self, batch: recsys.Batch) -> Tensor:
        """(B, N + 1) scores of every item (column 0 = PAD); a new tensor, the engine masks it."""
        last = batch.history[:, -1]  # (B,): histories are left-padded, the newest item is last
        return self.before(last) @ self.after.weight.T

    def loss(self, batch: recsys.Batch) -> Tensor:
        """Cross-entropy of the next item over the whole catalog (PAD excluded)."""
        logits = self.score(batch)
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, batch.target)
''',
    "$package/metrics.py": '''\
"""A ranking metric: a function of each target's rank (1 = best)."""

from __future__ import annotations

from torch import Tensor


def precision(ranks: Tensor, k: int | None) -> Tensor:
    """precision@k with one relevant item per user: 1/k when the target is in the top k, else 0."""
    if k is None:
        raise ValueError("precision needs a cutoff: write '$metric@10', not '$metric@all'")
    return (ranks <= k).float() / k
''',
    "tests/conftest.py": '''\
# Installed recsys plugins stay out of the tests (they register this one themselves), so
# whatever else is installed cannot change the results; the recsys cache is a temporary folder.
from recsys.pytest_plugin import *  # noqa: F403
''',
    "tests/test_contract.py": '''\
"""The engine's contract for models: trains, evaluates, no leakage, deterministic, checkpoints."""

from typing import ClassVar

import recsys.testing

from $package import plugin
from $package.model import $model


class Test$model(recsys.testing.ModelContract):
    model = $model
    plugin = plugin
    init_args: ClassVar[dict] = {"dim": 16, "metrics": ["hit", "ndcg", "$metric@5"]}
    # The "learns" contract trains on a synthetic rule (recsys.testing.rule_dataset) with this budget.
    learn: ClassVar[dict] = {"max_epochs": 10, "init_args": {"lr": 0.03}}
''',
    "tests/test_metrics.py": '''\
import pytest
import recsys
import recsys.testing
import torch

from $package import plugin
from $package.metrics import precision


def test_precision():
    assert precision(torch.tensor([1, 5, 6]), 5).tolist() == pytest.approx([0.2, 0.2, 0.0])


def test_metric_is_registered():
    with recsys.testing.registered(plugin):
        assert recsys.get_metrics()["$metric"].obj is precision
''',
}


def names(name: str, model: str | None = None) -> dict[str, str]:
    """The template's values for distribution ``name`` (e.g. ``recsys-knn``)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name):
        raise ValueError(f"{name!r} is not a distribution name (letters, digits, '-', '_', '.')")
    package = re.sub(r"[-.]+", "_", name).lower()
    if keyword.iskeyword(package) or package in ("recsys", "recsys_llm"):
        raise ValueError(f"{name!r} would make a package named {package!r}: choose another name")
    short = package.removeprefix("recsys_") or package
    model = model or "".join(part.capitalize() for part in short.split("_") if part)
    if not model.isidentifier() or keyword.iskeyword(model):
        raise ValueError(f"{model!r} is not a Python class name")
    major = int(recsys.API_VERSION.split(".")[0])
    return {"name": name, "package": package, "model": model, "metric": f"{short}_precision",
            "engine": recsys.__version__, "api_range": f">={recsys.API_VERSION},<{major + 1}"}


def new_plugin(name: str, directory: str | Path = ".", model: str | None = None) -> Path:
    """Write the package into ``directory/name`` (which must not exist) and return that path."""
    values = names(name, model)
    root = Path(directory) / name
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    for path, text in FILES.items():
        target = root / Template(path).substitute(values)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(text).substitute(values), encoding="utf-8")
    return root
