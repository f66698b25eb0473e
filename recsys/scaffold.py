"""``recsys plugin new NAME``: write a plugin package that passes the model contract as it is.

The package has a model, a metric, a raw-data converter with a small fixture, the entry point
that registers the three, and tests (``recsys.testing``'s model contract, the metric, the
converter); its author replaces the model's ``loss`` and ``score`` and the converter's parsing.
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
description = "A recsys plugin: the $model model, the $metric metric and the $dataset converter."
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

A [recsys](https://pypi.org/project/recsys-llm/) plugin: the `$model` model, the
`$metric` metric and the `$dataset` converter. Written by `recsys plugin new`; the guide is
recsys's `docs/writing-plugins.md`.

```sh
pip install -e .
recsys plugins                     # lists $package
recsys convert $dataset tests/fixtures/events data/events   # raw events.tsv -> atomic files
recsys fit --model $model --data SeqDataModule --data.path ml-100k \\
    --model.metrics '[hit, ndcg, $metric@10]'
pytest                             # the recsys.testing model contract, and the metric
```
''',
    "$package/__init__.py": '''\
"""$name: the $model model, the $metric metric and the $dataset converter for recsys."""

import recsys

# Names load on first use (PEP 562): the engine imports this package to read its plugin
# module, and `recsys plugins` / `recsys models` should not pay for torch to list it.
_EXPORTS = {"$model": "$package.model", "convert_events": "$package.converter", "precision": "$package.metrics"}
__getattr__, __dir__ = recsys.lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
''',
    "$package/plugin.py": '''\
"""The module the ``recsys`` entry point names: what this package adds to the engine."""

import recsys

#: The recsys public API versions this plugin works with; checked when the engine loads it.
RECSYS_API = "$api_range"


# Import paths rather than objects: listing (`recsys models`) imports nothing of the package;
# the engine imports each the first time it is used.
@recsys.hookimpl
def register_models(register):
    register("$package.model.$model")


@recsys.hookimpl
def register_metrics(register):
    register("$metric", "$package.metrics.precision")  # names are global: prefixed, so no other plugin takes it


@recsys.hookimpl
def register_datasets(register):
    register("$dataset", "$package.converter.convert_events")  # `recsys convert $dataset RAW OUT`
''',
    "$package/converter.py": '''\
"""A raw-data converter: replace the parsing with your format's; keep the signature."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import recsys


def convert_events(raw: Path, out: Path, *, overwrite: bool = False, min_rating: float | None = None,
                   max_history: int | None = None, k_core: int | None = None, sep: str = "\\t") -> Path:
    """Event logs: RAW/events.tsv with columns user, item, time (and optionally title).

    Args:
        sep: the column separator.
    """
    path = Path(raw) / "events.tsv"
    events = pd.read_csv(path, sep=sep, dtype=str)
    missing = {"user", "item", "time"} - set(events.columns)
    if missing:
        raise recsys.DataFormatError(f"{path}: missing column(s) {sorted(missing)}; found {list(events.columns)}")
    inter = pd.DataFrame({"user_id": events["user"], "item_id": events["item"],
                          "timestamp": pd.to_numeric(events["time"])})
    item = None
    if "title" in events.columns:  # the catalog reads titles from a column named title
        item = events[["item", "title"]].drop_duplicates("item").rename(columns={"item": "item_id"})
    return recsys.save_converted(out, inter, item, overwrite=overwrite, min_rating=min_rating,
                                 max_history=max_history, k_core=k_core, source=path)
''',
    "tests/fixtures/events/events.tsv": '''\
user\titem\ttime\ttitle
u1\ta\t1\tApple
u1\tb\t2\tBanana
u1\tc\t3\tCherry
u2\tb\t1\tBanana
u2\tc\t2\tCherry
u2\ta\t5\tApple
u3\ta\t4\tApple
u3\tc\t2\tCherry
u3\tb\t3\tBanana
''',
    "tests/test_converter.py": '''\
from pathlib import Path

import recsys
import recsys.testing

from $package import plugin
from $package.converter import convert_events

FIXTURE = Path(__file__).parent / "fixtures" / "events"


def test_converts_the_fixture_into_a_loadable_dataset(tmp_path):
    out = convert_events(FIXTURE, tmp_path / "events")
    data = recsys.SeqDataModule(str(out), max_len=5).data  # what `recsys fit --data.path` reads
    assert len(data.users) == 3 and len(data.items) == 3
    # each user's items in time order (u3's rows are not sorted in the file)
    u3 = data.sequences.of(int(data.users.index(["u3"])[0]))
    assert [data.items.token(i) for i in u3] == ["c", "b", "a"]
    assert sorted(data.catalog.titles[1:]) == ["Apple", "Banana", "Cherry"]


def test_converter_is_registered():
    with recsys.testing.registered(plugin):
        assert recsys.get_datasets()["$dataset"].obj is convert_events
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
    if not re.fullmatch(r"recsys-[A-Za-z0-9]", name[:8]):
        raise ValueError(f"{name!r}: name plugin distributions recsys-<something> (e.g. recsys-{name.lower()}), "
                         "so people find them on PyPI next to the engine")
    package = re.sub(r"[-.]+", "_", name).lower()
    if keyword.iskeyword(package) or package in ("recsys", "recsys_llm"):
        raise ValueError(f"{name!r} would make a package named {package!r}: choose another name")
    short = package.removeprefix("recsys_") or package
    model = model or "".join(part.capitalize() for part in short.split("_") if part)
    if not model.isidentifier() or keyword.iskeyword(model):
        raise ValueError(f"{model!r} is not a Python class name")
    major = int(recsys.API_VERSION.split(".")[0])
    return {"name": name, "package": package, "model": model, "metric": f"{short}_precision",
            "dataset": f"{short.replace('_', '-')}-events",
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
