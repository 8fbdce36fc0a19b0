"""`sweep run` against the team stack, natively: Optuna on PostgreSQL (RDBStorage),
MLflow behind a real `mlflow server`, trials on a Dask cluster.

The services come from conftest.py's fixtures; without them these tests skip,
and with SWEEP_REQUIRE_SERVICES=1 they fail. The last two (a re-run Dask task,
a trial owned by another machine) need no service: the journal storage is the
case with no heartbeat to fall back on.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweep.search import study as sweep_study
from sweep.search.study import WORKER_ATTR, make_storage, reap_stale_trials, spool_path
from sweep.tracking import spool
from sweep_helpers import (
    SLOW_SPACE,
    dead_pid,
    load_study,
    mlflow_runs,
    on_dask_workers,
    run_cli,
    run_cli_interrupted,
    trial_context,
    write_config,
)

STATUS_OF = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED", TrialState.FAIL: "FAILED"}


def _study(storage_url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_url)


def _server_runs(tracking_uri: str, experiment: str) -> tuple[Any, dict[str, Any], list[Any]]:
    """(client, parent runs by key, child runs) of one experiment, read over HTTP."""
    return mlflow_runs(None, experiment, tracking_uri=tracking_uri)


def _assert_study_mirrored(storage_url: str, tracking_uri: str, name: str, expected: int) -> None:
    """Exactly `expected` trials in Optuna, one child run each under one parent, same params, full curves."""
    trials = _study(storage_url, name).get_trials()
    assert [t.number for t in trials] == list(range(expected))
    assert all(t.state in STATUS_OF for t in trials), [t.state for t in trials]
    client, parents, children = _server_runs(tracking_uri, name)
    assert list(parents) == ["study"]
    parent_id = parents["study"].info.run_id
    assert parents["study"].info.status == "FINISHED"
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in children)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert len(children) == expected and sorted(by_number) == list(range(expected))
    for t in trials:
        run = by_number[t.number]
        assert run.info.run_name == f"trial-{t.number:04d}"
        assert run.info.status == STATUS_OF[t.state]
        hidden = [str(v) for k, v in sorted(t.params.items()) if k.startswith("hidden_")]
        assert run.data.params["hidden_dims"] == "-".join(hidden)  # the sizes once, not hidden_1..k again
        for key, value in t.params.items():  # floats as a person writes them (sweep.config.display)
            if key.startswith("hidden_"):
                continue
            text = run.data.params[key]
            assert float(text) == pytest.approx(value, rel=5e-4) if isinstance(value, float) else text == str(value), key
        assert t.user_attrs.get("mlflow_run_id", run.info.run_id) == run.info.run_id
        history = client.get_metric_history(run.info.run_id, "val_acc")
        steps = sorted(m.step for m in history)
        # One point per epoch the trial trained (pruned trials stop early), as Optuna saw them.
        assert steps == sorted(t.intermediate_values) == list(range(1, len(steps) + 1))
        assert {m.step: m.value for m in history} == pytest.approx(t.intermediate_values, abs=5e-5)  # 4 decimals in MLflow
        if t.state == TrialState.COMPLETE:
            assert len(steps) == int(run.data.params["epochs"])  # fixed settings are no Optuna params


def test_sweep_on_postgres_and_mlflow_server_reaches_the_target_then_adds_the_missing(
    tmp_path: Path, postgres_db: str, mlflow_server: str
) -> None:
    name = "team-postgres"
    common = ["--study", name, "--storage", postgres_db, "--tracking-uri", mlflow_server,
              "--jobs", "2", "--epochs", "3"]
    first = run_cli(tmp_path, "run", *common, "--trials", "6")
    assert "best trial" in first.stdout, first.stdout
    assert mlflow_server in first.stdout  # the summary names the server it logged to
    _assert_study_mirrored(postgres_db, mlflow_server, name, 6)
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()

    second = run_cli(tmp_path, "run", *common, "--trials", "8")
    assert "6/8 trials done, running 2 more" in second.stdout, second.stdout
    _assert_study_mirrored(postgres_db, mlflow_server, name, 8)


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_killed_worker_on_postgres_is_retried_once_and_the_sweep_reaches_its_target(
    tmp_path: Path, postgres_db: str, mlflow_server: str
) -> None:
    """SIGKILL a worker mid-trial with RDB storage: the parent's pid check and Optuna's
    heartbeat could both fail and re-queue the trial; exactly one retry must result."""
    name = "team-kill"
    cfg = write_config(tmp_path / "slow.toml", SLOW_SPACE.replace("epochs = 12", "epochs = 8"), sweep='pruner = "none"')
    code, number, out = run_cli_interrupted(
        tmp_path,
        ["run", str(cfg), "--study", name, "--storage", postgres_db, "--tracking-uri", mlflow_server,
         "--jobs", "2", "--trials", "4"],
        name, lambda proc, pid: os.kill(pid, signal.SIGKILL),
    )
    assert code == 0, out
    assert "worker process died" in out

    trials = _study(postgres_db, name).get_trials()
    killed = trials[number]
    assert killed.state == TrialState.FAIL and "died" in killed.user_attrs["failure_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in retries]
    assert retries[0].params == killed.params and retries[0].state == TrialState.COMPLETE
    assert retries[0].system_attrs["retry_history"] == [number]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    assert sum(1 for t in trials if t.state.is_finished() and t.number not in retried) == 4

    _, parents, children = _server_runs(mlflow_server, name)
    assert parents["study"].info.status == "FINISHED"
    assert len(children) == len(trials)
    assert not [r for r in children if r.info.status == "RUNNING"]
    killed_run = next(r for r in children if r.data.tags["optuna.trial_number"] == str(number))
    assert killed_run.info.status == "FAILED" and "died" in killed_run.data.tags["failure_reason"]


# -- the two recovery mechanisms on one dead trial ------------------------------

_WRITE_START = (
    "import sys; from sweep.tracking.spool import RunRecorder; RunRecorder(sys.argv[1]).start(sys.argv[2], 'study', {}, {})"
)


def _dead_running_trial(storage_url: str, name: str, spool_dir: Path) -> tuple[optuna.Study, int]:
    """A RUNNING trial with one recorded heartbeat whose worker (a real process) wrote its
    spool start record and exited, as a SIGKILLed worker leaves it."""
    storage = make_storage(storage_url, spool_dir / "unused.journal")
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    study._storage.record_heartbeat(trial._trial_id)
    path = spool_path(spool_dir, trial.number)
    subprocess.run([sys.executable, "-c", _WRITE_START, str(path), f"trial-{trial.number:04d}"], check=True)
    return study, trial.number


def _retries_of(study: optuna.Study, number: int) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == number]


def test_a_trial_whose_reaper_died_before_requeueing_it_is_requeued_once_by_the_parent(
    tmp_path: Path, postgres_db: str
) -> None:
    """loky kills every worker when one dies: a worker reaping the dead one's trial at that
    moment can be cut after failing it and before re-queueing it. The parent's reaping
    (after TerminatedWorkerError) re-queues such a trial, once; workers leave it to the parent."""
    study, number = _dead_running_trial(postgres_db, "reaper-died", tmp_path)
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    # What the cut reaper did (sweep.search.study.reap_stale_trials' claim), and no more.
    storage.set_trial_user_attr(trial_id, "failure_reason", "worker process died")
    storage.set_trial_user_attr(trial_id, sweep_study.REAPED_ATTR, True)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)

    assert reap_stale_trials(study, tmp_path, "worker process died", requeue_interrupted=False) == []
    assert reap_stale_trials(study, tmp_path, "worker process died", min_age_seconds=0) == [number]
    assert reap_stale_trials(study, tmp_path, "worker process died", min_age_seconds=0) == []
    [retry] = _retries_of(study, number)
    assert retry.state == TrialState.WAITING and retry.params == study.trials[number].params
    assert sweep_study.REAPED_ATTR not in retry.user_attrs  # the retry starts clean
    end = spool.read_state(spool_path(tmp_path, number)).end
    assert end["status"] == "FAILED" and end["tags"]["failure_reason"] == "worker process died"


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_parent_reaping_and_optuna_heartbeat_retry_a_dead_trial_once(
    tmp_path: Path, postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # make_storage's real settings, scaled down: heartbeat every 1 s, stale after 3 s.
    monkeypatch.setattr(sweep_study, "HEARTBEAT_SECONDS", 1)
    heartbeat_first, hb_number = _dead_running_trial(postgres_db, "heartbeat-first", tmp_path / "a")
    reap_first, reap_number = _dead_running_trial(postgres_db, "reap-first", tmp_path / "b")

    # The parent sees the dead pid at once and re-queues ...
    assert reap_stale_trials(reap_first, tmp_path / "b", "worker process died", min_age_seconds=0) == [reap_number]
    time.sleep(3 * sweep_study.HEARTBEAT_SECONDS + 1)
    # ... so the heartbeat check every worker runs before its next trial finds nothing left to do.
    optuna.storages.fail_stale_trials(reap_first)
    # In the other study the heartbeat check comes first; the parent's reaping then leaves it alone.
    optuna.storages.fail_stale_trials(heartbeat_first)
    assert reap_stale_trials(heartbeat_first, tmp_path / "a", "worker process died", min_age_seconds=0) == []

    for study, number, reason in ((reap_first, reap_number, "worker process died"),
                                  (heartbeat_first, hb_number, "worker stopped sending heartbeats")):
        failed = study.trials[number]
        assert failed.state == TrialState.FAIL
        retries = _retries_of(study, number)
        assert len(retries) == 1
        assert retries[0].state == TrialState.WAITING and retries[0].params == failed.params
        assert retries[0].system_attrs["retry_history"] == [number]
        # The dead worker's run is closed either way, so its MLflow run ends FAILED, not RUNNING.
        end = spool.read_state(spool_path(tmp_path / ("b" if study is reap_first else "a"), number)).end
        assert end is not None and end["status"] == "FAILED" and end["tags"]["failure_reason"] == reason


def test_reaping_leaves_a_trial_another_process_failed_meanwhile(tmp_path: Path, postgres_db: str) -> None:
    """The race: the parent reads the trial as RUNNING, a worker's heartbeat check fails it
    (and re-queues it) before the parent writes. The parent must neither crash nor re-queue."""
    import psycopg2

    study, number = _dead_running_trial(postgres_db, "race", tmp_path)
    trial_id = study.trials[number]._trial_id
    dsn = postgres_db.replace("postgresql+psycopg2://", "postgresql://")
    rival = psycopg2.connect(dsn)  # plays the worker: takes the row lock fail_stale_trials takes
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    outcome: list[object] = []

    def reap() -> None:
        try:
            outcome.append(reap_stale_trials(study, tmp_path, "worker process died", min_age_seconds=0))
        except Exception as exc:  # reported below
            outcome.append(exc)

    try:
        with rival.cursor() as cur:
            cur.execute("SELECT state FROM trials WHERE trial_id = %s FOR UPDATE", (trial_id,))
            assert cur.fetchone() == ("RUNNING",)
            reaper = threading.Thread(target=reap)
            reaper.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the parent has read RUNNING and waits on the row
                with watcher.cursor() as w:
                    w.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    if w.fetchone()[0] > 0:
                        break
                time.sleep(0.05)
            else:
                raise AssertionError("the parent never waited on the trial's row")
            cur.execute("UPDATE trials SET state = 'FAIL', datetime_complete = now() WHERE trial_id = %s", (trial_id,))
        rival.commit()
        reaper.join(30)
    finally:
        rival.close()
        watcher.close()
    assert outcome == [[]], outcome
    assert _retries_of(study, number) == []  # the rival's callback re-queues, not the parent


# -- Dask ---------------------------------------------------------------------


def _spool_pids(spool_dir: Path) -> set[int]:
    return {spool.read_state(p).start["pid"] for p in spool.spool_files(spool_dir)}


def test_sweep_on_a_dask_cluster_runs_trials_on_its_workers(
    tmp_path: Path, postgres_db: str, mlflow_server: str, dask_client: Any
) -> None:
    name = "team-dask"
    with on_dask_workers(dask_client, tmp_path / "cache"):
        proc = run_cli(tmp_path, "run", "--study", name, "--storage", postgres_db, "--tracking-uri", mlflow_server,
                       "--dask-scheduler", dask_client.scheduler.address, "--trials", "4", "--epochs", "2")
    assert "4/4" in proc.stdout and "best trial" in proc.stdout, proc.stdout
    assert "(one per worker thread: 2 now)" in proc.stdout, proc.stdout  # the cluster's 2 x 1 threads
    _assert_study_mirrored(postgres_db, mlflow_server, name, 4)
    # The trials ran in the cluster's worker processes, not in `sweep run` itself.
    pids = _spool_pids(tmp_path / ".sweep" / name / "spool")
    assert pids and pids <= set(dask_client.run(os.getpid).values())


def test_events_of_a_worker_on_another_disk_reach_the_parents_spool(
    tmp_path: Path, postgres_db: str, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dask worker on another machine writes its spool file on its own disk: the
    outcome carries the events back and the parent writes them where its tracker reads."""
    from sweep.config.sweep_file import load_config
    from sweep.search.runner import _parallel_trials
    from sweep.search.study import open_study

    cfg = load_config(None, {"storage": postgres_db, "study": "team-remote", "trials": 2, "epochs": 2})
    open_study(cfg, make_storage(cfg.storage, tmp_path / "unused.journal"))
    parent, worker = tmp_path / "parent", tmp_path / "worker"
    parent.mkdir()
    worker.mkdir()
    # The same relative folders name different places on the two "machines".
    monkeypatch.chdir(parent)
    ctx = trial_context(cfg, Path(".sweep") / cfg.study_name)
    with on_dask_workers(dask_client, tmp_path / "cache", cwd=worker):
        results = list(_parallel_trials(ctx, 2, 2, 1, dask_client.scheduler.address))

    assert sorted(r["number"] for r in results) == [0, 1]
    for res in results:
        assert "spool" not in res  # the events are not carried further (progress, logs)
        name = f"trial-{res['number']:04d}.jsonl"
        copied, original = parent / ctx.spool_dir / name, worker / ctx.spool_dir / name
        assert copied.read_text() == original.read_text()
        events = spool.read_state(copied)
        assert events.start is not None and events.end is not None
        steps = [e["step"] for e in events.epochs]
        assert steps and steps == list(range(1, len(steps) + 1))
        if res["state"] == "COMPLETE":
            assert len(steps) == 2


def test_a_task_rerun_after_its_worker_died_trains_that_workers_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dask re-runs the task of a worker that died; nobody gets a TerminatedWorkerError.
    The re-run task must fail the dead worker's trial and train its params (journal
    storage: no heartbeat would ever do it)."""
    from sweep.config.sweep_file import load_config
    from sweep.search.study import open_study
    from sweep.search.worker import run_one_trial

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(None, {"study": "rerun", "trials": 2, "epochs": 1})
    ctx = trial_context(cfg, tmp_path)
    study = open_study(cfg, make_storage(None, ctx.journal_path))
    dead = study.ask()
    cfg.space.suggest(dead)  # the params the dead worker was training
    subprocess.run([sys.executable, "-c", _WRITE_START, str(spool_path(ctx.spool_dir, dead.number)), "trial-0000"],
                   check=True)

    res = run_one_trial(ctx)

    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[dead.number].user_attrs["failure_reason"] == "worker process died"
    retry = trials[res["number"]]
    assert res["number"] != dead.number and retry.system_attrs["failed_trial"] == dead.number
    assert retry.params == trials[dead.number].params and res["state"] in ("COMPLETE", "PRUNED")
    end = spool.read_state(spool_path(ctx.spool_dir, dead.number)).end
    assert end is not None and end["status"] == "FAILED"
    # The retry says on the study itself which process runs it, for machines that cannot see the spool file.
    owner = retry.system_attrs[WORKER_ATTR]
    assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())


def test_a_trial_running_on_another_machine_is_left_alone(tmp_path: Path) -> None:
    """No spool file here (it is on another machine's disk): the trial's owner record decides.
    A worker elsewhere is left to the heartbeat however old its trial; a dead one here is
    reaped, and so is a trial with no record at all (its worker died right after ask)."""
    study = optuna.create_study(storage=make_storage(None, tmp_path / "optuna.journal"), direction="maximize")
    owners = {
        "elsewhere": {"host": "another-machine", "pid": os.getpid(), "proc_start": None},
        "dead": {"host": socket.gethostname(), "pid": dead_pid(), "proc_start": None},
    }
    numbers = {}
    for key, owner in owners.items():
        trial = study.ask()
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, owner)
        numbers[key] = trial.number
    numbers["orphan"] = study.ask().number

    requeued = reap_stale_trials(study, tmp_path / "spool", "worker process died", min_age_seconds=0)
    assert sorted(requeued) == [numbers["dead"], numbers["orphan"]]
    assert study.trials[numbers["elsewhere"]].state == TrialState.RUNNING
    # A retry starts without the dead worker's record (else it would look dead until its new worker writes one).
    retry = _retries_of(study, numbers["dead"])
    assert len(retry) == 1 and WORKER_ATTR not in retry[0].system_attrs


def test_a_loky_worker_leaves_a_dead_siblings_trial_to_their_sweep_process(tmp_path: Path) -> None:
    """On an interrupt the parent SIGKILLs its loky workers one by one: a worker starting a
    task can see a sibling already dead. Its trial is the parent's to reap ("interrupted");
    a worker reaping it would call it "worker process died" (seen in CI). Another sweep's
    dead worker, or one with no sweep named (Dask), is still reaped by the worker."""
    study = optuna.create_study(storage=make_storage(None, tmp_path / "optuna.journal"), direction="maximize")
    dead = {"host": socket.gethostname(), "pid": dead_pid(), "proc_start": None}
    numbers = {}
    for key, sweep in (("sibling", "vm:100:5.0"), ("other sweep", "vm:200:7.0"), ("dask", None)):
        trial = study.ask()
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, {**dead, "sweep": sweep})
        numbers[key] = trial.number

    by_worker = reap_stale_trials(study, tmp_path / "spool", "worker process died", requeue_interrupted=False,
                                  leave_sweep="vm:100:5.0")
    assert sorted(by_worker) == [numbers["other sweep"], numbers["dask"]]
    assert study.trials[numbers["sibling"]].state == TrialState.RUNNING
    assert reap_stale_trials(study, tmp_path / "spool", "interrupted", min_age_seconds=0) == [numbers["sibling"]]
    assert study.trials[numbers["sibling"]].user_attrs["failure_reason"] == "interrupted"


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_a_trial_a_killed_sweep_had_just_asked_is_requeued_at_once_unless_another_sweep_may_own_it(
    tmp_path: Path,
) -> None:
    """SIGKILL can land between Optuna's ask and the worker's owner record: a young RUNNING
    trial with no owner. Waiting out the grace period would leave it counted as running
    elsewhere; `sweep run` re-queues it at once when no other sweep of the study can run,
    and leaves it alone while one may (here: one recorded on another machine)."""
    from sweep.search.status import PROCESS_PREFIX
    from sweep.search.study import counted_trials

    fast = ["run", "--epochs", "2", "--jobs", "1", "--pruner", "none"]
    run_cli(tmp_path, *fast, "--trials", "2")
    study = load_study(tmp_path)
    host = socket.gethostname()
    killed = {"host": host, "pid": dead_pid(), "proc_start": None, "started": "2026-12-02T00:00:00+00:00",
              "ended": None}
    study.set_user_attr(f"{PROCESS_PREFIX}{host}:{killed['pid']}", killed)
    orphan = study.ask().number  # no owner record: its worker died right after ask

    out = run_cli(tmp_path, *fast, "--trials", "3").stdout
    assert f"re-queued trials left running by a stopped sweep: [{orphan}]" in out, out
    study = load_study(tmp_path)
    assert counted_trials(study) == 3
    assert not [t.number for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    elsewhere = {**killed, "host": "another-machine", "pid": 1}
    study.set_user_attr(f"{PROCESS_PREFIX}another-machine:1", elsewhere)
    young = study.ask().number  # may be that machine's worker between ask and its owner record
    out = run_cli(tmp_path, *fast, "--trials", "4").stdout
    assert "re-queued" not in out, out
    assert "still running in another sweep process" in out, out
    assert load_study(tmp_path).trials[young].state == TrialState.RUNNING


def test_jobs_caps_the_trials_in_flight_on_a_dask_cluster(
    tmp_path: Path, postgres_db: str, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """joblib's Dask backend runs a task per cluster thread whatever n_jobs says: `--jobs 1`
    on this 2-worker cluster must still run one trial at a time, and 0 uses both workers."""
    from sweep.config.sweep_file import load_config
    from sweep.search.runner import _parallel_trials
    from sweep.search.study import open_study

    def spans(spool_dir: Path) -> list[tuple[float, float, int]]:
        states = [spool.read_state(p) for p in spool.spool_files(spool_dir)]
        return sorted((s.start["time"], s.end["time"], s.start["pid"]) for s in states)

    monkeypatch.chdir(tmp_path)
    for jobs in (1, 0):
        cfg = load_config(None, {"storage": postgres_db, "study": f"team-cap-{jobs}", "trials": 4, "epochs": 3})
        open_study(cfg, make_storage(cfg.storage, tmp_path / "unused.journal"))
        ctx = trial_context(cfg, Path(".sweep") / cfg.study_name)
        with on_dask_workers(dask_client, tmp_path / "cache", cwd=tmp_path):
            results = list(_parallel_trials(ctx, 4, jobs, 1, dask_client.scheduler.address))
        assert sorted(r["number"] for r in results) == [0, 1, 2, 3]
        runs = spans(tmp_path / ".sweep" / cfg.study_name / "spool")
        overlaps = sum(1 for (_, end, _), (start, _, _) in itertools.pairwise(runs) if start < end)
        if jobs == 1:
            assert overlaps == 0, runs
        else:
            assert len({pid for _, _, pid in runs}) == 2 and overlaps > 0, runs
