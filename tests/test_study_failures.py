"""recsys study when things go wrong: failed runs (spent budget, shown everywhere, seeds after a
tuning phase that only failed), pruning wired end to end, the recorder's refusals, min-mode
selection, unreadable run files, a budget raised on resume, --jobs 2, a relative --root.

One real study (a model whose override `recsys fit` rejects, and Pop) runs once for the module;
everything else uses fake runs (``runner.execute`` replaced) or hand-written run directories."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import optuna

import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from recsys.study import claims, load_study, runner
from recsys.study.spec import StudySpec

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "studies" / "tiny.yaml"
DATA = {"tiny": {"path": "data/tiny", "max_len": 5, "train_stride": 5, "batch_size": 8, "eval_batch_size": 8}}


def study_file(folder: Path, **fields) -> Path:
    """A study file (JSON is YAML) in ``folder``: Pop and a searched SASRec on data/tiny by default."""
    body = {"name": "adv", "datasets": DATA,
            "models": {"Pop": {"config": "configs/ml-100k/pop.yaml"},
                       "SASRec": {"config": "configs/ml-100k/sasrec.yaml",
                                  "search": {"model.lr": {"low": 0.001, "high": 0.01}}}},
            "budget": {"trials": 2, "seeds": [0, 1]}, "reference": "Pop",
            "report": {"metrics": ["hit", "ndcg"], "cutoffs": [5, 10]}, "heartbeat": {"interval": 5, "grace": 20}}
    body.update(fields)
    path = folder / f"{body['name']}.yaml"
    path.write_text(json.dumps(body))
    return path


def runs_of(output: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(output / "runs")): json.loads(p.read_text())
            for p in sorted(output.glob("runs/*/*/*/run.json")) if ".crashed-" not in p.parent.name}


# ---- one real study: every tuning run of a model fails ------------------------------------------

@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """`recsys study run` on Pop (fine) and Broken (an override `recsys fit` rejects, so its one
    tuning trial fails and its seeds have no parameters to run), two runs at a time. Returns (spec, process)."""
    folder = tmp_path_factory.mktemp("failing")
    path = study_file(folder, name="failing", budget={"trials": 1, "seeds": [0]}, models={
        "Pop": {"config": "configs/ml-100k/pop.yaml"},
        "Broken": {"config": "configs/ml-100k/sasrec.yaml", "overrides": {"model.nonexistent": 1},
                   "search": {"model.lr": {"low": 0.001, "high": 0.01}}}})
    output = folder / "out"
    try:
        done = subprocess.run([sys.executable, "-m", "recsys.cli", "study", "run", str(path), "--output", str(output),
                               "--root", str(ROOT), "--jobs", "2"], cwd=ROOT, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as error:  # the seeds of a model whose trials all failed used to spin forever
        pytest.fail(f"the study hung: {str(error.stdout)[-1500:]}")
    return load_study(path, ROOT, output), done


def test_a_failed_run_spends_its_slot_and_says_why(failing):
    spec, done = failing
    assert done.returncode == 0, done.stderr[-2000:]
    runs = runs_of(spec.output)
    tune = runs["tiny/Broken/tune-0"]
    assert tune["status"] == "failed" and "nonexistent" in tune["error"] and tune["returncode"] != 0
    seed = runs["tiny/Broken/seed-0"]  # no tuning trial finished: the seed slot fails, naming the cause
    assert seed["status"] == "failed" and "no tuning trial finished" in seed["error"]
    assert runs["tiny/Pop/seed-0"]["status"] == "done"
    assert "FAILED tiny/Broken/tune-0" in done.stdout and "FAILED tiny/Broken/seed-0" in done.stdout


def test_status_counts_failed_runs_as_finished(failing, capsys):
    from recsys.cli import main
    from recsys.study.runner import status

    spec, _ = failing
    rows = {(r["model"], r["phase"]): r for r in status(spec)}
    for key in (("Broken", "tune"), ("Broken", "seed")):
        assert rows[key]["finished"] == rows[key]["budget"] == rows[key]["failed"] == 1 and rows[key]["running"] == 0
    assert rows[("Pop", "seed")]["failed"] == 0
    assert main(["study", "status", str(spec.path), "--output", str(spec.output), "--root", str(ROOT)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "Broken" in x and "tune" in x)
    assert line.split()[-2:] == ["1", "0"]  # failed 1, pruned 0


def test_running_a_finished_failing_study_again_runs_nothing(failing):
    spec, _ = failing
    assert runner.run_study(spec, log=lambda line: None) == 0


def test_the_report_lists_failed_runs_under_checks(failing, tmp_path):
    from recsys.study.report import write_report

    spec, _ = failing
    text = (write_report(spec, tmp_path) / "index.md").read_text()
    checks = text.split("Checks:", 1)[1]
    assert "- Broken tuning trial 0: failed: " in checks and "nonexistent" in checks
    assert "- Broken seed 0: failed: " in checks and "no tuning trial finished" in checks
    assert "| Broken | 1 | 0 | 0 | 1 | 0 |" in text  # the tuning budget table: budget 1, failed 1
    assert pd.read_csv(tmp_path / "leaderboard.csv").set_index("model").loc["Pop", "seeds"] == "1/1"


# ---- runs as the runner sees them (a stand-in process) -------------------------------------------

def fake_process(monkeypatch, script: str) -> None:
    """Make every run the Python ``script`` (run in the unit's directory, given as argv[1])."""
    monkeypatch.setattr(runner, "command", lambda spec, unit, trial_id: [
        sys.executable, "-c", script, str(unit.directory(spec))])


def one_unit(tmp_path: Path) -> tuple[StudySpec, runner.Unit]:
    spec = load_study(study_file(tmp_path), ROOT, tmp_path / "out")
    task = next(t for t in claims.tasks(spec) if t.model.name == "SASRec")
    return spec, runner.Unit(task, "tune", 0, 0, {"model.lr": 0.002})


@pytest.mark.parametrize("script, status, error", [
    ("import sys; sys.stderr.write('Traceback\\nValueError: bad value\\n'); sys.exit(3)", "failed", "ValueError: bad value"),
    ("pass", "failed", "the run logged no val/ndcg@10"),  # exit 0 without a value is no success
    ("import json, sys; open(sys.argv[1] + '/record.json', 'w').write('{\"best_sc')", "failed", "record.json: not JSON"),
    ("import json, sys; d = sys.argv[1]; json.dump({'best_score': 0.25}, open(d + '/record.json', 'w'));"
     "json.dump({'epoch': 2}, open(d + '/pruned.json', 'w'))", "pruned", None),
])
def test_execute_status_of_a_run(tmp_path, monkeypatch, script, status, error):
    spec, unit = one_unit(tmp_path)
    fake_process(monkeypatch, script)
    if status == "failed":
        with pytest.raises(runner.RunFailed, match="exit"):
            runner.execute(spec, unit, None, {})
    else:
        assert runner.execute(spec, unit, None, {})["value"] == 0.25
    run = json.loads((unit.directory(spec) / "run.json").read_text())
    assert run["status"] == status and (error is None or error in run["error"]), run


def fake_execute(monkeypatch, value, status=lambda unit: "done", delay: float = 0.0) -> list[runner.Unit]:
    """Replace the run process: ``value(unit)`` is the run's selection value. Returns the units run."""
    ran: list[runner.Unit] = []
    lock = threading.Lock()

    def execute(spec, unit, trial_id, env, stop=None):
        time.sleep(delay)
        with lock:
            ran.append(unit)
        return {"status": status(unit), "wall_s": 0.0, "value": value(unit)}

    monkeypatch.setattr(runner, "execute", execute)
    return ran


def trials_by_slot(spec: StudySpec, model: str, phase: claims.Phase) -> dict[int, optuna.trial.FrozenTrial]:
    task = next(t for t in claims.tasks(spec) if t.model.name == model)
    study = claims.open_study(spec, task, phase, claims.storage(spec))
    return {t.user_attrs[claims.SLOT]: t for t in study.get_trials() if claims.SLOT in t.user_attrs}


def test_a_pruned_run_is_a_pruned_trial(tmp_path, monkeypatch):
    spec = load_study(study_file(tmp_path, budget={"trials": 2, "seeds": [0]}), ROOT, tmp_path / "out")
    fake_execute(monkeypatch, lambda u: 0.5, status=lambda u: "pruned" if u.phase == "tune" and u.slot == 0 else "done")
    assert runner.run_study(spec, log=lambda line: None) == 4
    tune = trials_by_slot(spec, "SASRec", "tune")
    assert tune[0].state == TrialState.PRUNED and tune[1].state == TrialState.COMPLETE
    row = next(r for r in runner.status(spec) if r["model"] == "SASRec" and r["phase"] == "tune")
    assert row["pruned"] == 1 and row["finished"] == row["budget"] == 2


def test_select_mode_min_reruns_the_lowest_trial(tmp_path, monkeypatch):
    spec = load_study(study_file(tmp_path, select="val/loss", select_mode="min", budget={"trials": 4, "seeds": [0]},
                                 pruning=False), ROOT, tmp_path / "out")
    ran = fake_execute(monkeypatch, lambda u: u.params.get("model.lr", 1.0) * 100)
    runner.run_study(spec, log=lambda line: None)
    tune = [u for u in ran if u.phase == "tune"]
    seed = next(u for u in ran if u.phase == "seed" and u.task.model.name == "SASRec")
    assert len(tune) == 4 and len({u.params["model.lr"] for u in tune}) == 4
    assert seed.params == min(tune, key=lambda u: u.params["model.lr"]).params


def test_two_jobs_in_one_process_run_every_slot_once(tmp_path, monkeypatch):
    spec = load_study(study_file(tmp_path, budget={"trials": 3, "seeds": [0, 1, 2]}), ROOT, tmp_path / "out")
    ran = fake_execute(monkeypatch, lambda u: u.slot / 10, delay=0.3)
    assert runner.run_study(spec, jobs=2, log=lambda line: None) == len(ran) == 3 + 3 + 3
    assert sorted((u.task.model.name, u.phase, u.slot) for u in ran) == sorted(
        [("SASRec", "tune", s) for s in range(3)] + [(m, "seed", s) for m in ("Pop", "SASRec") for s in range(3)])
    assert {u.seed for u in ran if u.phase == "seed"} == {0, 1, 2}


def test_retry_failed_reruns_only_the_failed_slots_with_their_parameters(tmp_path, monkeypatch):
    spec = load_study(study_file(tmp_path, budget={"trials": 3, "seeds": [0, 1]}), ROOT, tmp_path / "out")
    broken = {("SASRec", "tune", 1), ("Pop", "seed", 1)}  # e.g. the data folder was missing for these

    def execute(spec, unit, trial_id, env, stop=None):
        if (unit.task.model.name, unit.phase, unit.slot) in broken:
            raise runner.RunFailed(f"{unit.label}: exit 2: no dataset")
        ran.append(unit)
        return {"status": "done", "wall_s": 0.0, "value": unit.params.get("model.lr", 0.1)}

    ran: list[runner.Unit] = []
    monkeypatch.setattr(runner, "execute", execute)
    runner.run_study(spec, log=lambda line: None)
    first_params = trials_by_slot(spec, "SASRec", "tune")[1].params
    assert runner.run_study(spec, log=lambda line: None) == 0  # failed runs count as done without the flag
    broken.clear()
    ran.clear()
    logged: list[str] = []
    assert runner.run_study(spec, log=logged.append, retry_failed=True) == 2
    assert sorted((u.task.model.name, u.phase, u.slot) for u in ran) == [("Pop", "seed", 1), ("SASRec", "tune", 1)]
    assert next(u for u in ran if u.phase == "tune").params == first_params  # same point, no extra trial
    assert sum("retrying" in line for line in logged) == 2
    rows = {(r["model"], r["phase"]): r for r in runner.status(spec)}
    assert rows["SASRec", "tune"]["failed"] == 0 and rows["SASRec", "tune"]["finished"] == 3
    assert rows["Pop", "seed"]["failed"] == 0 and rows["Pop", "seed"]["finished"] == 2
    logged.clear()
    assert runner.run_study(spec, log=logged.append, retry_failed=True) == 0  # nothing left to retry
    assert not any("retrying" in line for line in logged), logged


# ---- Ctrl-C and SIGTERM: the runs in flight are interrupted, not failed ---------------------------

# A stand-in run: the first attempt leaves a checkpoint and waits to be stopped (noting the signal it
# got and its session); the next one notes its arguments and finishes with a value.
STOPPABLE = """
import json, os, sys, time
d = sys.argv[1]
if os.path.exists(d + '/first-attempt.json'):
    json.dump(sys.argv[2:], open(d + '/second-args.json', 'w'))
    json.dump({'best_score': 0.5}, open(d + '/record.json', 'w'))
    sys.exit(0)
os.makedirs(d + '/lightning_logs/version_0/checkpoints', exist_ok=True)
open(d + '/lightning_logs/version_0/checkpoints/last.ckpt', 'w').write('weights')
json.dump({'session': os.getsid(0)}, open(d + '/first-attempt.json', 'w'))
try:
    time.sleep(60)
except KeyboardInterrupt:
    open(d + '/got-sigint', 'w').write('')
    sys.exit(1)
"""


def test_a_run_stopped_by_the_runner_gets_sigint_is_kept_as_interrupted_and_resumes(tmp_path, monkeypatch):
    spec, unit = one_unit(tmp_path)
    fake_process(monkeypatch, STOPPABLE)
    directory, stop = unit.directory(spec), threading.Event()
    raised: list[BaseException] = []

    def first() -> None:
        try:
            runner.execute(spec, unit, None, dict(os.environ), stop=stop)
        except BaseException as error:  # noqa: BLE001 (the test looks at what it was)
            raised.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.time() + 30
    while not (directory / "first-attempt.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    stop.set()  # what run_study does on Ctrl-C
    thread.join(timeout=30)
    assert [type(e) for e in raised] == [runner.Interrupted], raised
    assert (directory / "got-sigint").exists()  # stopped gracefully, as a Ctrl-C would, not killed
    # in a session of its own, so a terminal's Ctrl-C reaches the runner only
    assert json.loads((directory / "first-attempt.json").read_text())["session"] != os.getsid(0)
    run = json.loads((directory / "run.json").read_text())
    assert run["status"] == "interrupted", run
    assert [r["run"] for r in runner.in_flight(spec)] == [str(directory.relative_to(spec.output / "runs"))]

    resumed = runner.execute(spec, unit, None, dict(os.environ))  # the next `recsys study run`
    assert json.loads((directory / "second-args.json").read_text()) == ["--ckpt_path=last"]
    assert resumed["status"] == "done" and len(resumed["attempts"]) == 1
    assert not list(directory.parent.glob("*.crashed-*"))


def test_a_resumed_run_is_not_pruned_by_the_pruned_json_of_the_attempt_before(tmp_path, monkeypatch):
    """Killed between writing pruned.json and exiting, a run resumes; its new attempt decides."""
    spec, unit = one_unit(tmp_path)
    fake_process(monkeypatch, STOPPABLE)
    directory = unit.directory(spec)
    (directory / "lightning_logs" / "version_0" / "checkpoints").mkdir(parents=True)
    (directory / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").write_text("weights")
    (directory / "first-attempt.json").write_text("{}")  # STOPPABLE's second attempt: finishes with 0.5
    (directory / "pruned.json").write_text('{"epoch": 2, "value": 0.1}')
    args = runner.command(spec, unit, None)
    (directory / "run.json").write_text(json.dumps({"status": "running", "command": args[2:],
                                                    "config_files": runner.config_files(args)}))
    run = runner.execute(spec, unit, None, dict(os.environ))
    assert json.loads((directory / "second-args.json").read_text()) == ["--ckpt_path=last"]  # it did resume
    assert (run["status"], run["value"]) == ("done", 0.5)


def test_an_interrupted_run_is_queued_again_with_its_parameters_not_failed(tmp_path, monkeypatch):
    spec = load_study(study_file(tmp_path, budget={"trials": 2, "seeds": [0]}), ROOT, tmp_path / "out")
    ran: list[runner.Unit] = []

    def interrupted(spec, unit, trial_id, env, stop=None):
        if unit.task.model.name == "SASRec" and unit.phase == "tune":
            raise runner.Interrupted(unit.label)
        ran.append(unit)
        return {"status": "done", "wall_s": 0.0, "value": 0.1}

    monkeypatch.setattr(runner, "execute", interrupted)
    runner.run_study(spec, log=lambda line: None)
    task = next(t for t in claims.tasks(spec) if t.model.name == "SASRec")
    first = claims.open_study(spec, task, "tune", claims.storage(spec)).get_trials()[0]
    assert first.state == TrialState.FAIL and first.params, first
    row = next(r for r in runner.status(spec) if r["model"] == "SASRec" and r["phase"] == "tune")
    assert (row["finished"], row["queued"], row["failed"]) == (0, 1, 0), row

    again = fake_execute(monkeypatch, lambda u: u.params.get("model.lr", 0.1))
    runner.run_study(spec, log=lambda line: None)
    tuned = [u for u in again if u.task.model.name == "SASRec" and u.phase == "tune"]
    assert sorted(u.slot for u in tuned) == [0, 1]  # the budget stays two trials
    assert next(u for u in tuned if u.slot == 0).params == first.params


def test_sigterm_stops_the_runner_as_ctrl_c_does(tmp_path, monkeypatch):
    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0]}), ROOT, tmp_path / "out")
    seen: list[bool] = []

    def execute(spec, unit, trial_id, env, stop=None):
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. a scheduler preempting the job
        seen.append(stop.wait(10))
        raise runner.Interrupted(unit.label)

    monkeypatch.setattr(runner, "execute", execute)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        runner.run_study(spec, log=lambda line: None)
    assert seen == [True]  # the worker was told to stop its run, and no other run started
    assert signal.getsignal(signal.SIGTERM) is before
    assert sum(r["queued"] for r in runner.status(spec)) == 1


def test_raising_the_budget_of_a_study_with_a_refused_trial(tmp_path):
    """A trial refused as over budget (two workers racing for the last slot) holds no slot: after
    the file's budget is raised the next trial takes the new slot (it used to be refused forever)."""
    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0]}), ROOT, tmp_path / "out")
    task = next(t for t in claims.tasks(spec) if t.model.name == "SASRec")
    store = claims.storage(spec)
    study = claims.open_study(spec, task, "tune", store)
    first, second = study.ask(), study.ask()  # two workers asked at once for the one slot
    assert claims.take_slot(study, store, first) == 0
    with pytest.raises(claims.OverBudget):
        claims.take_slot(study, store, second)
    study.tell(first, 0.5)
    study.tell(second, state=TrialState.FAIL)
    raised = load_study(study_file(tmp_path, budget={"trials": 2, "seeds": [0]}), ROOT, tmp_path / "out")
    study = claims.open_study(raised, task, "tune", store)
    assert claims.phase_state(study).claimable
    assert claims.take_slot(study, store, study.ask()) == 1


def test_a_queued_slot_goes_to_one_worker_on_sqlite(tmp_path):
    """A slot queued again after a crash is one WAITING trial; on SQLite (no SELECT FOR UPDATE)
    workers asking at the same instant all used to get it. 4 workers, 8 times."""
    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0]}), ROOT, tmp_path / "out")
    for rep in range(8):
        name = f"race-{rep}"
        optuna.create_study(study_name=name, storage=claims.storage(spec)).enqueue_trial({})
        studies = [optuna.load_study(study_name=name, storage=claims.storage(spec)) for _ in range(4)]
        barrier, got = threading.Barrier(4), []

        def ask(study: optuna.Study) -> None:
            barrier.wait()
            got.append(study.ask()._trial_id)

        threads = [threading.Thread(target=ask, args=(s,)) for s in studies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(got) == len(set(got)) == 4, f"repetition {rep}: one trial handed out twice: {got}"


# ---- pruning inside a run ---------------------------------------------------------------------------

def fake_trainer(folder: Path, epoch: int, value: float, **more) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), is_global_zero=True,
                           callback_metrics={"val/ndcg@10": torch.tensor(value)}, current_epoch=epoch,
                           default_root_dir=str(folder), should_stop=False,
                           strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj), **more)


def test_optuna_pruning_reports_each_epoch_and_stops_a_bad_trial(tmp_path):
    """The callback the runner puts in a tuning run's command, against the study's own database:
    two earlier trials reached 0.5; this one stays at 0.1 and is stopped once past the warm-up."""
    from recsys.study import OptunaPruning
    from recsys.study.pruning import PRUNED

    spec = load_study(study_file(tmp_path), ROOT, tmp_path / "out")
    task = next(t for t in claims.tasks(spec) if t.model.name == "SASRec")
    study = claims.open_study(spec, task, "tune", claims.storage(spec))
    for _ in range(2):
        done = study.ask()
        for step in range(3):
            done.report(0.5, step)
        study.tell(done, 0.5)
    trial = study.ask()
    args = runner.command(spec, runner.Unit(task, "tune", 2, 0), trial._trial_id)
    pruning = next(json.loads(a.split("=", 1)[1]) for a in args if "OptunaPruning" in a)
    callback = OptunaPruning(**pruning["init_args"])
    stopped = []
    for epoch in range(3):
        trainer = fake_trainer(tmp_path, epoch, 0.1)
        callback.on_validation_end(trainer, None)
        stopped.append(trainer.should_stop)
    assert stopped == [False, False, True]  # epochs 0 and 1 are the pruner's warm-up
    assert study._storage.get_trial(trial._trial_id).intermediate_values == pytest.approx({0: 0.1, 1: 0.1, 2: 0.1})
    assert json.loads((tmp_path / PRUNED).read_text())["epoch"] == 2


def test_optuna_pruning_lets_a_good_trial_run(tmp_path):
    from recsys.study import OptunaPruning
    from recsys.study.pruning import PRUNED

    spec = load_study(study_file(tmp_path), ROOT, tmp_path / "out")
    task = next(t for t in claims.tasks(spec) if t.model.name == "SASRec")
    study = claims.open_study(spec, task, "tune", claims.storage(spec))
    for _ in range(2):
        done = study.ask()
        done.report(0.2, 2)
        study.tell(done, 0.2)
    trial = study.ask()
    callback = OptunaPruning(spec.storage, task.study_name(spec, "tune"), trial._trial_id, trials=spec.trials)
    trainer = fake_trainer(tmp_path, 2, 0.6)
    callback.on_validation_end(trainer, None)
    assert not trainer.should_stop and not (tmp_path / PRUNED).exists()


# ---- the recorder --------------------------------------------------------------------------------

def recorder_trainer(folder: Path, *callbacks) -> SimpleNamespace:
    return SimpleNamespace(callbacks=list(callbacks), datamodule=None, accelerator=object(), max_epochs=3,
                           is_global_zero=True, default_root_dir=str(folder), current_epoch=2)


@pytest.mark.parametrize("monitor, mode, words", [
    ("val/hit@10", "max", ["'val/ndcg@10'", "'val/hit@10'"]),
    ("val/ndcg@10", "min", ["max of 'val/ndcg@10'", "['min']"]),
])
def test_the_recorder_refuses_a_checkpoint_on_another_metric_or_mode(tmp_path, monitor, mode, words):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recsys.study import RunRecorder

    recorder = RunRecorder("val/ndcg@10", "max")
    with pytest.raises(ValueError) as error:
        recorder.on_fit_start(recorder_trainer(tmp_path, ModelCheckpoint(monitor=monitor, mode=mode)), None)
    assert all(w in str(error.value) for w in words), str(error.value)


def test_the_recorder_selects_the_lowest_epoch_in_min_mode(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recsys.study import RunRecorder

    module = pl.LightningModule()
    module.layer = torch.nn.Linear(2, 1)
    recorder = RunRecorder("val/loss", "min")
    trainer = recorder_trainer(tmp_path, ModelCheckpoint(monitor="val/loss", mode="min"))
    recorder.on_fit_start(trainer, module)
    recorder.record["epochs"] = [{"epoch": e, "train_s": 1.0, "elapsed_s": e + 1.0, "val": {"val/loss": v}}
                                 for e, v in enumerate([0.9, 0.3, 0.5])]
    recorder.on_fit_end(trainer, module)
    record = json.loads((tmp_path / "record.json").read_text())
    assert (record["best_epoch"], record["best_score"], record["params_total"]) == (1, 0.3, 3)


@pytest.mark.parametrize("restored", ["before on_fit_start", "after on_fit_start (DeepSpeed, FSDP)"])
def test_the_recorder_keeps_the_epochs_of_the_checkpoint_a_fit_resumes_from(tmp_path, restored):
    import lightning.pytorch as pl

    from recsys.study import RunRecorder

    module = pl.LightningModule()
    module.layer = torch.nn.Linear(2, 1)
    killed = RunRecorder()
    killed.record["epochs"] = [{"epoch": e, "train_s": 1.0, "elapsed_s": 2.0 * (e + 1), "val": {"val/ndcg@10": 0.1}}
                               for e in range(2)]
    state = killed.state_dict()  # what last.ckpt holds
    recorder, trainer = RunRecorder(), recorder_trainer(tmp_path)
    if restored == "before on_fit_start":
        recorder.load_state_dict(state)
        recorder.on_fit_start(trainer, module)
    else:
        recorder.on_fit_start(trainer, module)
        recorder.load_state_dict(state)
    recorder.on_train_start(trainer, module)
    assert [e["epoch"] for e in recorder.record["epochs"]] == [0, 1]
    assert [r["after_epoch"] for r in recorder.record["resumed"]] == [1]
    assert recorder.record["params_total"] == 3
    recorder.on_train_start(trainer, module)  # applied once: a second call changes nothing
    assert len(recorder.record["resumed"]) == 1


def test_a_test_run_does_not_take_the_record_of_the_checkpoint_it_tests(tmp_path):
    """``recsys test --ckpt_path``: Lightning restores the recorder's state, but no fit starts."""
    from recsys.study import RunRecorder

    killed = RunRecorder()
    killed.record["epochs"] = [{"epoch": 0, "train_s": 1.0, "elapsed_s": 2.0, "val": {"val/ndcg@10": 0.1}}]
    recorder = RunRecorder()
    recorder.load_state_dict(killed.state_dict())
    assert recorder.record["epochs"] == [] and "resumed" not in recorder.record


# ---- the report on hand-written runs -------------------------------------------------------------

def write_run(spec: StudySpec, model: str, seed: int, users: list[str], ranks: list[int]) -> Path:
    folder = spec.output / "runs" / "tiny" / model / f"seed-{seed}"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"model": model, "phase": "seed", "slot": seed, "seed": seed,
                                                  "status": "done", "wall_s": 1.0}))
    (folder / "record.json").write_text(json.dumps({"best_epoch": 0, "max_epochs": 1, "split_hash": "h"}))
    pd.DataFrame({"window": range(len(users)), "user": users, "rank": ranks, "cold": False}).to_csv(
        folder / "ranks.csv", index=False)
    return folder


@pytest.fixture
def hand_runs(tmp_path) -> StudySpec:
    """Pop (reference) and SASRec, two seeds each; SASRec's seed 1 never started."""
    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0, 1]}), ROOT, tmp_path / "out")
    users = [f"u{i}" for i in range(12)]
    write_run(spec, "Pop", 0, users, [1, 3, 20, 2, 8, 50, 1, 4, 30, 2, 7, 9])
    write_run(spec, "Pop", 1, users, [2, 3, 15, 1, 9, 40, 1, 5, 25, 3, 6, 9])
    write_run(spec, "SASRec", 0, users, [1, 1, 5, 1, 2, 9, 1, 2, 6, 1, 3, 4])
    return spec


def test_a_missing_seed_run_is_shown_as_not_started(hand_runs, tmp_path):
    from recsys.study.report import write_report

    text = (write_report(hand_runs, tmp_path / "report") / "index.md").read_text()
    assert "- SASRec: 1 seed run(s) not started" in text and "| SASRec | 1/2 |" in text
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv").set_index("model")
    assert 0 < board.loc["SASRec", "wilcoxon_p"] <= 1  # same windows: paired


def test_models_tested_on_different_windows_get_no_paired_test(hand_runs, tmp_path):
    from recsys.study.report import write_report

    write_run(hand_runs, "SASRec", 1, [f"u{i}" for i in range(12)], [1] * 12)
    for seed in (0, 1):
        ranks = hand_runs.output / "runs" / "tiny" / "SASRec" / f"seed-{seed}" / "ranks.csv"
        frame = pd.read_csv(ranks)
        frame["window"] += 100
        frame.to_csv(ranks, index=False)
    text = (write_report(hand_runs, tmp_path / "report") / "index.md").read_text()
    assert "SASRec and Pop were tested on different windows: no paired test" in text
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv").set_index("model")
    assert "wilcoxon_p" not in board or pd.isna(board.loc["SASRec", "wilcoxon_p"])


def test_seeds_of_one_model_on_different_windows_are_a_warning_not_a_crash(hand_runs, tmp_path):
    from recsys.study.report import write_report

    write_run(hand_runs, "SASRec", 1, [f"u{i}" for i in range(12)], [1] * 12)
    ranks = hand_runs.output / "runs" / "tiny" / "SASRec" / "seed-1" / "ranks.csv"
    pd.read_csv(ranks).iloc[:9].to_csv(ranks, index=False)  # 9 of the 12 windows
    text = (write_report(hand_runs, tmp_path / "report") / "index.md").read_text()
    assert "SASRec's seed runs were tested on different windows: its interval and tests use the 9" in text
    assert "SASRec and Pop were tested on different windows: no paired test" in text


def test_cold_targets_get_cold_and_warm_columns_by_hand(hand_runs, tmp_path):
    """With data.cold_items, ranks.csv marks the windows whose target is held out of training:
    the board adds every report metric at the primary cutoff over those and over the others."""
    from recsys.study.report import write_report

    cold = [True, False] * 6
    for model, seed in (("Pop", 0), ("Pop", 1), ("SASRec", 0)):
        ranks = hand_runs.output / "runs" / "tiny" / model / f"seed-{seed}" / "ranks.csv"
        frame = pd.read_csv(ranks)
        frame["cold"] = cold
        frame.to_csv(ranks, index=False)
    text = (write_report(hand_runs, tmp_path / "report") / "index.md").read_text()
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv").set_index("model")
    # SASRec seed 0: cold windows are the even ones, ranks 1, 5, 2, 1, 6, 3; warm 1, 1, 9, 2, 1, 4
    assert board.loc["SASRec", "hit@10 cold"] == 1.0 and board.loc["SASRec", "hit@10 warm"] == 1.0
    dcg = [1 / math.log2(r + 1) for r in (1, 5, 2, 1, 6, 3)]
    assert board.loc["SASRec", "ndcg@10 cold"] == pytest.approx(sum(dcg) / 6)
    assert "hit@5 cold" not in board  # only the primary metric's cutoff
    # Pop: the mean over its two seeds; seed 0 cold ranks 1, 20, 8, 1, 30, 7; seed 1 cold 2, 15, 9, 1, 25, 6
    assert board.loc["Pop", "hit@10 cold"] == pytest.approx((4 / 6 + 4 / 6) / 2)
    assert board.loc["Pop", "hit@10 warm"] == pytest.approx((5 / 6 + 5 / 6) / 2)  # 3, 2, 50, 4, 2, 9 and 3, 1, 40, 5, 3, 9
    assert board.loc["Pop", "cold windows"] == 6
    assert "| hit@10 cold | ndcg@10 cold | hit@10 warm | ndcg@10 warm |" in text


def test_no_cold_targets_no_cold_columns(hand_runs, tmp_path):
    from recsys.study.report import write_report

    text = (write_report(hand_runs, tmp_path / "report") / "index.md").read_text()
    assert "cold |" not in text


@pytest.mark.parametrize("name, damage", [
    ("record.json", lambda text: text[: len(text) // 2]),
    ("record.json", lambda text: "\udcff"),
    ("ranks.csv", lambda text: text[: text.rindex("\n", 0, len(text) - 1) + 4]),  # cut inside the last row
    ("ranks.csv", lambda text: ""),
    ("ranks.csv", lambda text: text.replace("False", "Nope", 1)),
    ("run.json", lambda text: "[1, 2]"),
])
def test_an_unreadable_run_file_is_one_error_line_naming_it(hand_runs, capsys, name, damage):
    from recsys.cli import main

    path = hand_runs.output / "runs" / "tiny" / "SASRec" / "seed-0" / name
    damaged = damage(path.read_text())
    if "\udcff" in damaged:
        path.write_bytes(b"\xff\xfe{")
    else:
        path.write_text(damaged)
    code = main(["study", "report", str(hand_runs.path), "--output", str(hand_runs.output), "--root", str(ROOT)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"recsys: error: {path}") and err.count("\n") == 1, err


# ---- paths -----------------------------------------------------------------------------------------

def test_a_relative_root_and_output_resolve_once(monkeypatch):
    """Runs start in the study's root: a relative --root must not be applied twice to their paths."""
    monkeypatch.chdir(ROOT.parent)
    spec = load_study(TINY, ROOT.name, "rel-out")
    assert spec.root == ROOT and spec.output == ROOT / "rel-out"
    assert spec.storage == f"sqlite:///{ROOT / 'rel-out' / 'study.db'}"
    task = claims.tasks(spec)[0]
    args = runner.command(spec, runner.Unit(task, "seed", 0, 0), None)
    config = Path(next(a for a in args if a.startswith("--config=")).split("=", 1)[1])
    out = Path(next(a for a in args if a.startswith("--trainer.default_root_dir=")).split("=", 1)[1])
    assert (spec.root / config).is_file()  # as the run process (cwd = root) reads it
    assert spec.root / out == ROOT / "rel-out" / "runs" / "tiny" / task.model.name / "seed-0"


def test_jobs_below_one_is_a_usage_error(tmp_path, capsys):
    from recsys.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["study", "run", str(TINY), "--jobs", "0", "--output", str(tmp_path / "out")])
    assert stopped.value.code == 2 and "--jobs must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_searched_model_gets_the_same_number_of_trials_on_every_dataset(tmp_path, monkeypatch):
    """Three searched models with different spaces, two datasets, two workers: each (dataset,
    model) gets exactly `budget.trials` tuning runs, whatever its space or speed."""
    lr = {"model.lr": {"low": 0.001, "high": 0.01, "log": True}}
    models = {"Pop": {"config": "configs/ml-100k/pop.yaml"},
              "SASRec": {"config": "configs/ml-100k/sasrec.yaml", "search": lr},
              "SASRec-BCE": {"config": "configs/ml-100k/sasrec-bce.yaml",
                             "search": {**lr, "model.dropout": {"choices": [0.1, 0.3, 0.5]}}},
              "SASRec-small": {"config": "configs/ml-100k/sasrec.yaml", "overrides": {"model.d_model": 16},
                               "search": {"model.num_layers": {"low": 1, "high": 3}}}}
    spec = load_study(study_file(tmp_path, models=models, datasets={"a": DATA["tiny"], "b": DATA["tiny"]},
                                 budget={"trials": 3, "seeds": [0]}), ROOT, tmp_path / "out")
    ran = fake_execute(monkeypatch, lambda u: 0.1 + u.slot / 10, delay=0.05)
    runner.run_study(spec, jobs=2, log=lambda line: None)
    tuned: dict[tuple[str, str], list[int]] = {}
    for unit in ran:
        if unit.phase == "tune":
            tuned.setdefault((unit.task.dataset, unit.task.model.name), []).append(unit.slot)
    assert {k: sorted(v) for k, v in tuned.items()} == {
        (d, m): [0, 1, 2] for d in ("a", "b") for m in ("SASRec", "SASRec-BCE", "SASRec-small")}
    assert all(isinstance(u.params.get("model.num_layers"), int) for u in ran
               if u.task.model.name == "SASRec-small")  # an int range suggests ints
    board = {(r["dataset"], r["model"], r["phase"]): r for r in runner.status(spec)}
    assert all(r["finished"] == r["budget"] == (3 if r["phase"] == "tune" else 1) for r in board.values())


def test_a_real_fit_is_stopped_by_the_pruner(tmp_path):
    """A tuning run as the runner launches it (a real `recsys fit` process with OptunaPruning)
    against two finished trials that reached an NDCG no tiny SASRec reaches: it is stopped right
    after the pruner's warm-up (epochs 0-1), its run says `pruned`, and the study holds the
    values it reported."""

    models = {"SASRec": {"config": "configs/ml-100k/sasrec.yaml", "overrides": {"trainer.max_epochs": 8, "model.max_len": 5, "model.d_model": 16},
                         "search": {"model.lr": {"low": 0.001, "high": 0.01}}}}
    spec = load_study(study_file(tmp_path, budget={"trials": 3, "seeds": [0]}, models=models, reference="SASRec"),
                      ROOT, tmp_path / "out")
    task = next(t for t in claims.tasks(spec) if t.model.name == "SASRec")
    study = claims.open_study(spec, task, "tune", claims.storage(spec))
    for _ in range(2):
        done = study.ask()
        for step in range(8):
            done.report(0.99, step)
        study.tell(done, 0.99)
    trial = study.ask()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = runner.execute(spec, runner.Unit(task, "tune", 2, 0, {"model.lr": 0.002}), trial._trial_id, env)
    assert run["status"] == "pruned", run
    reported = study._storage.get_trial(trial._trial_id).intermediate_values
    assert sorted(reported) == [0, 1, 2]  # stopped at the first epoch past the warm-up, not at 8
    metrics = pd.read_csv(next(runner.Unit(task, "tune", 2, 0).directory(spec).glob("lightning_logs/version_*/metrics.csv")))
    assert metrics["epoch"].max() == 2


def test_a_model_limited_to_some_datasets_runs_and_reports_only_there(tmp_path, monkeypatch):
    """`models.X.datasets`: a costly model run only on a dataset entry that samples users."""
    from recsys.study import report

    models = {"Pop": {"config": "configs/ml-100k/pop.yaml"},
              "Costly": {"config": "configs/ml-100k/sasrec.yaml", "datasets": ["sample"]}}
    spec = load_study(study_file(tmp_path, models=models, datasets={"all": DATA["tiny"], "sample": DATA["tiny"]},
                                 budget={"trials": 0, "seeds": [0, 1]}), ROOT, tmp_path / "out")
    ran = fake_execute(monkeypatch, lambda u: 0.1)
    runner.run_study(spec, log=lambda line: None)
    assert sorted({(u.task.dataset, u.task.model.name) for u in ran}) == [
        ("all", "Pop"), ("sample", "Costly"), ("sample", "Pop")]
    assert {(r["dataset"], r["model"]) for r in runner.status(spec)} == {
        ("all", "Pop"), ("sample", "Costly"), ("sample", "Pop")}
    assert [m.name for m in report.collect(spec, "all")] == ["Pop"]
    assert [m.name for m in report.collect(spec, "sample")] == ["Pop", "Costly"]


@pytest.mark.parametrize("entry, words", [
    ({"datasets": ["nope"]}, "models.SASRec.datasets"),
    ({"datasets": []}, "models.SASRec.datasets"),
    ({"datasets": "tiny"}, "models.SASRec.datasets"),
])
def test_a_bad_model_datasets_list_names_the_field(tmp_path, entry, words):
    from recsys.study import StudyError

    models = {"Pop": {"config": "configs/ml-100k/pop.yaml"},
              "SASRec": {"config": "configs/ml-100k/sasrec.yaml", **entry}}
    with pytest.raises(StudyError, match=words):
        load_study(study_file(tmp_path, models=models), ROOT, tmp_path / "out")


def test_the_reference_must_run_on_every_dataset(tmp_path):
    from recsys.study import StudyError

    models = {"Pop": {"config": "configs/ml-100k/pop.yaml", "datasets": ["tiny"]},
              "SASRec": {"config": "configs/ml-100k/sasrec.yaml"}}
    with pytest.raises(StudyError, match="reference.*paired tests need it on all"):
        load_study(study_file(tmp_path, models=models), ROOT, tmp_path / "out")


def test_a_space_of_choices_tries_each_choice_before_any_twice(tmp_path, monkeypatch):
    """4 trials over 4 choices: each choice once (seeded TPE had drawn k=100 three times in a real
    study), then the study goes on past the choices without stopping."""
    models = {"Pop": {"config": "configs/ml-100k/pop.yaml"},
              "SASRec": {"config": "configs/ml-100k/sasrec.yaml",
                         "search": {"model.num_layers": {"choices": [1, 2, 3, 4]}}}}
    for trials in (4, 6):
        spec = load_study(study_file(tmp_path, name=f"choices{trials}", models=models,
                                     budget={"trials": trials, "seeds": [0]}), ROOT, tmp_path / f"out{trials}")
        ran = fake_execute(monkeypatch, lambda u: 0.5 if u.params.get("model.num_layers") == 2 else 0.1)
        runner.run_study(spec, log=lambda line: None)
        tried = [u.params["model.num_layers"] for u in ran if u.phase == "tune"]
        assert len(tried) == trials and sorted(tried[:4]) == [1, 2, 3, 4], tried


# ---- a worker killed after its run's first checkpoint: the run goes on from it ------------------

def test_a_run_whose_worker_dies_after_a_checkpoint_goes_on_from_it_and_ends_as_an_uninterrupted_one(tmp_path):
    """The worker is SIGKILLed at the start of epoch 3 (by a callback in the run, once); the next
    `recsys study run` resumes the run from its last.ckpt: no epoch lost or counted twice, the
    epochs before the kill kept as recorded, and the same validation curve and test metrics as the
    same study run without a kill."""
    sasrec = {"config": "configs/ml-100k/sasrec.yaml",
              "overrides": {"trainer.max_epochs": 6, "model.d_model": 16, "model.num_heads": 1, "model.num_layers": 1,
                            "model.max_len": 5, "model.dropout": 0.3}}
    killer = {"class_path": "crash_callback.KillRunnerOnce", "init_args": {"epoch": 3, "marker": str(tmp_path / "kill-marker")}}
    killed_path = study_file(tmp_path, name="killed", budget={"trials": 1, "seeds": [0]}, reference="SASRec", models={
        "SASRec": {**sasrec, "overrides": {**sasrec["overrides"], "trainer.callbacks+": killer}}})
    whole_path = study_file(tmp_path, name="whole", budget={"trials": 1, "seeds": [0]}, reference="SASRec",
                            models={"SASRec": sasrec})
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}

    def study(path: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "recsys.cli", "study", "run", str(path), "--output",
                                 str(tmp_path / path.stem), "--root", str(ROOT)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    whole, first = study(whole_path), study(killed_path)
    assert first.wait(timeout=150) == -9  # the callback killed its worker
    run_dir = tmp_path / "killed" / "runs" / "tiny" / "SASRec" / "seed-0"
    before = json.loads((run_dir / "record.json").read_text())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    checkpoint = torch.load(next(run_dir.rglob("last.ckpt")), weights_only=True)
    saved = checkpoint["epoch"] + 1  # the epochs the checkpoint holds: 0 .. saved - 1
    assert saved == 3 and [e["epoch"] for e in before["epochs"]][:saved] == list(range(saved))

    second = study(killed_path)
    assert second.wait(timeout=150) == 0, second.stderr.read()[-2000:]
    assert whole.wait(timeout=150) == 0, whole.stderr.read()[-2000:]
    assert not list(run_dir.parent.glob("*.crashed-*"))  # resumed in place, not started over
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "done" and len(run["attempts"]) == 1 and run["attempts"][0]["worker_pid"] == first.pid
    stderr = (run_dir / "stderr.txt").read_text()
    assert "recsys: resuming from" in stderr and stderr.count("Seed set to 0") == 2 and "==== resumed" in stderr  # both kept
    assert run["wall_s"] > run["attempt_wall_s"]  # the kept epochs' seconds count too
    after = json.loads((run_dir / "record.json").read_text())
    assert [e["epoch"] for e in after["epochs"]] == list(range(6))  # none lost, none twice
    assert after["epochs"][:saved] == before["epochs"][:saved]  # as the killed attempt recorded them
    assert after["resumed"][0]["after_epoch"] == saved - 1
    reference = json.loads((tmp_path / "whole" / "runs" / "tiny" / "SASRec" / "seed-0" / "record.json").read_text())
    def curve(record: dict) -> list[float]:
        return [e["val"]["val/ndcg@10"] for e in record["epochs"]]

    assert curve(after) == pytest.approx(curve(reference), abs=1e-6)
    assert after["best_epoch"] == reference["best_epoch"] and after["test"] == pytest.approx(reference["test"])
    from recsys.study.report import collect, leaderboard
    spec = load_study(killed_path, ROOT, tmp_path / "killed")
    _, warnings = leaderboard(spec, collect(spec, "tiny"))
    assert any("resumed from its checkpoint after epoch" in w for w in warnings)


def test_status_shows_where_each_run_in_flight_stands_and_what_the_next_run_does(hand_runs, capsys, tmp_path):
    """Two runs say "running": one whose worker is gone after 2 of 5 epochs, with a last.ckpt
    (the next `run` resumes it), and one on another host with no epoch yet."""
    from recsys.cli import main
    from recsys.study.runner import in_flight

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = write_run(hand_runs, "SASRec", 1, ["u0"], [1])
    (killed / "run.json").write_text(json.dumps({"status": "running", "host": claims.HOST, "started": "t0",
                                                 "worker_pid": int(gone.stdout), "attempts": [{"started": "t-1"}]}))
    epochs = [{"epoch": e, "val": {"val/ndcg@10": v}} for e, v in ((0, 0.1), (1, 0.25))]
    (killed / "record.json").write_text(json.dumps({"max_epochs": 5, "epochs": epochs}))
    (killed / "lightning_logs" / "version_0" / "checkpoints").mkdir(parents=True)
    (killed / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    elsewhere = hand_runs.output / "runs" / "tiny" / "Pop" / "tune-0"
    elsewhere.mkdir(parents=True)
    (elsewhere / "run.json").write_text(json.dumps({"status": "running", "host": "another-host", "worker_pid": 1}))
    stopped = hand_runs.output / "runs" / "tiny" / "Pop" / "seed-0"  # Ctrl-C'd: its runner's pid may be alive
    (stopped / "run.json").write_text(json.dumps({"status": "interrupted", "host": claims.HOST, "started": "t1",
                                                  "worker_pid": os.getpid()}))
    rows = {r["run"]: r for r in in_flight(hand_runs)}
    assert set(rows) == {"tiny/SASRec/seed-1", "tiny/Pop/tune-0", "tiny/Pop/seed-0"}  # finished runs are not in flight
    assert rows["tiny/SASRec/seed-1"] == {"run": "tiny/SASRec/seed-1", "started": "t0", "attempt": 2, "epochs": 2,
                                          "max_epochs": 5, "value": 0.25, "interrupted": False, "worker_alive": False,
                                          "resumable": True}
    assert (rows["tiny/Pop/seed-0"]["interrupted"], rows["tiny/Pop/seed-0"]["worker_alive"]) == (True, False)
    assert (rows["tiny/Pop/tune-0"]["worker_alive"], rows["tiny/Pop/tune-0"]["resumable"]) == (None, False)
    (tmp_path / "eval").mkdir()  # the same study with an evaluation: a phase name wider than "seed"
    with_eval = study_file(tmp_path / "eval", models={"Pop": {"config": "configs/ml-100k/pop.yaml"}, "SASRec": {
        "config": "configs/ml-100k/sasrec.yaml", "evaluations": {"random-ties": {"model.ties": "random"}}}})
    assert main(["study", "status", str(with_eval), "--output", str(hand_runs.output), "--root", str(ROOT)]) == 0
    out = capsys.readouterr().out
    assert ("in flight: tiny/SASRec/seed-1 since t0 (attempt 2): epoch 2 of 5 done, val/ndcg@10 0.2500; worker gone: "
            "the next `recsys study run` resumes it from its last checkpoint (same command and config)") in out
    assert "in flight: tiny/Pop/tune-0 since ? (attempt 1): epoch 0 of ? done; worker on another host" in out
    assert "in flight: tiny/Pop/seed-0 since t1 (attempt 1): epoch 0 of 1 done; interrupted: the next `recsys study run` starts it over" in out
    table = out.split("in flight:")[0].strip().splitlines()
    assert len({len(line) for line in table}) == 1, table  # columns as wide as their widest entry


def test_an_evaluation_row_is_compared_with_the_reference_evaluated_the_same_way(tmp_path):
    """Seed runs tested on 12 sampled users and re-tested on all 30 (`[all]`): SASRec [all] is
    paired with Pop [all] over the 30 users, not skipped for having other windows than Pop."""
    from recsys.study.report import board_markdown, collect, leaderboard

    retest = {"all": {"data.eval_sample": None}}
    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0]}, models={
        "Pop": {"config": "configs/ml-100k/pop.yaml", "evaluations": retest},
        "SASRec": {"config": "configs/ml-100k/sasrec.yaml", "evaluations": retest}}), ROOT, tmp_path / "out")
    everyone = [f"u{i}" for i in range(30)]
    for model, ranks in (("Pop", [50] * 30), ("SASRec", [1] * 15 + [50] * 15)):  # ndcg@10: 0 / 1 for half
        seed = write_run(spec, model, 0, everyone[:12], ranks[:12])
        (seed / "eval-all").mkdir()
        (seed / "eval-all" / "run.json").write_text(json.dumps({"status": "done", "seed": 0}))
        (seed / "eval-all" / "record.json").write_text(json.dumps({"split_hash": "all"}))
        pd.DataFrame({"window": range(30), "user": everyone, "rank": ranks, "cold": False}).to_csv(
            seed / "eval-all" / "ranks.csv", index=False)
    board, warnings = leaderboard(spec, collect(spec, "tiny"))
    rows = board.set_index("model")
    assert rows.loc["SASRec [all]", "versus"] == "Pop [all]" and rows.loc["SASRec [all]", "test_users"] == 30
    assert rows.loc["SASRec [all]", "diff"] == pytest.approx(0.5)  # 15 of 30 users at rank 1, Pop never
    assert rows.loc["SASRec", "versus"] == "Pop" and rows.loc["SASRec", "diff"] == pytest.approx(1.0)  # 12 users
    assert not any("no paired test" in w or "different splits" in w for w in warnings), warnings
    assert pd.isna(rows.loc["Pop [all]", "diff"])  # other users than Pop's own test: nothing to pair
    text = "\n".join(board_markdown(spec, board))
    assert "+0.5000 [" in text and "vs Pop [all]" in text and "| Pop [all] | 1/1 | 30 |" in text


def test_the_reference_re_tested_on_the_same_users_is_compared_with_itself(tmp_path):
    """`Pop [ties]` (the reference re-tested the same users another way) keeps its paired test
    against Pop: that difference is what such an evaluation is for."""
    from recsys.study.report import collect, leaderboard

    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0]}, models={
        "Pop": {"config": "configs/ml-100k/pop.yaml", "evaluations": {"ties": {"model.ties": "random"}}},
        "SASRec": {"config": "configs/ml-100k/sasrec.yaml"}}), ROOT, tmp_path / "out")
    users = [f"u{i}" for i in range(10)]
    write_run(spec, "SASRec", 0, users, [1] * 10)
    seed = write_run(spec, "Pop", 0, users, [1] * 10)
    (seed / "eval-ties").mkdir()
    (seed / "eval-ties" / "run.json").write_text(json.dumps({"status": "done", "seed": 0}))
    (seed / "eval-ties" / "record.json").write_text(json.dumps({"split_hash": "h"}))
    pd.DataFrame({"window": range(10), "user": users, "rank": [1] * 5 + [50] * 5, "cold": False}).to_csv(
        seed / "eval-ties" / "ranks.csv", index=False)
    board, _ = leaderboard(spec, collect(spec, "tiny"))
    rows = board.set_index("model")
    assert rows.loc["Pop [ties]", "versus"] == "Pop" and rows.loc["Pop [ties]", "diff"] == pytest.approx(-0.5)


def _killed_run(tmp_path, unit, spec, **changes) -> Path:
    """A run directory as a worker killed in flight leaves it: run.json "running" with the
    command (and config contents) the runner would use now, and a last.ckpt."""
    directory = unit.directory(spec)
    (directory / "lightning_logs" / "version_0" / "checkpoints").mkdir(parents=True)
    (directory / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    args = runner.command(spec, unit, None)
    run = {"status": "running", "command": args[2:], "config_files": runner.config_files(args), "started": "t0",
           "worker_pid": 1, "host": claims.HOST, **changes}
    (directory / "run.json").write_text(json.dumps(run))
    return directory


def test_a_killed_run_is_resumed_only_with_the_same_command_and_config_contents(tmp_path):
    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0]}), ROOT, tmp_path / "out")
    unit = runner.Unit(next(t for t in claims.tasks(spec) if t.model.name == "Pop"), "seed", 0, 0)
    directory = _killed_run(tmp_path, unit, spec)
    now = {"command": runner.command(spec, unit, None)[2:], "config_files": runner.config_files(runner.command(spec, unit, None))}
    assert runner.resumable(directory, now) is not None
    edited = {**now, "config_files": {path: "another file" for path in now["config_files"]}}
    assert now["config_files"] and runner.resumable(directory, edited) is None  # the config file changed
    assert runner.resumable(directory, {**now, "command": [*now["command"], "--model.lr=0.5"]}) is None
    (directory / "run.json").write_text(json.dumps({**json.loads((directory / "run.json").read_text()), "status": "failed"}))
    assert runner.resumable(directory, now) is None  # a failed run is retried from the start


def test_a_resume_that_cannot_start_falls_back_to_starting_over(tmp_path):
    """The killed run's last.ckpt no longer loads (as when a Slurm job's logger folder exists
    already, or the code changed): the runner starts the run over instead of failing its slot."""

    spec = load_study(study_file(tmp_path, budget={"trials": 1, "seeds": [0]}, reference="SASRec", models={
        "SASRec": {"config": "configs/ml-100k/sasrec.yaml",
                   "overrides": {"trainer.max_epochs": 2, "model.max_len": 5, "model.d_model": 16}}}),
        ROOT, tmp_path / "out")
    unit = runner.Unit(claims.tasks(spec)[0], "seed", 0, 0)
    directory = _killed_run(tmp_path, unit, spec)
    run = runner.execute(spec, unit, None, {**os.environ, "OMP_NUM_THREADS": "1"})
    assert run["status"] == "done" and "attempts" not in run
    kept = list(directory.parent.glob("seed-0.crashed-*"))
    assert len(kept) == 1 and "resumed" in (kept[0] / "stderr.txt").read_text()  # the failed resume, kept aside
    record = json.loads((directory / "record.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [0, 1] and "resumed" not in record
