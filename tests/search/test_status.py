"""`sweep status` against optuna.load_study and the MLflow runs; the report's search-progress figure.

The study is made for real: a median-pruned digits sweep whose learning rate is
sometimes 1e30 (those trials diverge and fail), then a second `sweep run` of it
SIGTERM'd mid-trial (interrupted trials, failed and re-queued as WAITING;
enqueued trials that train, so that one is mid-training when the signal comes).
`sweep status` runs once while that second sweep is alive and once after.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from sweep.config.display import format_number
from sweep.search.study import retried_numbers
from sweep.tracking.store import ui_url
from sweep_helpers import load_study, mlflow_runs, run_cli, run_cli_interrupted, running_worker, sweep_env

MIXED = """
[sweep]
dataset = "digits"
pruner = "median"

[space]
keep_prob = {low = 0.2, high = 1.0, step = 0.05}
depth = 2
width = 512
learning_rate = [1e-3, 3e-4, 1e30]
normalization = "none"
weight_scale = 0.05
batch_size = 50
epochs = 10
lr_decay = 1.0
"""
COUNTS = re.compile(r"complete (\d+), pruned (\d+), failed (\d+), running (\d+), waiting (\d+)"
                    r"(?: \(\+ (\d+) failed and re-queued, not counted\))?")


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(workdir, `sweep status` output while the SIGTERM'd sweep was alive, that sweep's pid)."""
    workdir = tmp_path_factory.mktemp("status")
    cfg = workdir / "mixed.toml"
    cfg.write_text(MIXED)
    run_cli(workdir, "run", str(cfg), "--jobs", "1", "--trials", "14")
    # Diverging trials end at once: queue a few that train, so the SIGTERM finds one mid-training.
    study = load_study(workdir)
    for keep in (0.5, 0.6, 0.7, 0.8):
        study.enqueue_trial({"keep_prob": keep, "learning_rate": 3e-4})
    seen: dict[str, Any] = {}

    def status_then_sigterm(proc: subprocess.Popen, pid: int) -> None:
        seen["status"] = run_cli(workdir, "status").stdout
        seen["pid"] = proc.pid
        running_worker(workdir / ".sweep" / "dropout-digits" / "spool")  # again: status took a while
        proc.send_signal(signal.SIGTERM)

    # No pruning in this run: the queued trials train all their epochs, so the SIGTERM finds one going.
    code, _, out = run_cli_interrupted(workdir, ["run", str(cfg), "--jobs", "1", "--trials", "60", "--pruner", "none"],
                                       "dropout-digits", status_then_sigterm)
    assert code == 130, out
    return workdir, seen["status"], str(seen["pid"])


def _status_counts(text: str) -> dict[str, int]:
    match = COUNTS.search(text)
    assert match, text
    keys = ("complete", "pruned", "failed", "running", "waiting", "requeued")
    return {k: int(v or 0) for k, v in zip(keys, match.groups(), strict=True)}


def _study_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials()
    retried = retried_numbers(trials)
    state = lambda s: sum(1 for t in trials if t.state == s)  # noqa: E731
    return {"complete": state(TrialState.COMPLETE), "pruned": state(TrialState.PRUNED),
            "failed": sum(1 for t in trials if t.state == TrialState.FAIL and t.number not in retried),
            "running": state(TrialState.RUNNING), "waiting": state(TrialState.WAITING),
            "requeued": sum(1 for t in trials if t.state == TrialState.FAIL and t.number in retried)}


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_status_agrees_with_the_study_and_the_mlflow_runs(mixed_study: tuple[Path, str, str]) -> None:
    workdir, _, _ = mixed_study
    before = _tree(workdir)
    out = run_cli(workdir, "status").stdout
    print(out)
    assert _tree(workdir) == before  # read-only: not a byte written, no file made

    study = load_study(workdir)
    counts = _study_counts(study)
    assert _status_counts(out) == counts
    # The fixture made every kind of trial for real.
    assert all(counts[k] > 0 for k in ("complete", "pruned", "failed", "requeued", "waiting")), counts
    counted = counts["complete"] + counts["pruned"] + counts["failed"]
    assert f"study 'dropout-digits': {counted}/60 trials counted (target 60)" in out
    best = study.best_trial
    assert f"best: trial {best.number}, val_acc {best.value:.4f}" in out
    assert f"test_acc {study.user_attrs['best_test_acc']['acc']:.4f}" in out
    # depth 2, width 512 and normalization are fixed in MIXED: not trial params.
    # Numbers as a person writes them: keep to its step, the learning rate (log-scale) to 4 significant digits.
    lr = format_number(best.params["learning_rate"], log=True)
    assert f"keep={best.params['keep_prob']:g} hidden=512-512 norm=none lr={lr}" in out
    last = max(t.datetime_complete for t in study.get_trials() if t.datetime_complete)
    assert f"last trial ended: {last:%Y-%m-%d %H:%M:%S}" in out
    assert "sweep process: none running" in out  # the SIGTERM'd sweep ended and said so

    # MLflow: one run per trial that started, in the matching status.
    _, parents, children = mlflow_runs(workdir)
    status_of = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    trials = study.get_trials()
    assert sorted(status_of) == [t.number for t in trials if t.state != TrialState.WAITING]
    retried = retried_numbers(trials)
    runs = [status_of[t.number] for t in trials if t.state != TrialState.WAITING]
    # Pruned trials end FINISHED with their state tagged (Optuna's MLflow convention).
    assert sum(r.info.status == "FINISHED" for r in runs) == counts["complete"] + counts["pruned"]
    assert sum(r.data.tags.get("state") == "COMPLETE" for r in runs) == counts["complete"]
    assert sum(r.data.tags.get("state") == "PRUNED" for r in runs) == counts["pruned"]
    assert sum(r.info.status == "FAILED" for r in runs) == counts["failed"]
    assert sum(r.data.tags.get("failure_reason") == "interrupted" for r in runs) == counts["requeued"]
    assert {status_of[n].info.status for n in retried} == {"KILLED"}
    assert float(status_of[best.number].data.tags["summary/best_val_acc"]) == pytest.approx(best.value, abs=5e-5)
    experiment_id = parents["study"].info.experiment_id
    assert ui_url("127.0.0.1", 5000, experiment_id) in out  # the classic runs table (workflowType=machine_learning)
    assert f"`sweep ui --study dropout-digits`; store sqlite:///{workdir / 'mlflow.db'}" in out


def test_status_while_a_sweep_runs_shows_where_it_runs(mixed_study: tuple[Path, str, str]) -> None:
    _, during, pid = mixed_study
    print(during)
    assert f"sweep process: alive on host {socket.gethostname()}, pid {pid}, started " in during
    assert "(target 60)" in during
    assert _status_counts(during)["running"] in (0, 1)  # one worker: at most its trial


def test_status_of_one_study_and_of_an_unknown_one(mixed_study: tuple[Path, str, str]) -> None:
    workdir, _, _ = mixed_study
    one = run_cli(workdir, "status", "--study", "dropout-digits").stdout
    assert _status_counts(one) == _study_counts(load_study(workdir))
    bad = run_cli(workdir, "status", "--study", "nope", check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "sweep status: error: --study: no study 'nope' in this storage (studies: 'dropout-digits')"


def test_status_imports_no_mlflow_when_the_storage_answers(mixed_study: tuple[Path, str, str]) -> None:
    workdir, _, _ = mixed_study
    code = ("import sys; from sweep.cli import main; code = main(['status']); "
            "print('MLFLOW' if 'mlflow' in sys.modules else 'NO-MLFLOW', code)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=sweep_env(workdir),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO-MLFLOW 0"), proc.stdout


def test_status_in_a_folder_without_a_sweep_creates_nothing(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "status", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("sweep status: error: --storage: no Optuna journal at ")
    proc = run_cli(tmp_path, "status", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", check=False)
    assert proc.returncode == 2 and "no SQLite database at" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_status_on_postgresql_agrees_with_the_study_and_creates_no_tables(tmp_path: Path, postgres_db: str) -> None:
    import sqlalchemy

    # An empty database: refused, and still empty afterwards.
    empty = run_cli(tmp_path, "status", "--storage", postgres_db, check=False)
    assert empty.returncode == 2 and "no Optuna studies readable at" in empty.stderr, empty.stderr
    assert "postgres:postgres@" not in empty.stderr  # the password is masked
    engine = sqlalchemy.create_engine(postgres_db)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()

    cfg = tmp_path / "mixed.toml"
    cfg.write_text(MIXED)
    run_cli(tmp_path, "run", str(cfg), "--storage", postgres_db, "--jobs", "1", "--trials", "4", "--epochs", "2")
    out = run_cli(tmp_path, "status", "--storage", postgres_db).stdout
    print(out)
    study = optuna.load_study(study_name="dropout-digits", storage=postgres_db)
    assert _status_counts(out) == _study_counts(study)
    assert f"best: trial {study.best_trial.number}, val_acc {study.best_value:.4f}" in out
    assert "4/4 trials counted (target 4)" in out and "sweep process: none running" in out
    assert "storage: postgresql+psycopg2://postgres:***@127.0.0.1:" in out


def test_report_draws_the_search_progress_of_the_study(mixed_study: tuple[Path, str, str], tmp_path: Path) -> None:
    from sweep.reporting.figures import history_figure
    from sweep.reporting.report import search_history

    workdir, _, _ = mixed_study
    study = load_study(workdir)
    trials = study.get_trials()
    points = search_history(trials)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sorted(p.number for p in points) == sorted(t.number for t in finished)
    t0 = min(t.datetime_start for t in trials if t.datetime_start)
    for p in points:
        t = trials[p.number]
        assert p.state == t.state.name
        assert p.value == (t.value if t.state == TrialState.COMPLETE else max(t.intermediate_values.values()))
        assert p.minutes == pytest.approx((t.datetime_complete - t0).total_seconds() / 60)

    fig = history_figure(points)
    wall, by_number = fig.axes[:2]
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    for ax, x_of in ((wall, lambda t: (t.datetime_complete - t0).total_seconds() / 60), (by_number, lambda t: t.number)):
        dots = {c.get_label(): c.get_offsets() for c in ax.collections}
        np.testing.assert_allclose(sorted(map(tuple, dots["complete"])),
                                   sorted((x_of(t), t.value * 100) for t in complete))
        np.testing.assert_allclose(sorted(map(tuple, dots["pruned"])),
                                   sorted((x_of(t), max(t.intermediate_values.values()) * 100) for t in pruned))
        [line] = [ln for ln in ax.lines if ln.get_label() == "best so far"]
        in_order = sorted(complete, key=lambda t: (x_of(t), t.number))
        np.testing.assert_allclose(line.get_xdata(), [x_of(t) for t in in_order])
        np.testing.assert_allclose(line.get_ydata(), np.maximum.accumulate([t.value * 100 for t in in_order]))
    assert line.get_ydata()[-1] == pytest.approx(study.best_value * 100)

    # The report's sweep section shows the figure (written from the same study).
    out = tmp_path / "rep"
    run_cli(workdir, "report", str(workdir / "mixed.toml"), "--out", str(out))
    assert "### Search progress" in (out / "report.md").read_text()
    assert (out / "figures" / "sweep_history.png").stat().st_size > 5000
