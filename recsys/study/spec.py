"""A study file: what to compare, under which budget, and how to report it.

```yaml
name: tiny
datasets:                     # name -> --data.* overrides (the model config keeps its data class)
  tiny: {path: data/tiny, max_len: 5}
models:                       # name -> a config file ({dataset} is replaced) and overrides
  Pop: {config: configs/ml-100k/pop.yaml}
  SASRec:
    config: configs/ml-100k/sasrec.yaml
    overrides: {trainer.max_epochs: 3}
    search:                   # optional: tuned with `budget.trials` Optuna trials
      model.lr: {low: 0.0005, high: 0.01, log: true}
      model.dropout: {choices: [0.1, 0.3]}
    evaluations:              # optional: more tests of each seed run's checkpoint, a row each
      random-ties: {model.ties: random}
budget: {trials: 2, seeds: [0, 1]}
select: val/ndcg@10           # the validation metric that picks trials and checkpoints
reference: SASRec             # paired tests compare every model with this one
report: {metrics: [hit, ndcg, mrr], cutoffs: [5, 10]}
```

Every error names the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

SELECT_MODES = ("max", "min")


class StudyError(ValueError):
    """A study file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Param:
    """One searched override: a float or int range (``low``, ``high``, optional ``log``,
    ``step``) or a list of ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return (self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)
                and (self.step is None or isinstance(self.step, int)))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: str  #: a config file; ``{dataset}`` is replaced by the dataset's name
    overrides: dict[str, Any] = field(default_factory=dict)  #: dotted CLI keys -> values
    search: tuple[Param, ...] = ()
    #: the study's datasets this model runs on; None = all of them (e.g. a costly model run only
    #: on a dataset entry that evaluates a sample of users)
    datasets: tuple[str, ...] | None = None
    #: extra tests of each seed run's selected checkpoint, name -> dotted ``recsys test`` overrides
    #: (e.g. ``{exact: {model.ranking: exact}}``): each is a row of its own, ``Model [name]``
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def runs_on(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets

    def config_for(self, dataset: str, root: Path) -> Path:
        path = Path(self.config.replace("{dataset}", dataset))
        return path if path.is_absolute() else root / path


@dataclass(frozen=True)
class StudySpec:
    """A parsed study file. Relative paths (configs, output) are relative to ``root``, the
    directory the study is run from (the repository root for the files under ``studies/``)."""

    path: Path
    name: str
    datasets: dict[str, dict[str, Any]]
    models: dict[str, ModelSpec]
    trials: int
    seeds: tuple[int, ...]
    select: str
    select_mode: str
    reference: str
    metrics: tuple[str, ...]
    cutoffs: tuple[int, ...]
    output: Path
    storage: str
    pruning: bool
    heartbeat: int  #: seconds between a running trial's heartbeats
    grace: int  #: seconds without a heartbeat after which a trial counts as crashed
    root: Path
    #: metrics of the recommended lists (coverage, gini, novelty, ild): the seed runs log them at
    #: every cutoff, the report shows their mean ± std over seeds (one number per run)
    list_metrics: tuple[str, ...] = ()

    def trial_budget(self, model: ModelSpec) -> int:
        """Tuning trials ``model`` gets: the shared budget when it has a search space, else none."""
        return self.trials if model.search else 0

    @property
    def report_metrics(self) -> list[str]:
        """``name@k`` for every metric and cutoff, in the file's order."""
        return self._at_cutoffs(self.metrics)

    @property
    def report_list_metrics(self) -> list[str]:
        """``name@k`` for every list metric and cutoff, in the file's order."""
        return self._at_cutoffs(self.list_metrics)

    def _at_cutoffs(self, names: tuple[str, ...]) -> list[str]:
        return [f"{m}@{k}" for m in names for k in self.cutoffs]

    @property
    def primary(self) -> str:
        """The metric the leaderboard sorts by: the selection metric without its stage."""
        return self.select.split("/", 1)[1]

    def fingerprint(self) -> str:
        """A hash of what decides the runs (not the report settings): recorded in every run."""
        decided = {"datasets": self.datasets, "trials": self.trials, "seeds": self.seeds, "select": self.select,
                   "models": {n: [m.config, m.overrides, [p.__dict__ for p in m.search]]
                              + ([list(m.datasets)] if m.datasets is not None else [])
                              + ([m.evaluations] if m.evaluations else []) for n, m in self.models.items()}}
        return hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fail(path: Path, where: str, message: str) -> StudyError:
    return StudyError(f"{path}: {where}: {message}")


def _mapping(value: Any, path: Path, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected a mapping, got {type(value).__name__}")
    return value


def _param(key: str, raw: Any, path: Path, where: str) -> Param:
    raw = _mapping(raw, path, where)
    unknown = set(raw) - {"low", "high", "log", "step", "choices"}
    if unknown:
        raise _fail(path, where, f"unknown field(s) {sorted(unknown)}; use low/high/log/step or choices")
    if "choices" in raw:
        if not isinstance(raw["choices"], list) or not raw["choices"] or len(raw) > 1:
            raise _fail(path, where, "choices must be a non-empty list, alone")
        return Param(key, choices=tuple(raw["choices"]))
    low, high = raw.get("low"), raw.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise _fail(path, where, "needs numeric low and high (or choices)")
    assert low is not None and high is not None  # checked above, for the type checker
    if low >= high:
        raise _fail(path, where, f"low {low} must be below high {high}")
    if raw.get("log") and low <= 0:
        raise _fail(path, where, "a log range needs low > 0")
    return Param(key, low=low, high=high, log=bool(raw.get("log", False)), step=raw.get("step"))


def load_study(path: str | Path, root: str | Path | None = None, output: str | Path | None = None) -> StudySpec:
    """Parse and check a study file (every error names the file and the field). ``root``: where
    relative paths start (default: the working directory); ``output`` replaces the file's."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not YAML: {error}") from None
    raw = _mapping(raw, path, "top level")
    known = {"name", "datasets", "models", "budget", "select", "select_mode", "reference", "report", "output",
             "storage", "pruning", "heartbeat"}
    unknown = set(raw) - known
    if unknown:
        raise _fail(path, "top level", f"unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    # absolute: runs start in `root`, so a relative one would be applied twice to their paths
    root = (Path(root) if root is not None else Path.cwd()).resolve()
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise _fail(path, "name", f"{name!r}: letters, digits, '-' and '_' only")

    datasets = _mapping(raw.get("datasets"), path, "datasets")
    if not datasets:
        raise _fail(path, "datasets", "name at least one dataset")
    datasets = {str(d): _mapping(v, path, f"datasets.{d}") for d, v in datasets.items()}

    models: dict[str, ModelSpec] = {}
    for model_name, entry in _mapping(raw.get("models"), path, "models").items():
        where = f"models.{model_name}"
        entry = _mapping(entry, path, where)
        unknown = set(entry) - {"config", "overrides", "search", "datasets", "evaluations"}
        if unknown:
            raise _fail(path, where, f"unknown field(s) {sorted(unknown)}; known: config, overrides, search, datasets, "
                                     "evaluations")
        evaluations = {}
        for label, overrides in _mapping(entry.get("evaluations"), path, f"{where}.evaluations").items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(label)):
                raise _fail(path, f"{where}.evaluations", f"{label!r}: a name of letters, digits, '_', '.', '-'")
            evaluations[str(label)] = dict(_mapping(overrides, path, f"{where}.evaluations.{label}"))
        only = entry.get("datasets")
        if only is not None and (not isinstance(only, list) or not only or not set(only) <= set(datasets)):
            raise _fail(path, f"{where}.datasets", f"{only!r}: a non-empty list of the study's datasets {sorted(datasets)}")
        if not isinstance(entry.get("config"), str):
            raise _fail(path, f"{where}.config", "a config file is required")
        spec = ModelSpec(str(model_name), entry["config"], dict(_mapping(entry.get("overrides"), path,
                                                                            f"{where}.overrides")),
                         tuple(_param(k, v, path, f"{where}.search.{k}")
                               for k, v in _mapping(entry.get("search"), path, f"{where}.search").items()),
                         None if only is None else tuple(str(d) for d in only), evaluations)
        for dataset in filter(spec.runs_on, datasets):
            if not spec.config_for(dataset, root).is_file():
                raise _fail(path, f"{where}.config", f"{spec.config_for(dataset, root)} does not exist"
                            f" (for dataset {dataset!r}; paths are relative to {root})")
        models[spec.name] = spec
    if not models:
        raise _fail(path, "models", "name at least one model")

    budget = _mapping(raw.get("budget"), path, "budget")
    unknown = set(budget) - {"trials", "seeds"}
    if unknown:
        raise _fail(path, "budget", f"unknown field(s) {sorted(unknown)}; known: trials, seeds")
    trials = budget.get("trials", 0)
    if not isinstance(trials, int) or trials < 0:
        raise _fail(path, "budget.trials", f"{trials!r} is not a count of trials")
    if trials == 0 and any(m.search for m in models.values()):
        raise _fail(path, "budget.trials", "a model has a search space but the trial budget is 0")
    seeds = budget.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise _fail(path, "budget.seeds", f"{seeds!r}: a count or a list of distinct integer seeds")

    select = raw.get("select", "val/ndcg@10")
    if not isinstance(select, str) or not select.startswith("val/"):
        raise _fail(path, "select", f"{select!r}: selection uses a validation metric (val/...), never a test one")
    mode = raw.get("select_mode", "max")
    if mode not in SELECT_MODES:
        raise _fail(path, "select_mode", f"{mode!r}: one of {SELECT_MODES}")
    reference = raw.get("reference", next(iter(models)))
    if reference not in models:
        raise _fail(path, "reference", f"{reference!r} is not one of the models {sorted(models)}")
    if models[reference].datasets is not None:
        raise _fail(path, "reference", f"{reference!r} runs on some datasets only: paired tests need it on all")

    report = _mapping(raw.get("report"), path, "report")
    unknown = set(report) - {"metrics", "list_metrics", "cutoffs"}
    if unknown:
        raise _fail(path, "report", f"unknown field(s) {sorted(unknown)}; known: metrics, list_metrics, cutoffs")
    list_metrics = report.get("list_metrics", [])
    if not isinstance(list_metrics, list) or not all(isinstance(m, str) for m in list_metrics):
        raise _fail(path, "report.list_metrics", f"{list_metrics!r}: a list of metric names (coverage, gini, ...)")
    if list_metrics:
        from recsys.plugins import get_metrics  # reads registrations only: imports no metric

        registered = get_metrics()
        for metric in list_metrics:
            if registered.get(metric) is None or registered[metric].extra.get("kind") != "list":
                kinds = sorted(n for n, e in registered.items() if e.extra.get("kind") == "list")
                raise _fail(path, "report.list_metrics", f"{metric!r} is not a registered list metric; known: {kinds}")
    metrics = report.get("metrics", ["hit", "ndcg", "mrr"])
    cutoffs = report.get("cutoffs", [10])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics) or not metrics:
        raise _fail(path, "report.metrics", f"{metrics!r}: a list of metric names")
    if not isinstance(cutoffs, list) or not all(isinstance(k, int) and k > 0 for k in cutoffs) or not cutoffs:
        raise _fail(path, "report.cutoffs", f"{cutoffs!r}: a list of positive integers")

    output = Path(output or raw.get("output") or f"runs/studies/{name}")
    output = output if output.is_absolute() else root / output
    storage = raw.get("storage") or f"sqlite:///{output / 'study.db'}"
    heartbeat = _mapping(raw.get("heartbeat"), path, "heartbeat")
    interval, grace = heartbeat.get("interval", 30), heartbeat.get("grace", 120)
    if not all(isinstance(v, int) and v > 0 for v in (interval, grace)) or grace <= interval:
        raise _fail(path, "heartbeat", "interval and grace are positive seconds, grace > interval")
    return StudySpec(path=path, name=name, datasets=datasets, models=models, trials=trials, seeds=tuple(seeds),
                     select=select, select_mode=mode, reference=reference, metrics=tuple(metrics),
                     cutoffs=tuple(cutoffs), output=output, storage=str(storage), pruning=bool(raw.get("pruning", True)),
                     heartbeat=interval, grace=grace, root=root, list_metrics=tuple(list_metrics))


def only_models(spec: StudySpec, names: list[str]) -> StudySpec:
    """``spec`` restricted to ``names`` (in that order, so a run can put the rows it needs first).
    Nothing else changes: the same database, budget and folders, so the others resume later."""
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in spec.models]
    if unknown or not names:
        raise StudyError(f"{spec.path}: --models: no model named {', '.join(unknown) or '(empty)'}; the study has "
                         f"{', '.join(spec.models)}")
    return replace(spec, models={n: spec.models[n] for n in names})
