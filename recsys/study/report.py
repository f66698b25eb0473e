"""``recsys study report``: leaderboards with intervals, paired tests, cost, plots, hygiene checks.

Everything is recomputed from what the runs saved (``ranks.csv``, ``record.json``, ``run.json``),
never from a cached table, so a report is always the runs' own numbers. Per dataset:

- the leaderboard: each report metric's mean ± std over seeds (from each run's test ranks), a 95%
  bootstrap interval over users (of the per-user value averaged over seeds), the difference from
  the reference model with Wilcoxon signed-rank and paired t p-values (Holm-corrected across the
  models compared) and Cohen's d_z, all on the same test users (a model's extra evaluation
  ``M [label]`` is compared with ``Reference [label]`` when the study has it, e.g. both re-tested
  on every user); cost: parameters, seconds to the
  selected checkpoint, seconds per training epoch, test seconds, peak memory;
- the tuning budget each model got (trials finished, pruned, failed);
- checks: protocol settings, test users per model, runs that failed or are still running, a
  selected epoch that is the last one allowed (budget-limited, not converged), different splits,
  a model config file changed since its runs;
- plots: the primary metric with intervals, metric@K curves, accuracy against training time,
  validation curves.

Written as Markdown + CSV + PNG, and one self-contained HTML page (images inlined).
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from recsys.study import stats
from recsys.study.records import RANKS, RECORD, RUN, read_json, read_ranks
from recsys.study.spec import StudySpec


@dataclass
class Run:
    """One run directory as the report sees it."""

    path: Path
    run: dict[str, Any]
    record: dict[str, Any]
    ranks: pd.DataFrame | None

    @property
    def status(self) -> str:
        return str(self.run.get("status", "unknown"))


@dataclass
class ModelResult:
    """A model's seed runs on one dataset."""

    name: str
    runs: list[Run]
    expected_seeds: int
    tune: list[Run] = field(default_factory=list)
    evaluation: str | None = None  #: the label of one of the model's ``evaluations`` (a row of its own)

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.status == "done" and r.ranks is not None]

    def users(self) -> pd.DataFrame | None:
        """Window -> per-user ranks of every finished seed (columns: one per seed), or None."""
        frames = [r.ranks.set_index("window")["rank"].rename(r.run.get("seed")) for r in self.done
                  if r.ranks is not None]
        # seeds tested on different windows: only the windows every seed has (the report warns)
        return pd.concat(frames, axis=1, join="inner") if frames else None


def load_run(path: Path) -> Run:
    run = read_json(path / RUN) or {}
    record = read_json(path / RECORD) or {}
    ranks = read_ranks(path / RANKS) if (path / RANKS).is_file() else None
    return Run(path, run, record, ranks)


def load_runs(spec: StudySpec, dataset: str, model: str) -> list[Run]:
    """Every run directory of (dataset, model), crashed attempts (``*.crashed-*``) left out."""
    root = spec.output / "runs" / dataset / model
    return [load_run(path) for path in (sorted(root.glob("*")) if root.is_dir() else [])
            if ".crashed-" not in path.name and (path / RUN).is_file()]


def collect(spec: StudySpec, dataset: str) -> list[ModelResult]:
    """Each model's runs; a model's ``evaluations`` are rows of their own (``Model [label]``), made
    of the extra tests of its seed runs."""
    results = []
    for name, model in ((n, m) for n, m in spec.models.items() if m.runs_on(dataset)):
        runs = load_runs(spec, dataset, name)
        seeds = [r for r in runs if r.run.get("phase") == "seed"]
        results.append(ModelResult(name, seeds, len(spec.seeds), [r for r in runs if r.run.get("phase") == "tune"]))
        for label in model.evaluations:
            tested = [load_run(r.path / f"eval-{label}") for r in seeds if (r.path / f"eval-{label}" / RUN).is_file()]
            results.append(ModelResult(f"{name} [{label}]", tested, len(spec.seeds), evaluation=label))
    return results


def _mean(values: list[Any]) -> float | None:
    """Mean of the numbers among ``values`` (None and NaN left out), or None."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def leaderboard(spec: StudySpec, results: list[ModelResult]) -> tuple[pd.DataFrame, list[str]]:
    """One row per model (see the module docstring) and the dataset's warnings."""
    warnings: list[str] = []
    users_of = {m.name: m.users() for m in results}
    if users_of.get(spec.reference) is None and len(results) > 1:
        warnings.append(f"the reference {spec.reference} has no finished seed run: no paired tests")
    rows: list[dict[str, Any]] = []
    pending: list[int] = []
    for model in results:
        # A model tested once more a given way (`M [label]`) is compared with the reference tested
        # the same way when the study has that row (e.g. both re-tested on every user), else with
        # the reference itself.
        versus = f"{spec.reference} [{model.evaluation}]" if model.evaluation else spec.reference
        own_retest = model.evaluation is not None and versus == model.name
        if versus not in users_of or own_retest:  # the reference's own re-test: against the reference
            versus = spec.reference
        ref_users = users_of.get(versus)
        row: dict[str, Any] = {"model": model.name, "seeds": f"{len(model.done)}/{model.expected_seeds}"}
        users = model.users()
        windows = {frozenset(r.ranks["window"]) for r in model.done if r.ranks is not None}
        if len(windows) > 1 and users is not None:
            warnings.append(f"{model.name}'s seed runs were tested on different windows: its interval and tests "
                            f"use the {len(users)} they share")
        for metric in spec.report_metrics:
            per_seed = [float(stats.per_user(r.ranks["rank"].to_numpy(), metric).mean())
                        for r in model.done if r.ranks is not None]
            mean, std = stats.mean_std(per_seed) if per_seed else (math.nan, math.nan)
            row[metric] = mean
            row[f"{metric} std"] = std
        if users is not None:
            per_user = np.mean([stats.per_user(users[c].to_numpy(), spec.primary) for c in users.columns], axis=0)
            row["ci_low"], row["ci_high"] = stats.bootstrap_ci(per_user)
            if ref_users is not None and model.name != versus:
                if set(users.index) != set(ref_users.index):
                    if not own_retest:  # a re-test on other users is what it was asked to be
                        warnings.append(f"{model.name} and {versus} were tested on different windows: "
                                        "no paired test")
                else:
                    ref = np.mean([stats.per_user(ref_users.loc[users.index, c].to_numpy(), spec.primary)
                                   for c in ref_users.columns], axis=0)
                    test = stats.paired_test(per_user, ref)
                    row.update(diff=test.diff, diff_low=test.diff_ci[0], diff_high=test.diff_ci[1],
                               wilcoxon_p=test.wilcoxon_p, t_p=test.t_p, effect_dz=test.effect_dz,
                               test_users=test.n, versus=versus)
                    pending.append(len(rows))
            row.setdefault("test_users", len(users))
        records = [r.record for r in model.done]
        ranked = [(r.ranks["rank"].to_numpy(), r.ranks["cold"].to_numpy()) for r in model.done if r.ranks is not None]
        for metric in cold_metrics(spec):  # over test targets held out of training, and over the others
            for part, cold in (("cold", True), ("warm", False)):
                per_seed = [float(stats.per_user(ranks[flags == cold], metric).mean())
                            for ranks, flags in ranked if (flags == cold).any()]
                key = f"{metric} {part}"
                row[key], row[f"{key} std"] = stats.mean_std(per_seed) if per_seed else (math.nan, math.nan)
            row["cold windows"] = _mean([int(flags.sum()) for _, flags in ranked])
        for metric in spec.report_list_metrics:  # one value per run, as the run logged it
            logged = [v for v in ((r.get("test") or {}).get(f"test/{metric}") for r in records) if v is not None]
            row[metric], row[f"{metric} std"] = stats.mean_std(logged) if logged else (math.nan, math.nan)
        row.update(
            params_total=_first(records, "params_total"), params_trainable=_first(records, "params_trainable"),
            seconds_to_best=_mean([r.get("seconds_to_best") for r in records]),
            s_per_epoch=_mean([r.get("train_s_per_epoch") for r in records]),
            test_s=_mean([r.get("test_s") for r in records]),
            wall_s=_mean([r.run.get("wall_s") for r in model.done]),
            peak_rss_mb=max((r.get("peak_rss_mb") or 0 for r in records), default=None) or None,
            best_epoch=_mean([r.get("best_epoch") for r in records]),
            epochs=_mean([r.get("epochs_run") for r in records]))
        for run in model.done:
            best, allowed = run.record.get("best_epoch"), run.record.get("max_epochs")
            trains = (run.record.get("params_trainable") or 0) > 0 and (allowed or 0) > 1  # not Pop-like
            if trains and best is not None and best + 1 >= allowed:
                warnings.append(f"{model.name} seed {run.run.get('seed')}: selected epoch {best} is the last one "
                                f"allowed ({allowed} epochs): budget-limited, not converged")
            for resumed in run.record.get("resumed") or []:  # reported, not hidden: not bit-identical to one go
                warnings.append(f"{model.name} seed {run.run.get('seed')}: resumed from its checkpoint after epoch "
                                f"{resumed.get('after_epoch')} when its worker died (the seconds count each "
                                "epoch once; built-in models restore their random states, plugins may not)")
        warnings += [_unfinished(f"{model.name} seed {r.run.get('seed')}", r) for r in model.runs if r.status != "done"]
        # a pruned trial is the protocol working; a failed one is a check
        warnings += [_unfinished(f"{model.name} tuning trial {r.run.get('slot')}", r) for r in model.tune
                     if r.status not in ("done", "pruned")]
        missing = model.expected_seeds - len(model.runs)
        if missing > 0:
            warnings.append(f"{model.name}: {missing} seed run(s) not started")
        if model.evaluation is None:  # an evaluation row re-tests the same runs: said once, here
            warnings += config_changed(spec, model)
        rows.append(row)
    # Holm across every model compared with the reference, separately for each test.
    for key in ("wilcoxon_p", "t_p"):
        adjusted = stats.holm([rows[i][key] for i in pending]) if pending else []
        for i, p in zip(pending, adjusted):
            rows[i][f"{key}_holm"] = p
    for label in {m.evaluation for m in results}:  # rows compared with each other are tested the same way
        splits = {r.record.get("split_hash") for m in results if m.evaluation == label for r in m.done
                  if r.record.get("split_hash")}
        if len(splits) > 1:
            what = f"`[{label}]` rows" if label else "runs"
            warnings.append(f"{what} were tested on {len(splits)} different splits: the comparison is not like for like")
    return pd.DataFrame(rows), warnings


def config_changed(spec: StudySpec, model: ModelResult) -> list[str]:
    """A warning when the model's config file no longer says what it said when its finished runs
    (seed runs and trials) started: the study file's fingerprint covers the study's own settings,
    not the contents of the configs it names, and a finished run is never run again by itself."""
    runs = [r for r in model.runs + model.tune if r.status in ("done", "pruned")]
    if not runs:
        return []
    dataset = runs[0].run.get("dataset", "")
    path = spec.models[model.name].config_for(str(dataset), spec.root)
    if not path.is_file():
        return []
    text = path.read_bytes()
    current = hashlib.sha256(text).hexdigest()
    stale = [r for r in runs if r.run.get("config_files") and current not in r.run["config_files"].values()]
    older = [r for r in runs if not r.run.get("config_files")]
    if older:
        try:
            now = _leaves(yaml.safe_load(text))
        except yaml.YAMLError:
            now = {}  # unreadable: the older runs count as unchanged
        stale += [r for r in older if _differs_from_saved_config(now, r)]
    if not stale:
        return []
    return [f"{model.name}: {path.relative_to(spec.root) if path.is_relative_to(spec.root) else path} has changed "
            f"since {len(stale)} of its {len(runs)} finished runs started: its rows show the config they ran with "
            "(run the study into a new output to show the current one)"]


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of a parsed YAML mapping by dotted key, ``init_args`` levels left out (so a
    config's ``model.init_args.lr`` and a command's ``--model.lr`` are the same key); lists and
    class paths are not compared (their written and resolved forms differ)."""
    if not isinstance(tree, dict):
        return {} if isinstance(tree, list) else {prefix: tree}
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        if key == "class_path":
            continue
        leaves.update(_leaves(value, prefix if key == "init_args" else f"{prefix}.{key}".lstrip(".")))
    return leaves


def _differs_from_saved_config(now: dict[str, Any], run: Run) -> bool:
    """For a run recorded before ``run.json`` kept ``config_files``: whether a value the config
    file sets now (``now``, its :func:`_leaves`) differs from the run's saved resolved config, the
    first attempt's (the ``lightning_logs/*/config.yaml`` whose hash the runner recorded as
    ``config_hash``: folder names and write times do not order attempts once records are copied),
    leaving out the keys the run's command set itself. Unknown (no recorded or matching saved
    config, unreadable YAML) counts as unchanged."""
    saved = [p.read_bytes() for p in run.path.glob("lightning_logs/*/config.yaml")]
    first = [t for t in saved if hashlib.sha256(t).hexdigest()[:16] == run.run.get("config_hash")]
    try:
        then = _leaves(yaml.safe_load(first[0]))
    except (IndexError, yaml.YAMLError):
        return False
    commanded = {str(a).removeprefix("--").split("=", 1)[0].replace(".init_args", "")
                 for a in run.run.get("command") or [] if str(a).startswith("--")}
    return any(key in then and then[key] != value and key not in commanded for key, value in now.items())


def cold_metrics(spec: StudySpec) -> list[str]:
    """The metrics shown over cold and warm test targets (``data.cold_items``): every report
    metric at the primary metric's cutoff, e.g. hit@10, ndcg@10, mrr@10."""
    cutoff = spec.primary.partition("@")[2]
    return [f"{m}@{cutoff}" if cutoff else m for m in spec.metrics]


def has_cold(board: pd.DataFrame) -> bool:
    """Whether any model on this board was tested on cold targets."""
    return "cold windows" in board and bool((board["cold windows"].fillna(0) > 0).any())


def _unfinished(what: str, run: Run) -> str:
    """A check line for a run that did not finish: its status and, when it has one, its error."""
    return f"{what}: {run.status}" + (f": {run.run['error']}" if run.run.get("error") else "")


def _first(records: list[dict[str, Any]], key: str) -> Any:
    return next((r[key] for r in records if r.get(key) is not None), None)


def tuning(results: list[ModelResult], spec: StudySpec) -> pd.DataFrame:
    """Trials each model got: the equal-budget check, visible."""
    rows = []
    for model in (m for m in results if m.evaluation is None):  # an evaluation's model was tuned once
        statuses = [r.status for r in model.tune]
        rows.append({"model": model.name, "budget": spec.trial_budget(spec.models[model.name]), "done": statuses.count("done"),
                     "pruned": statuses.count("pruned"), "failed": statuses.count("failed"),
                     "running": statuses.count("running") + statuses.count("interrupted"),  # in flight
                     "searched": ", ".join(p.key for p in spec.models[model.name].search) or "-"})
    return pd.DataFrame(rows)


def protocol(results: list[ModelResult]) -> dict[str, Any]:
    """The data settings the runs were evaluated under: the first finished run's (runs tested on
    different splits are a check of :func:`leaderboard`, by split hash)."""
    keys = ("protocol", "mask_history", "max_len", "cold_items", "eval_sample", "path")
    for model in results:
        for run in model.done:
            data = run.record.get("data", {})
            return {k: data.get(k) for k in keys if k in data}
    return {}


# ---- plots --------------------------------------------------------------------------------------

def plots(spec: StudySpec, dataset: str, board: pd.DataFrame, results: list[ModelResult], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    style = _styles([str(m) for m in board["model"]] if "model" in board else [])
    done = board[board[spec.primary].notna()] if spec.primary in board else board.iloc[0:0]
    if len(done):
        fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.8 + 0.45 * len(done))))
        y = np.arange(len(done))
        means = done[spec.primary].to_numpy(float)
        low = done.get("ci_low", pd.Series(means)).to_numpy(float)
        high = done.get("ci_high", pd.Series(means)).to_numpy(float)
        ax.errorbar(means, y, xerr=[np.clip(means - low, 0, None), np.clip(high - means, 0, None)], fmt="o",
                    capsize=4)
        ax.set_yticks(y, done["model"])
        ax.set_xlabel(f"test {spec.primary} (mean over seeds; bars: 95% bootstrap interval over users)")
        ax.set_title(f"{dataset}: {spec.primary}")
        written.append(_save(fig, out / f"{dataset}-{spec.primary.replace('@', '_at_')}.png"))
    if len(done) and len(spec.cutoffs) > 1:
        fig, axes = plt.subplots(1, len(spec.metrics), figsize=(4.2 * len(spec.metrics), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], spec.metrics):
            for _, row in done.iterrows():
                ax.plot(spec.cutoffs, [row[f"{metric}@{k}"] for k in spec.cutoffs], label=row["model"],
                        **style[row["model"]])
            ax.set_xlabel("cutoff K")
            ax.set_ylabel(f"test {metric}@K")
            ax.set_title(f"{dataset}: {metric}@K")
        axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the lines, not on them
        written.append(_save(fig, out / f"{dataset}-at-k.png"))
    timed = done[done["seconds_to_best"].notna()] if "seconds_to_best" in done else done.iloc[0:0]
    if len(timed):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for _, row in timed.iterrows():
            ax.scatter(max(row["seconds_to_best"], 1e-3), row[spec.primary], s=36, color=style[row["model"]]["color"],
                       marker=style[row["model"]]["marker"], label=row["model"])
        # a legend, not labels at the points: models of similar cost and accuracy would overwrite each other
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
        ax.set_xscale("log")
        ax.set_xlabel("training seconds to the selected checkpoint (mean over seeds, log scale)")
        ax.set_ylabel(f"test {spec.primary}")
        ax.set_title(f"{dataset}: accuracy against training time")
        written.append(_save(fig, out / f"{dataset}-cost.png"))
    curves = [(m.name, r) for m in results for r in m.done if r.record.get("epochs")]
    if curves:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        labelled: set[str] = set()
        for name, run in curves:
            epochs = [e for e in run.record["epochs"] if spec.select in e["val"]]
            ax.plot([e["epoch"] for e in epochs], [e["val"][spec.select] for e in epochs], markersize=3, alpha=0.8,
                    label=None if name in labelled else name, **style[name])
            labelled.add(name)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(spec.select)
        ax.set_title(f"{dataset}: validation curves (one line per seed)")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
        written.append(_save(fig, out / f"{dataset}-validation.png"))
    return written


def _styles(models: list[str]) -> dict[str, dict[str, Any]]:
    """One colour and marker per model, the same in every plot of a report: 20 colours (tab20's
    10 hues, dark then light), then the markers change too, so no two models look alike."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]
    pairs = [tab20(i) for i in range(20)]  # (dark, light) of 10 hues: the 10 dark ones first
    colours = [*pairs[0::2], *pairs[1::2]]
    markers = "osD^v<>ph*"
    return {name: {"color": colours[i % len(colours)], "marker": markers[(i // len(colours)) % len(markers)]}
            for i, name in enumerate(models)}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # legends placed beside a plot stay in the image
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ---- output -------------------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


def _count(value: Any) -> str:
    """A count (parameters) as an integer, whatever type the table gave it."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{int(value):,}"


def _p(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def board_markdown(spec: StudySpec, board: pd.DataFrame) -> list[str]:
    metrics = spec.report_metrics + spec.report_list_metrics
    if has_cold(board):
        metrics += [f"{m} {part}" for part in ("cold", "warm") for m in cold_metrics(spec)]
    head = ["model", "seeds", "test users", *metrics, f"95% CI ({spec.primary})", f"Δ vs {spec.reference}", "p Wilcoxon (Holm)",
            "p t (Holm)", "d_z", "params (trainable)", "s to best", "s/epoch", "test s", "peak RSS MB", "epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    compared_with = set(board["versus"].dropna()) if "versus" in board else set()
    for _, r in board.iterrows():
        users = r.get("test_users")
        cells = [str(r["model"]), str(r["seeds"]), _fmt(int(users)) if users is not None and not pd.isna(users) else "-"]
        cells += [f"{_fmt(r[m])} ± {_fmt(r[f'{m} std'])}" if not pd.isna(r[m]) else "-" for m in metrics]
        cells.append(f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]" if not pd.isna(r.get("ci_low", np.nan))
                     else "-")
        if not pd.isna(r.get("diff", np.nan)):
            versus = "" if r.get("versus") in (None, spec.reference) else f" vs {r['versus']}"
            cells += [f"{r['diff']:+.4f} [{r['diff_low']:+.4f}, {r['diff_high']:+.4f}]{versus}",
                      _p(r.get("wilcoxon_p_holm")), _p(r.get("t_p_holm")), f"{r['effect_dz']:+.2f}"]
        else:
            own = r["model"] == spec.reference or r["model"] in compared_with
            cells += ["reference" if own else "-", "-", "-", "-"]
        cells += [f"{_count(r.get('params_total'))} ({_count(r.get('params_trainable'))})", _fmt(r.get("seconds_to_best"), 1),
                  _fmt(r.get("s_per_epoch"), 2), _fmt(r.get("test_s"), 1), _fmt(r.get("peak_rss_mb"), 0),
                  f"{_fmt(r.get('best_epoch'), 1)} / {_fmt(r.get('epochs'), 1)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def frame_markdown(frame: pd.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return lines


def write_report(spec: StudySpec, out: Path | None = None) -> Path:
    """Write ``index.md``, ``index.html``, ``leaderboard.csv`` and the PNGs; returns the folder."""
    out = out or spec.output / "report"
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Study `{spec.name}`", "",
          f"Study file `{spec.path}` (fingerprint `{spec.fingerprint()}`). Selection: `{spec.select}` "
          f"({spec.select_mode}) on validation only; "
          + (f"each model with a search space tuned with the same budget of {spec.trials} trial(s), then its "
             f"best trial re-run with seeds {list(spec.seeds)}. " if spec.trials else
             f"nothing tuned; each model run with seeds {list(spec.seeds)}. ")
          + "Test metrics: mean ± std over seeds. Interval: 95% bootstrap over test users of the per-user "
          + f"`{spec.primary}` averaged over seeds. Paired tests against `{spec.reference}` over the same test "
          f"users (a re-test `M [label]` against `{spec.reference} [label]` when the study has that row), "
          "Holm-corrected across models; d_z = mean difference / std of differences."
          + (f" List metrics ({', '.join(spec.list_metrics)}): one number per seed run, computed on every test "
             "user's top-k list and logged by the run; mean ± std over the seed runs that logged it (no per-user "
             "interval or paired test)." if spec.list_metrics else ""), ""]
    boards = []
    for dataset in spec.datasets:
        results = collect(spec, dataset)
        board, warnings = leaderboard(spec, results)
        board.insert(0, "dataset", dataset)
        boards.append(board)
        md += [f"## {dataset}", "", f"Protocol: `{protocol(results)}`", ""]
        md += board_markdown(spec, board) + [""]
        if has_cold(board):
            md += [f"Cold items (`data.cold_items`): up to {_fmt(board['cold windows'].max(), 0)} test windows "
                   "per seed run have a target held out of training; the `cold` columns are computed over those, "
                   "the `warm` columns over the others (mean ± std over seeds).", ""]
        md += ["Tuning budget (trials per model):", ""] + frame_markdown(tuning(results, spec)) + [""]
        if warnings:
            md += ["Checks:", ""] + [f"- {w}" for w in warnings] + [""]
        for image in plots(spec, dataset, board, results, out):
            md += [f"![{image.stem}]({image.name})", ""]
    pd.concat(boards).to_csv(out / "leaderboard.csv", index=False)
    (out / "index.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out / "index.html").write_text(to_html(md, out), encoding="utf-8")
    return out


def to_html(md: list[str], folder: Path) -> str:
    """A self-contained page from the report's Markdown lines (tables, headings, lists, images)."""
    body, table = [], False
    for line in md:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not table:
                body.append("<table>")
                table, tag = True, "th"
            else:
                tag = "td"
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("</table>")
            table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            data = base64.b64encode((folder / name).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line:
            body.append(f"<p>{_inline(line)}</p>")
    if table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%}")
    return f"<!doctype html><meta charset=utf-8><title>study</title><style>{style}</style>\n" + "\n".join(body)


def _inline(text: str) -> str:
    """Markdown `code` spans -> <code>; everything else escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
