"""Who runs what: every run of a study is a slot of an Optuna study in one shared database.

Per dataset and model there are two Optuna studies: ``<study>/<dataset>/<model>/tune``
(``budget.trials`` slots, when the model has a search space) and ``.../seeds`` (one slot per seed,
with the best tuning trial's parameters). A worker claims a slot by asking the Optuna study for a
trial: the database numbers trials atomically and a trial's slot is its place among the fresh
(not re-queued) trials, so two workers (threads, processes or machines sharing a PostgreSQL URL)
never get the same slot, and a trial whose place is past the budget is refused. That is what keeps the budget equal: a model gets exactly ``budget.trials`` slots.

A crash loses at most the epoch in flight (the runner resumes the run from its ``last.ckpt``:
:func:`recsys.study.runner.resumable`). Running trials send heartbeats; one whose heartbeat stops
(its worker died) is failed by the next worker that looks, and its slot is queued again with the
same parameters. A worker also fails at once the running trials of dead processes on its own
host, so ``recsys study run`` after a ``kill -9`` resumes without waiting for the grace period.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from recsys.study.spec import ModelSpec, Param, StudySpec

Phase = Literal["tune", "seed"]
PHASES: tuple[Phase, ...] = ("tune", "seed")
HOST = socket.gethostname()
T = TypeVar("T")

# Attributes a study keeps on its trials.
SLOT, RETRY_OF, OVER_BUDGET, RUN_FAILED, PID, HOST_ATTR = "slot", "retry_of", "over_budget", "run_failed", "pid", "host"


@dataclass(frozen=True)
class Task:
    """One (dataset, model) pair of a study."""

    dataset: str
    model: ModelSpec

    def study_name(self, spec: StudySpec, phase: Phase) -> str:
        return f"{spec.name}/{self.dataset}/{self.model.name}/{phase}"

    def budget(self, spec: StudySpec, phase: Phase) -> int:
        return spec.trial_budget(self.model) if phase == "tune" else len(spec.seeds)

    def phases(self, spec: StudySpec) -> list[Phase]:
        """The phases with slots to run, in order (a model without a search space has no tuning)."""
        return [phase for phase in PHASES if self.budget(spec, phase) > 0]


@dataclass(frozen=True)
class PhaseState:
    """Slots of one phase: finished (a value, pruned, or a run that failed), running, queued
    again after a crash (waiting for a worker), and the budget."""

    finished: frozenset[int]
    running: frozenset[int]
    waiting: frozenset[int]
    budget: int
    failed: frozenset[int] = frozenset()  #: finished slots whose run failed (and was not retried)

    @property
    def done(self) -> bool:
        return len(self.finished) >= self.budget

    @property
    def claimable(self) -> bool:
        """A queued slot, or a slot never handed out."""
        return bool(self.waiting) or len(self.finished | self.running) < self.budget


def budget_of(study: optuna.Study) -> int:
    """The phase's budget as the database holds it (set by :func:`open_study` from the file)."""
    return int(study.user_attrs.get("budget", 0))


def tasks(spec: StudySpec) -> list[Task]:
    return [Task(d, m) for d in spec.datasets for m in spec.models.values() if m.runs_on(d)]


class OverBudget(Exception):
    """The database numbered this trial past the phase's budget: it is not run."""


def take_slot(study: optuna.Study, store: optuna.storages.BaseStorage, trial: optuna.Trial) -> int:
    """The slot of a trial just handed out by ``study.ask`` (inside ``optimize``), marked on the
    trial with this worker's host and process; raises OverBudget (marking it) past the budget."""
    slot = slot_of(study, store.get_trial(trial._trial_id))
    if slot >= budget_of(study):
        trial.set_user_attr(OVER_BUDGET, True)
        raise OverBudget(slot)
    trial.set_user_attr(SLOT, slot)
    trial.set_user_attr(PID, os.getpid())
    trial.set_user_attr(HOST_ATTR, HOST)
    return slot


def slot_of(study: optuna.Study, trial: FrozenTrial) -> int:
    """The trial's slot: the one it was queued again for, else its place among the trials the
    database created fresh (not re-queued) before it. Trial numbers are given out atomically and a
    re-queued trial is marked at creation, so every worker computes the same slot, without a lock."""
    if SLOT in trial.user_attrs:
        return int(trial.user_attrs[SLOT])
    # Trials refused as over budget hold no slot: after the file's budget is raised, the next
    # fresh trial takes the first new slot (counting them would put every later trial past it).
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number
               and RETRY_OF not in t.user_attrs and not t.user_attrs.get(OVER_BUDGET))


def storage(spec: StudySpec) -> optuna.storages.RDBStorage:
    """The study's database, with heartbeats; a stale trial's slot is queued again."""
    return open_storage(spec.storage, spec.heartbeat, spec.grace)


def open_storage(url: str, heartbeat: int | None = None, grace: int | None = None) -> optuna.storages.RDBStorage:
    """A study database at a SQLAlchemy ``url`` as workers must open it (SQLite serialized, see
    :func:`_serialize_sqlite`), with heartbeats when ``heartbeat`` seconds are given."""
    if url.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(url.removeprefix("sqlite:///")) or ".", exist_ok=True)
    engine: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        store = _retry_schema(lambda: optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=grace,
            heartbeat_stale_trial_callback=_requeue_stale if heartbeat else None))
    if url.startswith("sqlite"):
        _serialize_sqlite(store.engine)
    return store


def _retry_schema(open_db: Callable[[], T], attempts: int = 5) -> T:
    """``open_db()``, tried again when it lost a race with another worker to create the tables.
    Optuna creates a new database's tables check-then-create, so workers started together on a
    new database (SQLite file or server) collide; the next try finds the tables made."""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(attempts):
        try:
            return open_db()
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _serialize_sqlite(engine: Any) -> None:
    """SQLite ignores ``SELECT ... FOR UPDATE``, so two workers could both take the same queued
    slot (Optuna's check-and-set of a WAITING trial to RUNNING reads, then writes). Every
    transaction takes SQLite's write lock when it begins instead (SQLAlchemy's pysqlite recipe)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN off: the one below instead

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would keep pysqlite's BEGIN


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue a failed trial's slot again with its parameters (called once per stale trial);
    False for a trial that held no slot in the budget."""
    budget = budget_of(study)
    slot = slot_of(study, trial)
    if trial.user_attrs.get(OVER_BUDGET) or slot >= budget:
        return False
    study.enqueue_trial(trial.params, user_attrs={SLOT: slot, RETRY_OF: trial.number}, skip_if_exists=False)
    return True


def _requeue_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    requeue(study, trial)


def retry_failed(study: optuna.Study) -> list[int]:
    """Queue again, with the same parameters, every in-budget slot whose run failed (exit code
    != 0: a missing file, out of memory, a bug fixed since) and is not queued again already;
    returns those slots. A failed run otherwise counts as finished, so a study never loops on a
    run that cannot succeed; ``recsys study run --retry-failed`` is the user saying the cause is
    fixed. No slot is added: the budget stays what it was."""
    trials = study.get_trials(deepcopy=False)
    retried = {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs}
    slots = []
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get(RUN_FAILED) and trial.number not in retried:
            if requeue(study, trial):
                slots.append(slot_of(study, trial))
    return slots


def median_pruner(trials: int) -> optuna.pruners.MedianPruner:
    """The pruner of a study's tuning phase with a budget of ``trials``. Optuna keeps no pruner in
    the database, so the runner and every run process (:class:`~recsys.study.OptunaPruning`)
    must build the same one from this."""
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, trials // 4), n_warmup_steps=2)


def open_study(spec: StudySpec, task: Task, phase: Phase, store: optuna.storages.BaseStorage,
               worker: int = 0) -> optuna.Study:
    """The phase's Optuna study (created on first use). Its sampler is seeded from the study's
    first seed, the number of trials so far and the worker, so a serial study suggests the same
    parameters every time it is run and two workers of one runner do not draw the same point.
    The sampler is TPE, except for a space of choices only: there TPE repeats the best choice
    so far (a trial spent on a setting already measured), so each untried combination is drawn
    once first (Optuna's brute-force sampler, which then draws at random)."""
    direction: Literal["maximize", "minimize"] = "maximize" if spec.select_mode == "max" else "minimize"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=task.study_name(spec, phase), storage=store, direction=direction, load_if_exists=True,
            pruner=(median_pruner(spec.trials) if spec.pruning and phase == "tune" else optuna.pruners.NopPruner()))
    if study.user_attrs.get("budget") != task.budget(spec, phase):  # new, or the file's budget changed
        study.set_user_attr("budget", task.budget(spec, phase))
    seed = int.from_bytes(f"{spec.seeds[0]}/{len(study.trials)}/{worker}".encode(), "little") % 2**32
    if all(p.choices is not None for p in task.model.search):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.sampler = optuna.samplers.BruteForceSampler(seed=seed)
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, spec.trials // 3)))
    return study


def find_study(spec: StudySpec, task: Task, phase: Phase, store: optuna.storages.BaseStorage) -> optuna.Study | None:
    """The phase's Optuna study if a run has created it, else None; unlike :func:`open_study`
    it writes nothing (``recsys study status`` must not change the database it reads)."""
    try:
        return optuna.load_study(study_name=task.study_name(spec, phase), storage=store)
    except KeyError:  # Optuna's "no such study"
        return None


def phase_state(study: optuna.Study | None, budget: int | None = None) -> PhaseState:
    """Which of the phase's slots are finished, running, queued and failed. ``budget``: count
    slots up to this budget instead of the one the database holds (the study file's, when it
    changed since the last run); a study not created yet (None) has every slot still to run."""
    if study is None:
        return PhaseState(frozenset(), frozenset(), frozenset(), budget or 0, frozenset())
    budget = budget_of(study) if budget is None else budget
    finished, running, waiting, failed = set(), set(), set(), set()
    trials = study.get_trials(deepcopy=False)
    retried = {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs}
    for trial in trials:
        if SLOT not in trial.user_attrs or trial.number in retried:  # over budget, claimed an instant ago, or superseded
            continue
        slot = int(trial.user_attrs[SLOT])
        if slot >= budget or trial.user_attrs.get(OVER_BUDGET):
            continue
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            finished.add(slot)
        elif trial.state == TrialState.FAIL and trial.user_attrs.get(RUN_FAILED):
            finished.add(slot)
            failed.add(slot)
        elif trial.state == TrialState.RUNNING:
            running.add(slot)
        elif trial.state == TrialState.WAITING:
            waiting.add(slot)
    return PhaseState(frozenset(finished), frozenset(running - finished), frozenset(waiting - finished - running),
                      budget, frozenset(failed))


def best_trial(study: optuna.Study, maximize: bool) -> FrozenTrial | None:
    """The best finished in-budget trial (ties: the lower slot), or None when none finished."""
    budget = budget_of(study)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if int(t.user_attrs.get(SLOT, budget)) < budget and t.value is not None]
    if not done:
        return None
    return sorted(done, key=lambda t: ((-t.value if maximize else t.value), t.user_attrs[SLOT]))[0]  # type: ignore[operator]


def suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(param.key, list(param.choices))
    assert param.low is not None and param.high is not None  # a range, checked by the spec
    if param.is_int:
        return trial.suggest_int(param.key, int(param.low), int(param.high), log=param.log,
                                 step=int(param.step or 1))
    return trial.suggest_float(param.key, float(param.low), float(param.high), log=param.log, step=param.step)


def fail_orphans(study: optuna.Study, store: optuna.storages.BaseStorage) -> None:
    """Fail (and queue again) running trials whose worker process on this host is gone."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get(PID)
        if trial.user_attrs.get(HOST_ATTR) != HOST or pid is None or pid == os.getpid() or alive(int(pid)):
            continue
        try:
            if store.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                requeue(study, store.get_trial(trial._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker finished or failed it first
            continue


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
