"""recsys study: study files, the runner (equal budget, selection on validation, resume, two
workers, kill -9) and the report, on studies/tiny.yaml (Pop and SASRec with a 2-trial search x 2
seeds on data/tiny)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from recsys.study import load_study
from recsys.study.spec import StudyError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "studies" / "tiny.yaml"


def runs_of(output: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"dir": p.parent} for p in sorted(output.glob("runs/*/*/*/run.json"))
            if ".crashed-" not in p.parent.name]


# ---- study files ----------------------------------------------------------------------------------

GOOD = {"datasets": {"tiny": {"path": "data/tiny"}},
        "models": {"Pop": {"config": "configs/ml-100k/pop.yaml"},
                   "SASRec": {"config": "configs/ml-100k/sasrec.yaml", "search": {"model.lr": {"low": 0.001, "high": 0.1}}}},
        "budget": {"trials": 2, "seeds": [0, 1]}}


@pytest.mark.parametrize("change, field", [
    ({"select": "test/ndcg@10"}, "select"),
    ({"reference": "BERT4Rec"}, "reference"),
    ({"budget": {"trials": 0, "seeds": [0]}}, "budget.trials"),
    ({"budget": {"trials": 2, "seeds": [0, 0]}}, "budget.seeds"),
    ({"models": {"Pop": {"config": "configs/nope.yaml"}}}, "models.Pop.config"),
    ({"models": {"Pop": {"config": "configs/ml-100k/pop.yaml", "serach": {}}}}, "models.Pop"),
    ({"models": {"S": {"config": "configs/ml-100k/sasrec.yaml", "search": {"model.lr": {"low": 1, "high": 0.1}}}}},
     "models.S.search.model.lr"),
    ({"models": {"S": {"config": "configs/ml-100k/sasrec.yaml", "search": {"model.lr": {"low": 0, "high": 1,
                                                                                         "log": True}}}}},
     "models.S.search.model.lr"),
    ({"datasets": {}}, "datasets"),
    ({"epochs": 3}, "top level"),
    ({"report": {"list_metrics": ["ndcg"]}}, "report.list_metrics"),  # a rank metric
    ({"report": {"list_metrics": "coverage"}}, "report.list_metrics"),
])
def test_a_bad_study_file_names_the_file_and_the_field(tmp_path, change, field):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(StudyError) as error:
        load_study(path, ROOT)
    assert str(error.value).startswith(f"{path}: {field}:"), str(error.value)


def test_a_good_study_file():
    spec = load_study(TINY, ROOT)
    assert spec.trials == 2 and spec.seeds == (0, 1) and spec.reference == "SASRec"
    assert [p.key for p in spec.models["SASRec"].search] == ["model.lr", "model.dropout"]
    assert spec.report_metrics == ["hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr@5", "mrr@10"]
    assert spec.report_list_metrics == ["coverage@5", "coverage@10", "novelty@5", "novelty@10"]
    assert spec.storage == f"sqlite:///{ROOT / 'runs' / 'studies' / 'tiny' / 'study.db'}"


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_loads(path):
    """The study files under studies/ stay valid as configs and fields change: every model's
    config exists for every dataset it runs on, and each names its budget (trials, seeds)."""
    spec = load_study(path, ROOT)
    assert spec.models and spec.seeds and spec.reference in spec.models


def test_the_runner_and_status_import_neither_torch_nor_lightning(tmp_path):
    """The runner starts each run as its own `recsys fit` process: the runner process itself (and
    `status`) needs no torch or Lightning, whose import costs about 9 CPU-seconds here."""
    script = (f"import sys; import recsys.study.runner; from recsys.cli import main; "
              f"main(['study', 'status', {str(TINY)!r}, '--output', {str(tmp_path / 'out')!r}]); "
              f"print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]"


def test_status_reads_the_database_without_writing_to_it(tmp_path):
    """`recsys study status` on a study never run creates no database; on one begun, it leaves
    the phases no run has opened uncreated, and shows the study file's budget for every phase."""
    import sqlite3

    from recsys.study import claims
    from recsys.study.runner import status

    spec = load_study(TINY, ROOT, tmp_path / "out")
    database = Path(spec.storage.removeprefix("sqlite:///"))
    rows = status(spec)
    assert not database.exists()
    assert [(r["model"], r["phase"], r["finished"], r["budget"]) for r in rows] == [
        ("Pop", "seed", 0, 2), ("SASRec", "tune", 0, 2), ("SASRec", "seed", 0, 2), ("SASRec", "eval:random-ties", 0, 2)]
    task = next(t for t in claims.tasks(spec) if t.model.name == "SASRec")
    claims.open_study(spec, task, "tune", claims.storage(spec))  # a run opened one phase, as `run` does

    def dump() -> list[str]:
        with sqlite3.connect(database) as db:
            return list(db.iterdump())

    before = dump()
    assert [r["budget"] for r in status(spec)] == [2, 2, 2, 2]
    assert dump() == before


# ---- the tiny study, run by two workers, one of them killed -------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """studies/tiny.yaml run by two `recsys study run` processes sharing its SQLite database; the
    first is killed (-9) while a run of its own is in flight, the second finishes the study.
    Returns the spec and that killed run's run.json."""
    output = tmp_path_factory.mktemp("study")
    spec = load_study(TINY, ROOT, output)
    cmd = [sys.executable, "-m", "recsys.cli", "study", "run", str(TINY), "--output", str(output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # the first creates the database; the second joins it
    # the second runs two runs at a time (--jobs 2): it finishes the study on both cores
    second = subprocess.Popen([*cmd, "--jobs", "2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, mine = time.time() + 120, []
        while time.time() < deadline and not mine:  # wait for a run of the first worker to be in flight
            mine = [r for r in runs_of(output) if r.get("worker_pid") == first.pid and r["status"] == "running"]
            time.sleep(0.2)
        assert mine, "the first worker never started a run"
        first.send_signal(signal.SIGKILL)
        first.wait()
        # about 35 s on an idle machine; the limit only stops a hung runner, so it allows a loaded one
        assert second.wait(timeout=600) == 0, second.stderr.read().decode()[-2000:] if second.stderr else ""
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
                process.wait()
    return spec, mine[0]


def test_a_killed_worker_loses_only_its_run_in_flight_and_nothing_runs_twice(tiny_study):
    spec, killed = tiny_study
    runs = runs_of(spec.output)
    assert all(r["status"] == "done" for r in runs), [(r["dir"], r["status"]) for r in runs]
    slots = [(r["model"], r["phase"], r["slot"]) for r in runs]
    assert len(slots) == len(set(slots)) == 6  # every slot once: none lost, none twice
    # The killed run was kept aside and run again, or (killed after its first checkpoint) resumed.
    crashed = [p.name.split(".crashed-")[0] for p in spec.output.glob("runs/*/*/*.crashed-*")]
    resumed = [r["dir"].name for r in runs if r.get("attempts")]
    assert sorted(crashed + resumed) == [killed["dir"].name]


def test_every_model_gets_the_same_budget_and_every_slot_runs_once(tiny_study):
    from recsys.study.runner import status

    spec, _ = tiny_study
    rows = {(r["model"], r["phase"]): r for r in status(spec)}
    assert rows[("SASRec", "tune")]["finished"] == rows[("SASRec", "tune")]["budget"] == spec.trials
    assert ("Pop", "tune") not in rows  # no search space: no trials
    assert all(r["finished"] == r["budget"] and r["running"] == 0 for r in rows.values())
    phases = sorted((r["model"], r["phase"]) for r in runs_of(spec.output))
    assert phases == [("Pop", "seed")] * 2 + [("SASRec", "seed")] * 2 + [("SASRec", "tune")] * 2


def test_selection_reads_validation_only_and_seeds_rerun_the_best_trial(tiny_study):
    spec, _ = tiny_study
    runs = runs_of(spec.output)
    tune = [r for r in runs if r["phase"] == "tune"]
    for run in tune:  # tuning trials are never tested
        record = json.loads((run["dir"] / "record.json").read_text())
        assert "test" not in record and not (run["dir"] / "ranks.csv").exists()
        assert "--test_after_fit=False" in run["command"]
    best = max(tune, key=lambda r: (r["value"], -r["slot"]))  # from the runs' own validation values
    for run in (r for r in runs if r["phase"] == "seed" and r["model"] == "SASRec"):
        assert run["params"] == best["params"]
        assert f"--seed_everything={run['seed']}" in run["command"]


def test_saved_ranks_give_the_metrics_the_run_logged(tiny_study):
    import numpy as np

    spec, _ = tiny_study
    for run in (r for r in runs_of(spec.output) if r["phase"] == "seed"):
        ranks = pd.read_csv(run["dir"] / "ranks.csv")
        logged = json.loads((run["dir"] / "record.json").read_text())["test"]
        assert len(ranks) == logged["test/windows"] == 8 and ranks["user"].is_unique
        r = ranks["rank"].to_numpy(float)
        assert np.mean(np.where(r <= 10, 1 / np.log2(r + 1), 0)) == pytest.approx(logged["test/ndcg@10"], abs=1e-6)
        assert np.mean(r <= 5) == pytest.approx(logged["test/hit@5"], abs=1e-6)


def test_evaluations_test_each_seed_checkpoint_again_with_their_overrides(tiny_study):
    import yaml

    spec, _ = tiny_study
    seeds = [r for r in runs_of(spec.output) if r["phase"] == "seed" and r["model"] == "SASRec"]
    assert len(seeds) == 2
    for seed in seeds:
        folder = seed["dir"] / "eval-random-ties"
        run = json.loads((folder / "run.json").read_text())
        assert (run["status"], run["evaluation"], run["seed"]) == ("done", "random-ties", seed["seed"])
        fitted = json.loads(next(seed["dir"].glob("lightning_logs/version_*/results.json")).read_text())
        assert run["command"][:3] == ["recsys.cli", "test", run["command"][2]]
        assert f"--ckpt_path={fitted['checkpoint']}" in run["command"]  # the seed run's selected checkpoint
        saved = yaml.safe_load(next(folder.glob("lightning_logs/version_*/config.yaml")).read_text())
        assert saved["model"]["init_args"]["ties"] == "random"
        ranks = pd.read_csv(folder / "ranks.csv")
        assert list(ranks["window"]) == list(pd.read_csv(seed["dir"] / "ranks.csv")["window"])
    # Pop has no evaluations
    assert not any((r["dir"] / "eval-random-ties").exists() for r in runs_of(spec.output) if r["model"] == "Pop")


def test_running_again_runs_nothing(tiny_study):
    from recsys.study.runner import run_study

    spec, _ = tiny_study
    before = {r["dir"]: r["finished"] for r in runs_of(spec.output)}
    assert run_study(spec, jobs=2, log=lambda line: None) == 0
    assert {r["dir"]: r["finished"] for r in runs_of(spec.output)} == before


def test_a_lost_crashed_or_failed_evaluation_runs_again_without_refitting(tiny_study):
    """Evaluations run after the seed trial is complete: a lost one, one whose worker died on this
    host, and (with --retry-failed) a failed one run again; no model is trained again."""
    from recsys.study import claims
    from recsys.study.runner import run_study, status

    spec, _ = tiny_study
    seeds = sorted(r["dir"] for r in runs_of(spec.output) if r["model"] == "SASRec" and r["phase"] == "seed")
    fits = {r["dir"]: r["finished"] for r in runs_of(spec.output)}
    shutil.rmtree(seeds[0] / "eval-random-ties")  # lost
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    crashed = seeds[1] / "eval-random-ties" / "run.json"
    crashed.write_text(json.dumps(json.loads(crashed.read_text()) | {
        "status": "running", "host": claims.HOST, "worker_pid": int(gone.stdout)}))
    lines: list[str] = []
    assert run_study(spec, jobs=2, log=lines.append) == 2
    assert {r["dir"]: r["finished"] for r in runs_of(spec.output)} == fits  # nothing re-trained
    assert [json.loads((d / "eval-random-ties" / "run.json").read_text())["status"] for d in seeds] == ["done", "done"]
    assert list(seeds[1].glob("eval-random-ties.crashed-*"))
    failed = seeds[0] / "eval-random-ties" / "run.json"
    failed.write_text(json.dumps(json.loads(failed.read_text()) | {"status": "failed", "error": "boom"}))
    assert run_study(spec, jobs=1, log=lines.append) == 0  # a failure stays one until asked
    assert run_study(spec, jobs=1, log=lines.append, retry_failed=True) == 1
    assert json.loads(failed.read_text())["status"] == "done" and list(seeds[0].glob("eval-random-ties.failed-*"))
    row = next(r for r in status(spec) if r["model"] == "SASRec" and r["phase"] == "eval:random-ties")
    assert (row["finished"], row["failed"], row["budget"], row["queued"]) == (2, 0, 2, 0)


def test_an_evaluation_option_the_model_does_not_take_fails_before_any_run(tmp_path):
    from recsys.study.runner import run_study

    models = {**GOOD["models"], "SASRec": {**GOOD["models"]["SASRec"],
                                          "evaluations": {"x": {"model.grounder": "ExactTitleGrounder"}}}}
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({**GOOD, "models": models}))
    spec = load_study(path, ROOT, tmp_path / "out")
    with pytest.raises(StudyError, match=r"models.SASRec.evaluations.x: model.grounder: SASRec takes no option 'grounder'"):
        run_study(spec, log=lambda line: None)
    assert not (tmp_path / "out" / "runs").exists()


def test_a_missing_dataset_fails_before_any_run_spends_a_slot(tmp_path, monkeypatch):
    """A dataset path that is no folder (relative to the study's root, not the working directory)
    and no embedded dataset stops the study at once, naming the field, instead of failing every
    run on it."""
    from recsys.study.runner import check_datasets, run_study
    from recsys.study.spec import only_models

    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({**GOOD, "datasets": {"tiny": {"path": "data/tiny"}, "gone": {"path": "data/nope"}}}))
    spec = load_study(path, ROOT, tmp_path / "out")
    with pytest.raises(StudyError) as error:
        run_study(spec, log=lambda line: None)
    assert str(error.value).startswith(f"{path}: datasets.gone.path: no dataset at '{ROOT / 'data' / 'nope'}'")
    assert not (tmp_path / "out").exists()  # no database, no run
    monkeypatch.chdir(tmp_path)  # runs start in the root: data/tiny is found from anywhere
    path.write_text(json.dumps({**GOOD, "datasets": {"tiny": {"path": "data/tiny"}, "ml": {"path": "ml-100k"}}}))
    check_datasets(load_study(path, ROOT, tmp_path / "out"))
    # `--models` Pop, which runs on tiny only: the missing dataset is no concern of this run
    models = {"Pop": {**GOOD["models"]["Pop"], "datasets": ["tiny"]}, "SASRec": GOOD["models"]["SASRec"]}
    path.write_text(json.dumps({**GOOD, "models": models, "reference": "SASRec",
                                "datasets": {"tiny": {"path": "data/tiny"}, "gone": {"path": "data/nope"}}}))
    check_datasets(only_models(load_study(path, ROOT, tmp_path / "out"), ["Pop"]))


def test_the_report_says_when_a_model_config_changed_after_its_runs(tiny_study, tmp_path):
    """The study's runs, read with the configs copied to another root: unchanged, no warning;
    SASRec's config edited after its runs, a warning naming it and counting its runs (2 trials,
    2 seeds), and none for Pop, whose config is as it was."""
    from recsys.study.report import collect, leaderboard

    spec, _ = tiny_study
    for name in ("pop.yaml", "sasrec.yaml"):
        (tmp_path / "configs" / "ml-100k").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "configs" / "ml-100k" / name, tmp_path / "configs" / "ml-100k" / name)

    def config_warnings() -> list[str]:
        copy = load_study(TINY, tmp_path, spec.output)
        return [w for w in leaderboard(copy, collect(copy, "tiny"))[1] if "has changed" in w]

    assert config_warnings() == []
    with open(tmp_path / "configs" / "ml-100k" / "sasrec.yaml", "a") as config:
        config.write("# edited after the runs\n")
    assert config_warnings() == [
        "SASRec: configs/ml-100k/sasrec.yaml has changed since 4 of its 4 finished runs started: its rows show the "
        "config they ran with (run the study into a new output to show the current one)"]


def test_an_older_run_is_compared_with_its_saved_resolved_config(tmp_path):
    """Runs recorded before run.json kept config_files: the config file's values against the
    saved config.yaml of the run's first attempt (the one whose hash the runner recorded, here
    version_2's, not version_10's), leaving out what the run's command set (--trainer.max_epochs here)."""
    import hashlib

    import yaml

    from recsys.study.report import Run, _differs_from_saved_config, _leaves

    saved = ("seed_everything: 0\nmodel:\n  class_path: recsys.models.bert4rec.BERT4Rec\n  init_args: {{lr: 0.01, dropout: 0.1}}\n"
             "data:\n  class_path: recsys.SeqDataModule\n  init_args: {{train_stride: {stride}}}\n"
             "trainer: {{max_epochs: 40, callbacks: [{{class_path: x}}]}}\n")
    for version, stride in ((2, 5), (10, 7)):  # a later attempt's config must not be the one compared
        path = tmp_path / "run" / "lightning_logs" / f"version_{version}" / "config.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(saved.format(stride=stride))
    first = hashlib.sha256(saved.format(stride=5).encode()).hexdigest()[:16]
    run = Run(tmp_path / "run", {"command": ["recsys.cli", "fit", "--trainer.max_epochs=40", "--model.dropout=0.1"],
                                 "config_hash": first}, {}, None)
    written = ("seed_everything: 0\nmodel:\n  class_path: BERT4Rec\n  init_args: {{lr: 0.01, dropout: 0.3}}\n"
               "data:\n  class_path: SeqDataModule\n  init_args: {{train_stride: {stride}}}\ntrainer: {{max_epochs: 200}}\n")

    def config(stride: int) -> dict:
        return _leaves(yaml.safe_load(written.format(stride=stride)))

    assert not _differs_from_saved_config(config(5), run)  # max_epochs and dropout: the command's; class paths: not compared
    assert _differs_from_saved_config(config(10), run)
    assert not _differs_from_saved_config(config(10), Run(tmp_path / "none", {}, {}, None))  # no saved config: unknown


def test_report_tables_plots_and_html(tiny_study):
    spec, _ = tiny_study
    from recsys.study.report import write_report

    out = write_report(spec)
    board = pd.read_csv(out / "leaderboard.csv").set_index("model")
    for model in ("Pop", "SASRec"):  # the leaderboard's mean is the runs' logged test metric, averaged
        logged = [json.loads((r["dir"] / "record.json").read_text())["test"]["test/ndcg@10"]
                  for r in runs_of(spec.output) if r["model"] == model and r["phase"] == "seed"]
        assert board.loc[model, "ndcg@10"] == pytest.approx(sum(logged) / 2, abs=1e-6)
        assert board.loc[model, "ci_low"] <= board.loc[model, "ndcg@10"] <= board.loc[model, "ci_high"]
        # list metrics: the mean over seeds of what each seed run logged (the report cannot recompute them)
        for metric in ("coverage@5", "novelty@10"):
            logged = [json.loads((r["dir"] / "record.json").read_text())["test"][f"test/{metric}"]
                      for r in runs_of(spec.output) if r["model"] == model and r["phase"] == "seed"]
            assert board.loc[model, metric] == pytest.approx(sum(logged) / 2, abs=1e-6)
    # an evaluation is a row of its own, from its own test ranks, paired against the reference
    logged = [json.loads((r["dir"] / "eval-random-ties" / "record.json").read_text())["test"]["test/ndcg@10"]
              for r in runs_of(spec.output) if r["model"] == "SASRec" and r["phase"] == "seed"]
    assert board.loc["SASRec [random-ties]", "ndcg@10"] == pytest.approx(sum(logged) / 2, abs=1e-6)
    assert board.loc["SASRec [random-ties]", "seeds"] == "2/2"
    assert pd.isna(board.loc["SASRec", "wilcoxon_p"]) and 0 < board.loc["Pop", "wilcoxon_p_holm"] <= 1
    assert board.loc["Pop", "test_users"] == 8
    text = (out / "index.md").read_text()
    assert "| SASRec | 2/2 | 8 |" in text and "| Pop | 2/2 | 8 |" in text  # seeds, test users
    assert "reference" in text and "| SASRec | 2 | 2 |" in text
    assert " mrr@10 | coverage@5 | coverage@10 | novelty@5 | novelty@10 | 95% CI" in text
    for png in ("tiny-ndcg_at_10.png", "tiny-at-k.png", "tiny-cost.png", "tiny-validation.png"):
        assert (out / png).stat().st_size > 5000
    assert (out / "index.html").read_text().count("data:image/png;base64,") == 4


def test_the_command_line_status_and_a_bad_file(tiny_study, tmp_path, capsys):
    from recsys.cli import main

    spec, _ = tiny_study
    assert main(["study", "status", str(TINY), "--output", str(spec.output), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["model"], r["phase"], r["finished"], r["budget"]) for r in rows} == {
        ("Pop", "seed", 2, 2), ("SASRec", "tune", 2, 2), ("SASRec", "seed", 2, 2), ("SASRec", "eval:random-ties", 2, 2)}
    assert main(["study", "status", str(TINY), "--output", str(spec.output), "--json", "--models", "SASRec"]) == 0
    assert {r["model"] for r in json.loads(capsys.readouterr().out)} == {"SASRec"}
    assert main(["study", "run", str(TINY), "--output", str(spec.output), "--models", "SASRec,Pop"]) == 0
    assert "0 run(s) here" in capsys.readouterr().out  # nothing left: the records stay the study's
    assert main(["study", "status", str(TINY), "--models", "Pop,BERT4Rec"]) == 2
    assert "--models: no model named BERT4Rec; the study has Pop, SASRec" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets: {tiny: {path: data/tiny}}\nmodels: {Pop: {config: configs/ml-100k/pop.yaml}}\n"
                   "select: test/ndcg@10\n")
    assert main(["study", "status", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"recsys: error: {bad}: select:") and err.count("\n") == 1


def test_seed_runs_with_list_metrics_still_log_the_selection_metric(tmp_path):
    """Seed runs get --model.metrics when the report asks for list metrics: the selection metric
    is in it as written, so a cutoff outside the model's ks (ndcg@50 with ks [5, 10]) is logged,
    and once only when the list names it twice."""
    from recsys.metrics import MetricSet, hit, mrr, ndcg
    from recsys.study.runner import logged_metrics

    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({**GOOD, "select": "val/ndcg@50", "report": {"list_metrics": ["coverage"]}}))
    names = logged_metrics(load_study(path, ROOT))
    assert "ndcg@50" in names and "coverage@10" in names
    logged = MetricSet(names[:-1], [5, 10], {"hit": hit, "ndcg": ndcg, "mrr": mrr}).logged
    assert logged.count("ndcg@50") == 1 and len(logged) == len(set(logged))
    assert MetricSet(["ndcg", "ndcg@10"], [5, 10], {"ndcg": ndcg}).logged == ["ndcg@5", "ndcg@10"]
