"""``recsys study run``: claim slots, run each as its own ``recsys fit`` process, record it.

Order per (dataset, model): the tuning trials (when the model has a search space), then the best
trial's parameters once per seed. Tuning trials never run the test set (``--test_after_fit
false``): test metrics exist only for the runs selected on validation. Workers (``--jobs``
threads here, or more ``recsys study run`` processes on any machine sharing the storage) take the
next claimable slot; a worker with nothing claimable waits for running slots of other workers
(their results decide what comes next) and stops when every slot is finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import TrialState

from recsys.provenance import git_state, versions
from recsys.study import claims
from recsys.study.claims import OverBudget, Phase, Task
from recsys.study.records import PRUNED, RANKS, RECORD, RUN, read_json, write_json
from recsys.study.spec import StudyError, StudySpec

POLL_SECONDS = 2.0


class RunFailed(Exception):
    """The run's process failed; its slot counts as finished (the budget was spent)."""


class Interrupted(Exception):
    """The runner was stopped (Ctrl-C, SIGTERM) while this run was in flight: the run is kept as
    "interrupted" and its slot queued again, so the next ``recsys study run`` goes on with it."""


# How long a run stopped by Ctrl-C gets to shut down (Lightning's graceful shutdown) before SIGKILL.
INTERRUPT_GRACE_S = 30.0


@dataclass
class Unit:
    """One run: a slot of a phase of a task."""

    task: Task
    phase: Phase
    slot: int
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.task.dataset}/{self.task.model.name}/{self.directory_name}"

    @property
    def directory_name(self) -> str:
        return f"tune-{self.slot}" if self.phase == "tune" else f"seed-{self.seed}"

    def directory(self, spec: StudySpec) -> Path:
        return spec.output / "runs" / self.task.dataset / self.task.model.name / self.directory_name


def cli_args(values: dict[str, Any]) -> list[str]:
    """``{"model.lr": 0.01, "model.hidden": [64, 32]}`` -> ``--model.lr=0.01 --model.hidden=[64, 32]``."""
    return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in values.items()]


def command(spec: StudySpec, unit: Unit, trial_id: int | None) -> list[str]:
    """The ``recsys fit`` command of a unit (what run.json records and a user can re-run). Its
    output goes to the run's stdout.txt, a file, so the run prints plain progress lines there."""
    config = unit.task.model.config_for(unit.task.dataset, spec.root)
    data = {f"data.{k}": v for k, v in spec.datasets[unit.task.dataset].items()}
    recorder = {"class_path": "recsys.study.RunRecorder",
                "init_args": {"select": spec.select, "select_mode": spec.select_mode}}
    args = [sys.executable, "-m", "recsys.cli", "fit", f"--config={config}", *cli_args(data),
            *cli_args(unit.task.model.overrides), *cli_args(unit.params), f"--seed_everything={unit.seed}",
            f"--trainer.default_root_dir={unit.directory(spec)}", f"--monitor={spec.select}",
            f"--monitor_mode={spec.select_mode}",  # checkpoints and early stopping on the study's selection metric
            f"--trainer.callbacks+={json.dumps(recorder)}", f"--test_after_fit={unit.phase == 'seed'}"]
    if unit.phase == "seed" and spec.list_metrics:
        args.append(f"--model.metrics={json.dumps(logged_metrics(spec))}")
    if unit.phase == "tune" and spec.pruning and trial_id is not None:
        pruning = {"class_path": "recsys.study.OptunaPruning",
                   "init_args": {"storage": spec.storage, "study_name": unit.task.study_name(spec, "tune"),
                                 "trial_id": trial_id, "monitor": spec.select, "trials": spec.trials}}
        args.append(f"--trainer.callbacks+={json.dumps(pruning)}")
    return args


def logged_metrics(spec: StudySpec) -> list[str]:
    """What a seed run logs when the study asks for list metrics: the report's rank metrics (at
    the model's cutoffs), the selection metric, and every list metric at every report cutoff."""
    names = list(spec.metrics)
    if spec.primary not in names:  # as written: `ndcg` alone is logged at the model's cutoffs only
        names.append(spec.primary)
    return names + spec.report_list_metrics


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the runner dies (Linux), so a killed runner
    leaves no orphan run writing into a directory the next runner reuses."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_header(spec: StudySpec, unit: Unit) -> dict[str, Any]:
    """What every run.json starts with: the study, the unit and the worker that ran it."""
    return {"study": spec.name, "fingerprint": spec.fingerprint(), "dataset": unit.task.dataset,
            "model": unit.task.model.name, "phase": unit.phase, "slot": unit.slot, "seed": unit.seed,
            "params": unit.params, "host": claims.HOST, "worker_pid": os.getpid()}


def execute(spec: StudySpec, unit: Unit, trial_id: int | None, env: dict[str, str],
            resume: bool = True, stop: threading.Event | None = None) -> dict[str, Any]:
    """Run one unit to the end; returns its run.json. Raises RunFailed when the process fails, and
    Interrupted when ``stop`` is set while it runs (the run is stopped; run.json says
    "interrupted", which resumes as a killed run does).

    A run whose worker died (run.json still says "running") after its first epoch goes on from
    its ``last.ckpt`` (``recsys fit --ckpt_path last``: weights, optimizer, epoch, early stopping,
    random states and the recorder's epochs), so a kill loses at most the epoch in flight; its
    stdout/stderr go on in the same files. That needs the same command and the same config file
    contents; and when the resumed process fails before training again (a checkpoint that no
    longer loads, a logger folder that exists already), the run starts over. Any other leftover
    directory (no checkpoint yet, a failed run retried, a changed command or config) is kept
    aside as ``<name>.crashed-<time>`` and the run starts over."""
    directory = unit.directory(spec)
    args = command(spec, unit, trial_id)
    run = {**run_header(spec, unit), "command": args[2:], "config_files": config_files(args), "status": "running",
           "started": _now(), "versions": versions(), "git": git_state(spec.root),
           "threads": env.get("OMP_NUM_THREADS")}
    killed = resumable(directory, run) if resume else None
    resumes_before = 0
    if killed is not None:
        resumes_before = len((read_json_or_none(directory / RECORD) or {}).get("resumed") or [])
        args.append("--ckpt_path=last")
        (directory / PRUNED).unlink(missing_ok=True)  # a pruning decision the kill cut off: this attempt decides anew
        run["attempts"] = [*killed.get("attempts", []), {key: killed.get(key) for key in ATTEMPT_KEYS}]
    elif directory.exists():  # a run that failed, or died before its first checkpoint: kept aside
        _move_aside(directory, "crashed")
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / RUN, run)
    returncode = _run_process(args, directory, spec, env, run, append=killed is not None, stop=stop)
    try:
        record = read_json(directory / RECORD) or {}
    except ValueError as error:  # a run killed while writing it (write_json is atomic, so unlikely)
        record = {"error": str(error)}
    resumed = record.get("resumed") or []
    if killed is not None and returncode and len(resumed) == resumes_before:
        return execute(spec, unit, trial_id, env, resume=False, stop=stop)  # it never trained again: start over
    if killed is not None and len(resumed) > resumes_before:  # the seconds the kept epochs took count too
        run["attempt_wall_s"], run["wall_s"] = run["wall_s"], run["wall_s"] + float(resumed[-1]["elapsed_s"])
    configs = sorted(directory.glob("lightning_logs/version_*/config.yaml"), key=_written)
    if configs:  # the run's config as first launched; results.json is beside the newest attempt's
        run["config_hash"] = hashlib.sha256(configs[0].read_bytes()).hexdigest()[:16]
        run["config_path"] = str(configs[-1].relative_to(directory))
    pruned = (directory / PRUNED).exists()
    run["status"] = "failed" if returncode else ("pruned" if pruned else "done")
    run["value"] = record.get("best_score")
    if run["status"] == "done" and run["value"] is None:  # exit 0, yet nothing to select on
        run["status"], run["error"] = "failed", record.get("error") or f"the run logged no {spec.select}"
    write_json(directory / RUN, run)
    if run["status"] == "failed":
        raise RunFailed(f"{unit.label}: exit {returncode}: {run['error']}")
    return run


# What run.json keeps of each earlier attempt of a resumed run.
ATTEMPT_KEYS = ("started", "host", "worker_pid", "git")


def config_files(args: list[str]) -> dict[str, str]:
    """``--config=<file>`` of a command -> the sha256 of the file's contents (a resume needs them
    unchanged: the command names the file, not what it says)."""
    files = [a.removeprefix("--config=") for a in args if a.startswith("--config=")]
    return {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files if Path(f).is_file()}


def resumable(directory: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The run.json in ``directory`` of a run that was killed in flight (status "running": its
    worker died, or the slot would not have been handed out again; or "interrupted": its runner
    was stopped with Ctrl-C) with the command and config
    file contents of ``run`` and a ``last*.ckpt`` to go on from; else None. The pruning callback's
    trial id is left out of the comparison: a re-queued tuning slot gets a new trial with the same
    parameters. The command holds absolute paths, so the run folder must be where it was."""
    previous = read_json_or_none(directory / RUN)
    if previous is None or previous.get("status") not in IN_FLIGHT or not any(directory.rglob("last*.ckpt")):
        return None

    def same(args: list[str]) -> list[str]:
        return [a for a in args if "OptunaPruning" not in a]

    if same(previous.get("command") or []) != same(run["command"]):
        return None
    return previous if previous.get("config_files") == run["config_files"] else None


def _written(path: Path) -> float:
    """When ``path`` was last written: a resumed run's attempts each write a config.yaml into a new
    logger version folder, named by number or by Slurm job id, so the order is by time."""
    return path.stat().st_mtime


def _run_process(args: list[str], folder: Path, spec: StudySpec, env: dict[str, str], run: dict[str, Any],
                 append: bool = False, stop: threading.Event | None = None) -> int:
    """Run ``args`` from the study's root with output in ``folder``/stdout.txt and stderr.txt
    (after what is there, with ``append``: a resumed run's earlier attempts); put its wall
    seconds, exit code, end time and (when it failed) stderr's last line into ``run``. When
    ``stop`` was set first and the process did not finish, ``run`` (``folder``/run.json) says
    "interrupted" and Interrupted is raised.

    The process gets a session of its own, so a Ctrl-C in the terminal reaches the runner alone;
    the runner then stops its runs itself (:func:`_wait`) and records them as interrupted, instead
    of each run seeing the signal as a failure of its own."""
    start = time.perf_counter()
    with open(folder / "stdout.txt", "ab" if append else "wb") as out, \
            open(folder / "stderr.txt", "ab" if append else "wb") as err:
        if append:
            for stream in (out, err):
                stream.write(f"\n==== resumed {run['started']} by {claims.HOST} pid {os.getpid()} ====\n".encode())
                stream.flush()
        process = subprocess.Popen(args, cwd=spec.root, env=env, stdout=out, stderr=err, start_new_session=True,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        stopped = _wait(process, stop)
    run.update(wall_s=time.perf_counter() - start, returncode=process.returncode, finished=_now())
    if process.returncode:
        tail = (folder / "stderr.txt").read_text(errors="replace").strip().splitlines()[-1:] or ["(no stderr)"]
        run["error"] = tail[0]
        if stopped:
            run["status"] = "interrupted"
            write_json(folder / RUN, run)
            raise Interrupted(str(folder))
    return process.returncode


def _wait(process: subprocess.Popen, stop: threading.Event | None) -> bool:
    """Wait for ``process`` to end. When ``stop`` is set first, stop it as a Ctrl-C would (SIGINT:
    Lightning shuts down gracefully), or with SIGKILL after INTERRUPT_GRACE_S; returns whether
    it was stopped."""
    while True:
        try:
            process.wait(timeout=None if stop is None else 0.5)
            return False
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                break
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return True


# The run.json statuses of a fit that has not ended: its worker is running it, died, or was stopped.
IN_FLIGHT = ("running", "interrupted")


def evaluation_folders(spec: StudySpec) -> Iterator[tuple[Task, str, dict[str, Any], Path]]:
    """(task, label, overrides, seed run directory) of every evaluation the study asks for, over
    the seed runs on disk (crashed attempts, ``*.crashed-*``, left out); the evaluation's own
    folder is ``<seed run directory>/eval-<label>``."""
    for task in claims.tasks(spec):
        root = spec.output / "runs" / task.dataset / task.model.name
        seeds = [d for d in sorted(root.glob("seed-*")) if ".crashed-" not in d.name] if root.is_dir() else []
        for label, overrides in task.model.evaluations.items():
            for directory in seeds:
                yield task, label, overrides, directory


def pending_evaluations(spec: StudySpec) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """(seed run directory, label, overrides) of every evaluation still to run: of a finished
    seed run, with no ``eval-<label>/`` yet, or one whose worker died on this host (moved aside
    to ``eval-<label>.crashed-<time>``, as crashed runs are). Evaluations run after the seed
    trial is complete, so a crash during one never re-trains the model."""
    for _, label, overrides, directory in evaluation_folders(spec):
        if (read_json_or_none(directory / RUN) or {}).get("status") != "done":
            continue
        folder = directory / f"eval-{label}"
        state = read_json_or_none(folder / RUN) if folder.exists() else None
        if state is not None and state.get("status") == "running" and state.get("host") == claims.HOST \
                and not claims.alive(int(state.get("worker_pid") or 0)):
            _move_aside(folder, "crashed")
        if not folder.exists():
            yield directory, label, overrides


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:
        return None


def _move_aside(folder: Path, why: str) -> None:
    """Keep ``folder`` as ``<name>.<why>-<time>`` (the report and the runner skip those)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    try:
        shutil.move(str(folder), str(folder.with_name(f"{folder.name}.{why}-{stamp}")))
    except FileNotFoundError:  # another worker moved it first
        pass


def evaluate(spec: StudySpec, directory: Path, label: str, overrides: dict[str, Any], env: dict[str, str],
             log: Callable[[str], None] = lambda line: None, stop: threading.Event | None = None) -> dict[str, Any] | None:
    """One of a model's ``evaluations``: ``recsys test`` of a seed run's selected checkpoint (its
    ``last.ckpt`` when it selected none) with the run's own config plus ``overrides``, into
    ``<run>/eval-<label>/``, with its own run.json, record.json and ranks.csv. Creating that
    folder claims the evaluation (None: another worker has it). A failure is recorded there (the
    report shows it; ``--retry-failed`` runs it again) and never fails the seed run. One stopped by
    ``stop`` (Ctrl-C) is moved aside (``eval-<label>.interrupted-<time>``) and raises Interrupted:
    the next ``run`` tests that checkpoint again."""
    folder = directory / f"eval-{label}"
    try:
        folder.mkdir()
    except FileExistsError:
        return None
    fitted = read_json_or_none(directory / RUN) or {}
    header = {key: fitted.get(key) for key in ("study", "fingerprint", "dataset", "model", "phase", "slot", "seed",
                                               "params")}
    run: dict[str, Any] = {**header, "host": claims.HOST, "worker_pid": os.getpid(), "evaluation": label,
                           "status": "running", "started": _now()}
    write_json(folder / RUN, run)  # at once: a worker dying from here on leaves a "running" evaluation
    name = f"{directory.parent.parent.name}/{directory.parent.name}/{directory.name} [{label}]"
    log(f"start {name}")
    config = directory / fitted.get("config_path", "")
    results = read_json_or_none(config.parent / "results.json") or {}
    lasts = sorted(directory.glob("lightning_logs/*/checkpoints/last*.ckpt"), key=_written)  # any attempt's
    checkpoint = results.get("checkpoint") or str(lasts[-1] if lasts else config.parent / "checkpoints" / "last.ckpt")
    args = [sys.executable, "-m", "recsys.cli", "test", f"--config={config}", f"--ckpt_path={checkpoint}",
            *cli_args(overrides), f"--trainer.default_root_dir={folder}"]
    run["command"] = args[2:]
    write_json(folder / RUN, run)
    try:
        returncode = _run_process(args, folder, spec, env, run, stop=stop)
    except Interrupted:
        _move_aside(folder, "interrupted")
        raise
    if returncode:
        run["status"] = "failed"
    elif not (folder / RANKS).is_file():
        run.update(status="failed", error="the test saved no ranks (is the study's RunRecorder in the config?)")
    else:
        run["status"] = "done"
    write_json(folder / RUN, run)
    log(f"{run['status']} {name} in {run['wall_s']:.0f} s" + (f": {run['error']}" if "error" in run else ""))
    return run


def check_evaluations(spec: StudySpec) -> None:
    """Raise StudyError, before anything runs, for an evaluation option the model does not take
    (``models.X.evaluations.Y: model.grounder: ...``): found after training, it would have cost
    every seed run. Only ``model.*`` options are checked (against the ``__init__`` signatures of
    the model class and, through ``**kwargs``, its bases)."""
    import inspect

    import yaml

    from recsys.lazy import object_at
    from recsys.plugins import get_models

    for name, model in spec.models.items():
        if not model.evaluations:
            continue
        dataset = next(d for d in spec.datasets if model.runs_on(d))
        config = yaml.safe_load(model.config_for(dataset, spec.root).read_text()) or {}
        class_path = str(model.overrides.get("model", (config.get("model") or {}).get("class_path", "")))
        registered = get_models().get(class_path)
        cls = registered.obj if registered is not None else (object_at(class_path) if "." in class_path else None)
        if cls is None:
            continue  # the fit will say what is wrong with the class itself
        accepted: set[str] = set()
        for klass in inspect.getmro(cls):
            if "__init__" not in vars(klass):
                continue
            parameters = inspect.signature(vars(klass)["__init__"]).parameters
            accepted |= set(parameters)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                break
        for label, overrides in model.evaluations.items():
            for key in overrides:
                option = key.removeprefix("model.").removeprefix("init_args.").split(".")[0]
                if key.startswith("model.") and option not in accepted:
                    raise StudyError(f"{spec.path}: models.{name}.evaluations.{label}: {key}: {cls.__name__} takes no "
                                     f"option {option!r}; it takes {sorted(accepted - {'self', 'args', 'kwargs'})}")


def check_datasets(spec: StudySpec) -> None:
    """Raise StudyError, before anything runs, for a dataset whose ``path`` is neither a folder or
    ``.inter`` file (relative to the study's root, where runs start) nor an embedded dataset:
    otherwise every run on it fails at once and spends its budget slot. Datasets that none of
    the study's models (after ``--models``) run on are not checked."""
    from recsys.data.embedded import EMBEDDED, resolve_dataset

    for name, options in spec.datasets.items():
        if "path" not in options or not any(model.runs_on(name) for model in spec.models.values()):
            continue  # the models' own configs name the data, or nothing here runs on it
        raw = str(options["path"])
        local = Path(raw) if Path(raw).is_absolute() else spec.root / raw
        try:
            resolve_dataset(raw if raw in EMBEDDED and not local.exists() else local)
        except FileNotFoundError as error:
            raise StudyError(f"{spec.path}: datasets.{name}.path: {error}") from None


def retry_failed_evaluations(spec: StudySpec) -> list[Path]:
    """Move every failed evaluation aside (``eval-<label>.failed-<time>``), so it runs again."""
    moved = []
    for _, label, _, directory in evaluation_folders(spec):
        folder = directory / f"eval-{label}"
        if (read_json_or_none(folder / RUN) or {}).get("status") == "failed":
            _move_aside(folder, "failed")
            moved.append(folder)
    return moved


def record_failure(spec: StudySpec, unit: Unit, error: str) -> None:
    """A unit that failed before its run could start (e.g. seeds without a finished tuning trial):
    its run.json says so, so ``status`` and the report show it like any failed run."""
    directory = unit.directory(spec)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / RUN, {**run_header(spec, unit), "status": "failed", "error": error, "finished": _now()})


class Worker:
    """Claims and runs units until the study is finished. One per ``--jobs`` thread."""

    def __init__(self, spec: StudySpec, store: optuna.storages.BaseStorage, env: dict[str, str],
                 log: Callable[[str], None], stop: threading.Event, index: int = 0):
        self.spec, self.store, self.env, self.log, self.stop, self.index = spec, store, env, log, stop, index
        self.ran = 0
        self.finished = threading.Event()  #: set when :meth:`loop` has returned

    def loop(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    progressed, waiting = self.step()
                except Interrupted:
                    return
                if progressed:
                    continue
                if not waiting:
                    return
                time.sleep(POLL_SECONDS)
        finally:
            self.finished.set()

    def step(self) -> tuple[bool, bool]:
        """Run one claimable unit (a finished seed run's pending evaluation first). Returns (ran
        something, something is still running elsewhere)."""
        for directory, label, overrides in pending_evaluations(self.spec):
            if evaluate(self.spec, directory, label, overrides, self.env, self.log, self.stop) is not None:
                self.ran += 1
                return True, True
        waiting = False
        for task in claims.tasks(self.spec):
            for phase in task.phases(self.spec):
                study = claims.open_study(self.spec, task, phase, self.store, self.index)
                claims.fail_orphans(study, self.store)
                state = claims.phase_state(study)
                if state.done:
                    continue
                if phase == "seed" and not self._tuned(task):
                    waiting = True
                    break
                if not state.claimable:
                    waiting = True
                    break  # the seeds need the tuning trials still running elsewhere
                if self._run_one(task, phase, study):
                    return True, True
                waiting = True
                break
        return False, waiting

    def _tuned(self, task: Task) -> bool:
        if task.budget(self.spec, "tune") == 0:
            return True
        return claims.phase_state(claims.open_study(self.spec, task, "tune", self.store)).done

    def best_params(self, task: Task) -> dict[str, Any]:
        if task.budget(self.spec, "tune") == 0:
            return {}
        study = claims.open_study(self.spec, task, "tune", self.store)
        best = claims.best_trial(study, self.spec.select_mode == "max")
        if best is None:
            raise RunFailed(f"{task.dataset}/{task.model.name}: no tuning trial finished with a value "
                            f"(see {self.spec.output / 'runs' / task.dataset / task.model.name}/tune-*/stderr.txt)")
        return dict(best.params)

    def _run_one(self, task: Task, phase: Phase, study: optuna.Study) -> bool:
        """Claim one slot through ``study.optimize`` (heartbeats, stale-trial recovery) and run it."""
        ran: list[Unit] = []

        def objective(trial: optuna.Trial) -> float:
            slot = claims.take_slot(study, self.store, trial)
            if phase == "tune":
                params = {p.key: claims.suggest(trial, p) for p in task.model.search}
                seed = self.spec.seeds[0]
            else:
                seed = self.spec.seeds[slot]
                try:
                    params = self.best_params(task)
                except RunFailed as error:  # every tuning trial failed: each seed slot fails, visibly
                    unit = Unit(task, phase, slot, seed)
                    ran.append(unit)
                    trial.set_user_attr(claims.RUN_FAILED, True)
                    record_failure(self.spec, unit, str(error))
                    self.log(f"FAILED {unit.label}: {error}")
                    raise
            unit = Unit(task, phase, slot, seed, params)
            self.log(f"start {unit.label}" + (f" {params}" if params else ""))
            ran.append(unit)
            try:
                run = execute(self.spec, unit, trial._trial_id, self.env, stop=self.stop)
            except RunFailed as error:
                trial.set_user_attr(claims.RUN_FAILED, True)
                self.log(f"FAILED {error}")
                raise
            except Interrupted:  # the slot is queued again; its run goes on from its last checkpoint
                claims.requeue(study, self.store.get_trial(trial._trial_id))
                self.log(f"interrupted {unit.label}: the next `recsys study run` goes on with it")
                raise  # not caught by optimize: the trial fails and the worker stops
            self.log(f"{run['status']} {unit.label} in {run['wall_s']:.0f} s: {self.spec.select} {run['value']}")
            if run["status"] == "pruned":
                raise optuna.TrialPruned()
            return float(run["value"])

        study.optimize(objective, n_trials=1, catch=(OverBudget, RunFailed))
        self.ran += len(ran)
        return bool(ran)


def run_study(spec: StudySpec, jobs: int = 1, log: Callable[[str], None] = print, retry_failed: bool = False) -> int:
    """Run every unclaimed slot of the study with ``jobs`` worker threads; returns how many ran.
    With ``retry_failed``, runs that failed are queued again first (:func:`claims.retry_failed`)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    # The runner says what happens itself (FAILED, interrupted): Optuna would add a traceback per trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    check_datasets(spec)
    check_evaluations(spec)
    store = claims.storage(spec)
    if retry_failed:
        for folder in retry_failed_evaluations(spec):
            log(f"retrying {folder.relative_to(spec.output / 'runs')}: the evaluation failed")
        for task in claims.tasks(spec):
            for phase in task.phases(spec):
                for slot in claims.retry_failed(claims.open_study(spec, task, phase, store)):
                    log(f"retrying {task.dataset}/{task.model.name}/{phase}-{slot}: its run failed")
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:  # parallel runs share the cores instead of fighting
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    stop = threading.Event()
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            log(f"[{datetime.now().strftime('%H:%M:%S')}] {message}")

    workers = [Worker(spec, store, env, say, stop, i) for i in range(jobs)]
    threads = [threading.Thread(target=w.loop, name=f"study-worker-{i}") for i, w in enumerate(workers)]
    started: list[Worker] = []
    previous = _raise_on_sigterm()
    try:
        for worker, thread in zip(workers, threads):
            thread.start()
            started.append(worker)
        for worker in workers:
            while not worker.finished.wait(timeout=0.5):
                pass
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each worker stops its run and records it as interrupted
        say("stopping: the runs in flight are interrupted; `recsys study run` again goes on with them")
        stop.set()
        for worker in started:  # (not Thread.join: on Python 3.11 an interrupted join forgets the thread)
            worker.finished.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return sum(w.ran for w in workers)


def _raise_on_sigterm() -> Any:
    """Make SIGTERM (``kill``, a scheduler's preemption) stop the runner as Ctrl-C does; returns
    the handler it replaced (None off the main thread, where Python allows no handler)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def status(spec: StudySpec) -> list[dict[str, Any]]:
    """Per dataset, model and phase: finished / running / budget slots (the study file's budget),
    and failed runs. Reads the database without writing to it, nor creating it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = not spec.storage.startswith("sqlite:///") or Path(spec.storage.removeprefix("sqlite:///")).exists()
    store = claims.storage(spec) if started else None
    rows = []
    for task in claims.tasks(spec):
        for phase in task.phases(spec):
            study = claims.find_study(spec, task, phase, store) if store is not None else None
            state = claims.phase_state(study, budget=task.budget(spec, phase))
            pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))) if study is not None else 0
            rows.append({"dataset": task.dataset, "model": task.model.name, "phase": phase,
                         "finished": len(state.finished), "running": len(state.running),
                         "queued": len(state.waiting), "budget": state.budget,
                         "failed": len(state.failed), "pruned": pruned})
    # (dataset, model, label) -> the status of each of its evaluations started so far
    states: dict[tuple[str, str, str], list[Any]] = {
        (task.dataset, task.model.name, label): [] for task in claims.tasks(spec) for label in task.model.evaluations}
    for task, label, _, directory in evaluation_folders(spec):
        if (directory / f"eval-{label}").exists():
            states[task.dataset, task.model.name, label].append(
                (read_json_or_none(directory / f"eval-{label}" / RUN) or {}).get("status"))
    for (dataset, model, label), found in states.items():
        rows.append({"dataset": dataset, "model": model, "phase": f"eval:{label}",
                     "finished": found.count("done") + found.count("failed"), "running": found.count("running"),
                     "queued": len(spec.seeds) - len(found), "budget": len(spec.seeds),
                     "failed": found.count("failed"), "pruned": 0})
    return rows


def in_flight(spec: StudySpec) -> list[dict[str, Any]]:
    """The fits whose run.json says "running" or "interrupted": how far each has got (epochs
    recorded of those allowed, the newest value of the selection metric), since when, and, for a
    run of this host, whether its worker is alive (never, for an interrupted one); a run whose
    worker is gone goes on from its last checkpoint at the next ``run`` when it has one
    (``resumable``), else starts over."""
    rows = []
    for path in sorted(spec.output.glob("runs/*/*/*/run.json")):
        run = read_json_or_none(path) or {}
        if ".crashed-" in path.parent.name or run.get("status") not in IN_FLIGHT:
            continue
        record = read_json_or_none(path.parent / RECORD) or {}
        epochs = record.get("epochs") or []
        here = run.get("host") == claims.HOST
        rows.append({"run": str(path.parent.relative_to(spec.output / "runs")), "started": run.get("started"),
                     "attempt": len(run.get("attempts", [])) + 1, "epochs": len(epochs),
                     "max_epochs": record.get("max_epochs"),
                     "value": epochs[-1]["val"].get(spec.select) if epochs else None,
                     "interrupted": run.get("status") == "interrupted",
                     "worker_alive": (run.get("status") == "running" and claims.alive(int(run.get("worker_pid") or 0)))
                     if here else None,
                     "resumable": any(path.parent.rglob("last*.ckpt"))})
    return rows

