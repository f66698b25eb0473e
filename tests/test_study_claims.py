"""Slots of a study's phase, claimed by concurrent workers through one database: every slot is
run exactly once, nothing past the budget runs, and a dead worker's slot is queued again. On
SQLite always; on a throwaway PostgreSQL server when `initdb` and psycopg2 are installed."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from recsys.study import claims


def _phase(url: str, budget: int) -> str:
    store = claims.open_storage(url)
    study = optuna.create_study(study_name="s/d/m/seed", storage=store, load_if_exists=True)
    study.set_user_attr("budget", budget)
    return "s/d/m/seed"


def _claim_until_done(url: str, name: str, workers: int) -> list[int]:
    """``workers`` threads, each with its own storage and study object, claim until the phase is done."""
    ran: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        store = claims.open_storage(url)  # as workers open it (SQLite serialized)
        study = optuna.load_study(study_name=name, storage=store)

        def objective(trial: optuna.Trial) -> float:
            slot = claims.take_slot(study, store, trial)
            trial.suggest_float("x", 0, 1)  # a re-queued slot gets its first parameters back
            time.sleep(0.05)  # a run: long enough for the others to ask meanwhile
            with lock:
                ran.append(slot)
            return float(slot)

        while not claims.phase_state(study).done:
            if claims.phase_state(study).claimable:
                study.optimize(objective, n_trials=1, catch=(claims.OverBudget,))
            else:
                time.sleep(0.05)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return ran


def _check_every_slot_once(url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = _phase(url, budget=6)
    ran = _claim_until_done(url, name, workers=4)
    assert sorted(ran) == list(range(6))  # each slot once, none past the budget
    study = optuna.load_study(study_name=name, storage=url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs[claims.SLOT] for t in complete) == list(range(6))
    assert all(t.user_attrs.get(claims.OVER_BUDGET) for t in study.trials if t.state == TrialState.FAIL)


def test_sqlite_four_workers_claim_every_slot_exactly_once(tmp_path):
    _check_every_slot_once(f"sqlite:///{tmp_path / 'study.db'}")


def _open_at_once(url: str, barrier, errors) -> None:
    barrier.wait()  # every process opens the new database at the same moment
    try:
        claims.open_storage(url)
    except Exception as error:  # reported to the test, which names it
        errors.put(f"{type(error).__name__}: {str(error).splitlines()[0]}")


def _check_opened_together(urls: list[str], workers: int = 5) -> None:
    """``workers`` processes open each new database together; all must succeed. (Optuna creates
    its tables check-then-create: unguarded, most rounds had a worker fail with "table studies
    already exists" or a duplicate alembic_version row.)"""
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for url in urls:
        barrier = context.Barrier(workers)
        processes = [context.Process(target=_open_at_once, args=(url, barrier, errors)) for _ in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        assert [p.exitcode for p in processes] == [0] * workers
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found


def test_workers_started_together_on_a_new_sqlite_file_all_open_it(tmp_path):
    _check_opened_together([f"sqlite:///{tmp_path / f'new{i}.db'}" for i in range(4)])


def test_a_dead_workers_running_slot_is_queued_again_with_its_parameters(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    name = _phase(url, budget=2)
    store = claims.open_storage(url)
    study = optuna.load_study(study_name=name, storage=store)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer runs
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr(claims.SLOT, 0)
    trial.set_user_attr(claims.PID, dead.pid)
    trial.set_user_attr(claims.HOST_ATTR, claims.HOST)
    assert claims.phase_state(study).running == {0}
    claims.fail_orphans(study, store)
    state = claims.phase_state(study)
    assert state.running == frozenset() and state.waiting == {0} and state.claimable
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert queued[0].user_attrs[claims.RETRY_OF] == trial.number
    ran = _claim_until_done(url, name, workers=2)
    assert sorted(ran) == [0, 1]  # slot 0 re-run once, slot 1 (a fresh slot after the retry) once
    rerun = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and t.user_attrs[claims.SLOT] == 0]
    assert len(rerun) == 1 and rerun[0].params == trial.params


def test_a_live_workers_slot_is_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    name = _phase(url, budget=1)
    store = claims.open_storage(url)
    study = optuna.load_study(study_name=name, storage=store)
    trial = study.ask()
    for key, value in ((claims.SLOT, 0), (claims.PID, os.getpid() + 0), (claims.HOST_ATTR, claims.HOST)):
        trial.set_user_attr(key, value)
    claims.fail_orphans(study, store)  # our own process: alive
    assert claims.phase_state(study).running == {0} and not claims.phase_state(study).claimable


# ---- PostgreSQL ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server in a temporary directory (socket only), or a skip saying what is missing."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl)")
    pytest.importorskip("psycopg2")
    # not under pytest's own temporary folder: the server's user must be able to reach it
    root = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-p {port} -k {sockets} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={sockets}&port={port}"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_four_workers_claim_every_slot_exactly_once(postgres_url):
    _check_every_slot_once(postgres_url)


def test_workers_started_together_on_a_new_postgresql_database_all_open_it(postgres_url):
    import sqlalchemy

    base = postgres_url.split("?")[0].rsplit("/", 1)[0]
    query = postgres_url.split("?", 1)[1]
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for i in range(3):
            connection.exec_driver_sql(f"CREATE DATABASE fresh{i}")
    admin.dispose()
    _check_opened_together([f"{base}/fresh{i}?{query}" for i in range(3)])
