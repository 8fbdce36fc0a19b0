"""`sweep run` end to end with the real parts: loky processes, journal storage, MLflow SQLite store."""

from __future__ import annotations

import os
import re
import signal
import warnings
from decimal import Decimal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from sweep.tracking.store import CURVE_METRICS, PLOTTED_SUMMARIES, run_state, summary_metrics
from sweep_helpers import SLOW_SPACE, load_study, mlflow_runs, run_cli, run_cli_interrupted, write_config


def _assert_mirrors(workdir: Path, expected_trials: int) -> None:
    """Optuna and MLflow agree: one child run per trial, same params, curves per epoch."""
    study = load_study(workdir)
    trials = study.get_trials()
    client, parents, children = mlflow_runs(workdir)
    assert list(parents) == ["study"]
    parent_id = parents["study"].info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in children)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == [t.number for t in trials] == list(range(expected_trials))
    for t in trials:
        run = by_number[t.number]
        assert run.info.run_name == f"trial-{t.number:04d}"
        # Every Optuna param is an MLflow param with the same value, written as a person would:
        # stepped keep_prob on its grid (0.85, not 0.8500000000000001), log-scale to 4 digits.
        # The hidden sizes once, as hidden_dims (no hidden_1..k: MLflow's Compare would plot both).
        hidden = [v for k, v in sorted(t.params.items()) if k.startswith("hidden_")]
        assert run.data.params["hidden_dims"] == "-".join(map(str, hidden)) and "hidden_1" not in run.data.params
        for key, value in t.params.items():
            if key.startswith("hidden_"):
                continue
            text = run.data.params[key]
            if isinstance(value, float):
                assert float(text) == pytest.approx(value, rel=5e-4), key
                assert len(text.replace("-", "").replace(".", "").split("e")[0].strip("0")) <= 4, (key, text)
            else:
                assert text == str(value), key
        assert (Decimal(run.data.params["keep_prob"]) - Decimal("0.2")) % Decimal("0.05") == 0
        link = t.user_attrs.get("mlflow_run_id") or study.user_attrs.get(f"mlflow_run_id:{t.number}")
        assert link == run.info.run_id
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == sorted(t.intermediate_values) == list(range(1, len(steps) + 1))
        for key in ("train_acc", "train_loss", "val_loss", "gap", "lr", "epoch_seconds"):
            assert len(client.get_metric_history(run.info.run_id, key)) == len(steps), key
        # The curves, and the few one-shot figures charts plot (summary/..., at step 0); every
        # one-shot figure is a summary/ tag too.
        assert set(run.data.metrics) <= set(CURVE_METRICS) | {f"summary/{k}" for k in PLOTTED_SUMMARIES}
        if t.state != TrialState.FAIL:
            assert summary_metrics(run)["epochs_trained"] == len(steps)
            assert float(run.data.tags["summary/best_val_acc"]) == pytest.approx(t.user_attrs["summary"]["best_val_acc"], abs=5e-5)
            assert run.data.metrics["summary/best_val_acc"] == float(run.data.tags["summary/best_val_acc"])
        # Pruning is the search working: a FINISHED run, told apart by its state tag (Optuna's convention).
        expected_status = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED", TrialState.FAIL: "FAILED"}
        assert run.info.status == expected_status[t.state]
        assert run.data.tags["state"] == t.state.name and run_state(run) == t.state.name
        if t.state == TrialState.PRUNED:
            assert run.data.tags["pruned_at_epoch"] == str(len(steps))
            assert len(steps) < int(run.data.params["epochs"])
        elif t.state == TrialState.COMPLETE:
            assert len(steps) == int(run.data.params["epochs"])
            assert t.value == pytest.approx(max(m.value for m in client.get_metric_history(run.info.run_id, "val_acc")), abs=5e-5)


def test_sweep_runs_target_trials_and_resumes_to_a_new_target(tmp_path: Path) -> None:
    first = run_cli(tmp_path, "run", "--jobs", "2", "--trials", "8", "--epochs", "5")
    assert "best trial" in first.stdout and "test_acc" in first.stdout
    # Every address printed opens MLflow's classic view (a bare one opens its GenAI view),
    # run pages included: the study's parent run and the best trial's run.
    urls = re.findall(r"https?://\S+", first.stdout)
    assert len(urls) == 3 and all("?workflowType=machine_learning" in u for u in urls), urls
    assert urls[0].endswith("&viewStateShareKey=dropout-sweep") and urls[1].endswith("?workflowType=machine_learning")
    _client, parents, children = mlflow_runs(tmp_path)
    exp = parents["study"].info.experiment_id
    best = next(r for r in children if r.data.tags["optuna.trial_number"] == str(load_study(tmp_path).best_trial.number))
    assert f"/#/experiments/{exp}/runs/{parents['study'].info.run_id}?workflowType" in urls[1]
    assert f"/#/experiments/{exp}/runs/{best.info.run_id}?workflowType" in urls[2]
    _assert_mirrors(tmp_path, 8)
    # Every worker's end mark was released by the parent (sweep.tracking.backpressure): none is left.
    assert not list(tmp_path.glob(".sweep/*/spool/*.ended"))

    second = run_cli(tmp_path, "run", "--jobs", "2", "--trials", "12", "--epochs", "5")
    assert "8/12 trials done, running 4 more" in second.stdout
    _assert_mirrors(tmp_path, 12)
    # The parent run is found again, not duplicated, and carries the best trial and its test accuracy.
    _, parents, _ = mlflow_runs(tmp_path)
    assert parents["study"].info.status == "FINISHED"
    study = load_study(tmp_path)
    assert parents["study"].data.tags["best_trial"] == str(study.best_trial.number)
    assert float(parents["study"].data.tags["summary/best_test_acc"]) == pytest.approx(study.user_attrs["best_test_acc"]["acc"], abs=5e-5)
    assert f"test_acc {study.user_attrs['best_test_acc']['acc']:.4f}" in second.stdout

    third = run_cli(tmp_path, "run", "--jobs", "2", "--trials", "12", "--epochs", "5")
    assert "running 0 more" in third.stdout
    assert len(load_study(tmp_path).trials) == 12


def test_same_trial_gives_the_same_curve_with_one_or_two_jobs(tmp_path: Path) -> None:
    curves = {}
    for jobs in ("1", "2"):
        work = tmp_path / f"jobs{jobs}"
        work.mkdir()
        run_cli(work, "run", "--jobs", jobs, "--trials", "3", "--epochs", "4", "--pruner", "none")
        curves[jobs] = {t.number: (t.params, t.intermediate_values) for t in load_study(work).trials}
    # Start-up trials are drawn from (study seed, trial number): same params, so same curves.
    for number in range(3):
        params1, curve1 = curves["1"][number]
        params2, curve2 = curves["2"][number]
        assert params1 == params2
        assert curve1 == curve2


def test_diverging_trial_fails_with_reason_and_the_sweep_goes_on(tmp_path: Path) -> None:
    space = SLOW_SPACE.replace('learning_rate = {low = 1e-3, high = 3e-3, log = true}',
                              "learning_rate = {low = 1e30, high = 1e31, log = true}")
    space = space.replace('normalization = "batchnorm"', 'normalization = "none"').replace("epochs = 12", "epochs = 3")
    # Adam moves every weight by ~lr per step: 1e30 overflows float32 scores on the next step.
    cfg = write_config(tmp_path / "diverge.toml", space)
    proc = run_cli(tmp_path, "run", str(cfg), "--jobs", "2", "--trials", "3")
    trials = load_study(tmp_path).trials
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs["failure_reason"].startswith("diverged at epoch") for t in trials)
    _, _, children = mlflow_runs(tmp_path)
    assert {r.info.status for r in children} == {"FAILED"}
    assert all(r.data.tags["failure_reason"].startswith("diverged at epoch") for r in children)
    assert "no completed trial" in proc.stdout


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_killed_worker_trial_is_failed_and_its_params_trained_again(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "slow.toml", SLOW_SPACE, sweep='pruner = "none"')
    code, number, out = run_cli_interrupted(
        tmp_path, ["run", str(cfg), "--jobs", "2", "--trials", "4"], "dropout-digits",
        lambda proc, pid: os.kill(pid, signal.SIGKILL),
    )
    assert code == 0, out
    assert "worker process died (exit codes {SIGKILL(-9)})" in out, out  # loky names how it died
    study = load_study(tmp_path)
    trials = study.get_trials()
    killed = trials[number]
    assert killed.state == TrialState.FAIL and "died" in killed.user_attrs["failure_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert retries and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE
    # The target counts trials that ended, not the ones re-queued after a dead worker.
    counted = [t for t in trials if t.state.is_finished() and not any(
        t.number in u.system_attrs.get("retry_history", []) for u in trials)]
    assert len(counted) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    _, parents, children = mlflow_runs(tmp_path)
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert parents["study"].info.status == "FINISHED"
    killed_run = next(r for r in children if r.data.tags["optuna.trial_number"] == str(number))
    # A dead worker is a failure (FAILED), not an interrupt (KILLED).
    assert killed_run.info.status == "FAILED" and killed_run.data.tags["state"] == "FAIL"
    assert "died" in killed_run.data.tags["failure_reason"]


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_sigterm_stops_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "slow.toml", SLOW_SPACE, sweep='pruner = "none"')
    code, _, out = run_cli_interrupted(
        tmp_path, ["run", str(cfg), "--jobs", "2", "--trials", "4"], "dropout-digits",
        lambda proc, pid: proc.send_signal(signal.SIGTERM), timeout=120,
    )
    print(out)  # whole, in the failure report (assertion messages get cut)
    assert code == 130, out
    assert "rerun the same command to resume" in out
    study = load_study(tmp_path)
    states = [(t.number, t.state.name, t.user_attrs.get("failure_reason")) for t in study.trials]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING], (states, out)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    interrupted = [t for t in failed if t.user_attrs["failure_reason"] == "interrupted"]
    # A worker that died on its own before the signal is reported as such, exit code
    # included, and retried: allowed, but said out loud. A trial whose worker the stop
    # killed is "interrupted" even if a sibling worker saw it dead first (a CI failure:
    # test_a_loky_worker_leaves_a_dead_siblings_trial_to_their_sweep_process).
    died = [t for t in failed if t.user_attrs["failure_reason"] == "worker process died"]
    if died:
        assert "a worker process died (exit codes" in out, (states, out)
        warnings.warn(f"a worker died before the SIGTERM: {states}\n{out}", stacklevel=1)
    assert interrupted and len(interrupted) + len(died) == len(failed), (states, out)
    _, parents, children = mlflow_runs(tmp_path)
    assert parents["study"].info.status == "KILLED"
    assert not [r for r in children if r.info.status == "RUNNING"]
    # Only the trials the interrupt cut off are KILLED runs.
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert {by_number[t.number].info.status for t in interrupted} == {"KILLED"}, states
    assert {by_number[t.number].info.status for t in died} <= {"FAILED"}, states

    run_cli(tmp_path, "run", str(cfg), "--jobs", "2", "--trials", "4")
    study = load_study(tmp_path)
    for t in interrupted:  # each interrupted trial's params were trained again, as a fresh attempt
        retry = next(u for u in study.trials if u.system_attrs.get("failed_trial") == t.number)
        # SIGTERM can catch a trial between two suggests: what it had drawn is re-queued
        # as is, the rest is drawn by the retry (here fixed values of the space).
        assert retry.state == TrialState.COMPLETE and {k: retry.params[k] for k in t.params} == t.params
        assert "failure_reason" not in retry.user_attrs
    assert not [t for t in study.trials if not t.state.is_finished()]
    _, parents, _ = mlflow_runs(tmp_path)
    assert parents["study"].info.status == "FINISHED"


def test_bad_config_key_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "bad.toml", "keep_prop = 0.5")
    proc = run_cli(tmp_path, "run", str(cfg), check=False)
    assert proc.returncode == 2
    assert "keep_prop" in proc.stderr and "keep_prob" in proc.stderr
    assert not (tmp_path / "optuna.journal").exists()  # nothing started
