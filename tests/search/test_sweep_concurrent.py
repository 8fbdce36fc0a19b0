"""Two `sweep run` processes on one study: the target is the study's, not each process's.

Each process computes its missing trials at its start; the workers' check
against the storage (sweep.search.study.check_target, in run_one_trial) is what stops
the study at the target. Real parts: journal file, loky workers, MLflow SQLite.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from sweep.search.study import WORKER_ATTR, check_target, counted_trials, make_storage, requeue, spool_path
from sweep.tracking import spool
from sweep_helpers import (
    SLOW_SPACE,
    SWEEP,
    dead_pid,
    load_study,
    mlflow_runs,
    run_cli,
    running_worker,
    sweep_env,
    trial_context,
    write_config,
)

TARGET = 6
JOBS = 1  # per process
WORKERS = 2 * JOBS  # workers that may start a trial at the same instant, across both processes
TRIAL_LINE = re.compile(r"^\[\s*\d+/\d+\] trial (\d+) ", re.M)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two `sweep run --trials TARGET` started together in one folder (one journal, one MLflow store)."""
    workdir = tmp_path_factory.mktemp("two-runs")
    args = ["run", "--jobs", str(JOBS), "--trials", str(TARGET), "--epochs", "2"]
    procs = [
        subprocess.Popen([*SWEEP, *args], cwd=workdir, env=sweep_env(workdir),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    try:
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    return workdir, outs


def test_two_sweep_runs_on_one_study_stop_at_the_target(two_runs: tuple[Path, list[str]]) -> None:
    workdir, outs = two_runs
    submitted = [int(re.search(r"running (\d+) more", out).group(1)) for out in outs]  # type: ignore[union-attr]
    # Both started before the study was nearly done: without the workers' check
    # the study would end with sum(submitted) trials, past the race bound.
    assert sum(submitted) > TARGET + WORKERS - 1, outs

    trials = load_study(workdir).get_trials()
    # Two workers checking at the same instant may both start: at most WORKERS - 1 over.
    assert TARGET <= len(trials) <= TARGET + WORKERS - 1, outs
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    assert counted_trials(load_study(workdir)) == len(trials)

    # Every trial is reported once, by the process that ran it; a skipped task claims none.
    reported = sorted(int(n) for out in outs for n in TRIAL_LINE.findall(out))
    assert reported == [t.number for t in trials], outs
    skipped = sum(out.count("skipped a task: ") for out in outs)
    assert skipped >= sum(submitted) - len(trials) > 0, outs
    assert all("best trial" in out for out in outs), outs
    assert not list((workdir / ".sweep" / "dropout-digits" / "spool").glob("trial--*"))

    # MLflow: every trial has a child run under the one parent, and a skipped task has none.
    _, parents, children = mlflow_runs(workdir)
    assert list(parents) == ["study"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents["study"].info.run_id}
    assert {int(r.data.tags["optuna.trial_number"]) for r in children} == {t.number for t in trials}
    assert not [r for r in children if r.info.status == "RUNNING"]


def test_progress_counts_the_whole_study_not_one_process(two_runs: tuple[Path, list[str]]) -> None:
    workdir, outs = two_runs
    counts = [[int(n) for n in re.findall(r"^\[\s*(\d+)/\d+\] trial ", out, re.M)] for out in outs]
    assert all(counts), outs  # both processes trained trials
    # The last trial to end (in either process) sees the study at its final count; a
    # process-local count would stop at that process's share.
    assert max(max(c) for c in counts) == counted_trials(load_study(workdir)), outs
    assert all(c == sorted(c) for c in counts), counts


def test_two_sweep_runs_in_one_folder_log_one_mlflow_run_per_trial(two_runs: tuple[Path, list[str]]) -> None:
    workdir, _ = two_runs
    trials = load_study(workdir).get_trials()
    client, _, children = mlflow_runs(workdir)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [t.number for t in trials]
    for run in children:  # and each epoch once
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, len(steps) + 1))
    # Each run's id is recorded on its trial, by whichever process's tracker created the run.
    study = load_study(workdir)
    run_of = {int(r.data.tags["optuna.trial_number"]): r.info.run_id for r in children}
    links = {t.number: t.user_attrs.get("mlflow_run_id") or study.user_attrs.get(f"mlflow_run_id:{t.number}")
             for t in trials}
    assert links == run_of


# -- the worker-side check -------------------------------------------------------

X = {"x": FloatDistribution(0.0, 1.0)}


def _finished(study: optuna.Study, state: TrialState) -> None:
    study.add_trial(optuna.create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                        params={"x": 0.5}, distributions=X))


def test_check_target_counts_running_trials_and_not_requeued_failures(tmp_path: Path) -> None:
    study = optuna.create_study(storage=make_storage(None, tmp_path / "optuna.journal"), direction="maximize")
    _finished(study, TrialState.COMPLETE)
    _finished(study, TrialState.FAIL)  # failed and not re-queued (say, diverged): counts
    running = study.ask(X)
    check = check_target(study, 3)
    assert (check.counted, check.running, check.waiting) == (2, 1, 0)
    assert not check.start  # 2 counted + 1 running reach 3
    assert check_target(study, 4).start

    # Its worker dies: failed and re-queued. Neither attempt counts until the retry ends,
    # and a WAITING trial is run even where the count says the target is reached.
    study._storage.set_trial_state_values(running._trial_id, TrialState.FAIL)
    requeue(study, study._storage.get_trial(running._trial_id))
    check = check_target(study, 3)
    assert (check.counted, check.running, check.waiting) == (2, 0, 1)
    assert check.start and check_target(study, 2).start


def test_a_task_starts_no_trial_at_the_target_but_runs_a_dead_workers_requeued_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweep.config.sweep_file import load_config
    from sweep.search.progress import Progress
    from sweep.search.study import open_study
    from sweep.search.worker import run_one_trial

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(None, {"study": "target", "trials": 2, "epochs": 1})
    ctx = trial_context(cfg, tmp_path, target=True)
    study = open_study(cfg, make_storage(None, ctx.journal_path))
    done = study.ask()
    cfg.space.suggest(done)
    study.tell(done, 0.5)
    other = study.ask()  # a live worker's trial, in another sweep process
    cfg.space.suggest(other)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": spool.process_start_time(os.getpid())}
    study._storage.set_trial_system_attr(other._trial_id, WORKER_ATTR, me)

    res = run_one_trial(ctx)
    assert res["skipped"] and res["state"] == "SKIPPED" and res["number"] == -1, res
    assert (res["counted"], res["running"]) == (1, 1)
    assert len(study.get_trials()) == 2 and not list(ctx.spool_dir.glob("*.jsonl"))
    out = io.StringIO()
    progress = Progress(cfg.trials, 1, 1, cfg.space, out)
    progress.update(res)
    assert progress.skipped == 1 and progress.done() == 1
    assert out.getvalue().startswith("skipped a task: the study already has 2/2 trials")
    assert not TRIAL_LINE.search(out.getvalue())  # no "[ n/N] trial k ..." line for it

    # That worker dies: this task reaps its trial and trains the re-queued params.
    study._storage.set_trial_system_attr(other._trial_id, WORKER_ATTR, {**me, "pid": dead_pid()})
    res = run_one_trial(ctx)
    assert not res.get("skipped") and res["state"] in ("COMPLETE", "PRUNED"), res
    trials = study.get_trials()
    assert trials[other.number].state == TrialState.FAIL
    assert trials[res["number"]].system_attrs["failed_trial"] == other.number
    assert trials[res["number"]].params == trials[other.number].params
    assert counted_trials(study) == 2 and len(trials) == 3
    assert spool.read_state(spool_path(ctx.spool_dir, res["number"])).end is not None


def test_removing_beaten_weights_keeps_a_best_saved_by_another_process(tmp_path: Path) -> None:
    """A process that read the best before another process's newer best finished must not delete it."""
    from sweep.search.finish import remove_beaten_weights

    study = optuna.create_study(storage=make_storage(None, tmp_path / "optuna.journal"), direction="maximize")
    dist = {"x": FloatDistribution(0, 1)}
    for value in (0.5, 0.7, 0.6):  # trials 0, 1, 2
        study.add_trial(optuna.trial.create_trial(params={"x": value}, distributions=dist, value=value))
    best = study.best_trial  # trial 1, as this process read it
    weights = tmp_path / "weights"
    weights.mkdir()
    for number in (0, 1, 2, 3, 4):
        (weights / f"trial-{number:04d}.npz").write_bytes(b"w")
    # After that read: trial 3 finished with a better value in another process,
    # and trial 4 is still running there: neither file may go.
    study.add_trial(optuna.trial.create_trial(params={"x": 0.9}, distributions=dist, value=0.9))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions=dist, state=TrialState.RUNNING))

    removed = remove_beaten_weights(study, best, weights)

    assert sorted(p.name for p in removed) == ["trial-0000.npz", "trial-0002.npz"]
    assert sorted(p.name for p in weights.iterdir()) == ["trial-0001.npz", "trial-0003.npz", "trial-0004.npz"]


def test_a_sweep_that_ends_first_leaves_the_shared_parent_run_to_the_other(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "slow.toml", SLOW_SPACE, sweep='pruner = "none"')
    long_run = subprocess.Popen([*SWEEP, "run", str(cfg), "--jobs", "1", "--trials", "6"], cwd=tmp_path,
                                env=sweep_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        running_worker(tmp_path / ".sweep" / "dropout-digits" / "spool")
        # The study's target is already met counting the other's running trial: this one ends at once.
        short = run_cli(tmp_path, "run", str(cfg), "--jobs", "1", "--trials", "1").stdout
        assert "1 trial(s) of this study still run in another sweep process" in short, short
        _, parents, _ = mlflow_runs(tmp_path)
        assert counted_trials(load_study(tmp_path)) < 6, "the long sweep ended too soon for this test"
        assert parents["study"].info.status == "RUNNING"  # not FINISHED while the other still trains
        out = long_run.communicate(timeout=300)[0]
    finally:
        long_run.kill()
    assert long_run.returncode == 0, out
    _, parents, children = mlflow_runs(tmp_path)
    assert parents["study"].info.status == "FINISHED"
    assert len(children) == 6 and {r.info.status for r in children} == {"FINISHED"}
