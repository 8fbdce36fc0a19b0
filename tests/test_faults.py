"""Fault suite (`pytest -m faults`): every fault against the real part, with what the user sees.

Real parts only: `mlflow server` processes SIGKILLed and restarted on the same
port and store, the installed PostgreSQL stopped and started, loky workers, a
tmpfs mounted small enough to fill, journal files cut mid-record. The
figures these tests measure (outage detection, catch-up time, events
buffered) are printed; docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from services import ServerProcess
from sweep.search.study import counted_trials
from sweep_helpers import (
    SLOW_SPACE,
    SWEEP,
    load_study,
    mlflow_runs,
    run_cli,
    running_worker,
    sweep_env,
    write_config,
)

pytestmark = pytest.mark.faults

STUDY = "dropout-digits"
# A short digits sweep: 6 trials of 3 epochs on one worker, no pruning (every run has 3 points).
FAST = ["--trials", "6", "--epochs", "3", "--jobs", "1", "--pruner", "none"]


class Sweep:
    """`sweep ARGS` in the background, its output lines time-stamped as they come."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        full = sweep_env(workdir)
        full.update(env or {})
        # Its own process group: killing the group kills the sweep and its loky workers, as an OOM kill would.
        self.proc = subprocess.Popen([*SWEEP, *args], cwd=workdir, env=full, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait(self, timeout: float = 300) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        self._reader.join(10)
        return code, self.output

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def when(self, text: str) -> float | None:
        return next((t for t, line in self.lines if text in line), None)


def _wait_for_created_run(spool_dir: Path, timeout: float = 120, pattern: str = "trial-*.state") -> Path:
    """The side file of the first run MLflow has (it holds a run id); `spool_dir` may be a glob."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for side in sorted(Path(spool_dir.anchor).glob(str(spool_dir.relative_to(spool_dir.anchor) / pattern))):
            try:
                if json.loads(side.read_text()).get("run_id"):
                    return side
            except ValueError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no MLflow run was created from {spool_dir} in time")


def _sigkill(server: ServerProcess) -> None:
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    server.stop()  # forget the dead process; start() relaunches the same command on the same port


def _assert_all_in_mlflow(workdir: Path, url: str, trials: int) -> None:
    """Every trial once in MLflow, every epoch point once, nothing RUNNING, parent FINISHED."""
    study = load_study(workdir)
    numbers = sorted(t.number for t in study.trials)
    assert counted_trials(study) == trials
    client, parents, children = mlflow_runs(None, tracking_uri=url)
    assert list(parents) == ["study"] and parents["study"].info.status == "FINISHED"
    assert "summary/best_test_acc" in parents["study"].data.tags  # the parent's one-shot figure (a tag)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == numbers  # once each
    for run in children:
        assert run.info.status != "RUNNING", run.info.run_name
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == [1, 2, 3], (run.info.run_name, steps)


# -- the tracking server ---------------------------------------------------------


def test_mlflow_server_killed_mid_sweep_and_back_30_s_later(mlflow_server_factory: Any, tmp_path: Path) -> None:
    server = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}")
    sweep = Sweep(tmp_path, ["run", *FAST, "--tracking-uri", server.url], env={"SWEEP_TRACKING_WAIT": "180"})
    _wait_for_created_run(tmp_path / ".sweep" / STUDY / "spool")
    _sigkill(server)
    killed = time.monotonic()
    time.sleep(30)
    restarted = time.monotonic()
    server.start()
    code, out = sweep.wait()
    print(out)
    assert code == 0, out
    assert out.count("is unreachable since") == 1, out  # one line when it starts, none per retry
    assert out.count("is back after") == 1, out  # one when it has caught up
    assert "NOT ALL IN MLFLOW" not in out
    _assert_all_in_mlflow(tmp_path, server.url, 6)
    waiting = int(re.search(r"(\d+) event\(s\)( and [^;]*)? waiting", out).group(1))  # type: ignore[union-attr]
    down = re.search(r"is back after (\d+) s", out).group(1)  # type: ignore[union-attr]
    print(f"FIGURES outage: detected {sweep.when('is unreachable since') - killed:.1f} s after the SIGKILL; "
          f"{waiting} event(s) waiting then; caught up {sweep.when('is back after') - restarted:.1f} s after the "
          f"restart began (server start included); tracker reported {down} s down")


def test_mlflow_server_down_for_good_then_sweep_sync(mlflow_server_factory: Any, tmp_path: Path) -> None:
    server = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}")
    sweep = Sweep(tmp_path, ["run", *FAST, "--tracking-uri", server.url], env={"SWEEP_TRACKING_WAIT": "5"})
    spool_dir = tmp_path / ".sweep" / STUDY / "spool"
    first = _wait_for_created_run(spool_dir)
    _sigkill(server)
    killed = time.monotonic()
    code, out = sweep.wait()
    ended = time.monotonic()
    print(f"VERBATIM sweep output (server never came back):\n{out}")
    print(f"FIGURES down for good: the sweep ended {ended - killed:.1f} s after the SIGKILL (SWEEP_TRACKING_WAIT=5)")
    assert code == 3, out
    assert out.count("is unreachable since") == 1, out
    assert "waiting up to 5 s for MLflow" in out, out
    assert "NOT ALL IN MLFLOW" in out and str(spool_dir) in out, out
    assert f"sweep sync --study {STUDY} --tracking-uri {server.url}" in out, out
    assert "look at the curves" not in out, out  # nothing complete there to look at
    assert counted_trials(load_study(tmp_path)) == 6  # the training itself is done and kept

    # A side file lost after its run was created: sync must find that run, not make a second.
    first.unlink()
    server.start()
    synced = run_cli(tmp_path, "sync", "--tracking-uri", server.url)
    print(synced.stdout)
    assert re.search(r"created [1-9]\d* run\(s\), completed 6 run\(s\), sent \d+ event\(s\)", synced.stdout), synced.stdout
    _assert_all_in_mlflow(tmp_path, server.url, 6)

    again = run_cli(tmp_path, "sync", "--study", STUDY, "--tracking-uri", server.url)
    assert "nothing to do" in again.stdout and "created" not in again.stdout, again.stdout
    _assert_all_in_mlflow(tmp_path, server.url, 6)


def test_mlflow_server_killed_mid_ablation_and_back(mlflow_server_factory: Any, tmp_path: Path) -> None:
    """`sweep ablate` meets the same outage as `sweep run`: said once, trained on, caught up."""
    server = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}")
    run_cli(tmp_path, "run", "--trials", "2", "--epochs", "2", "--jobs", "1", "--tracking-uri", server.url)  # its best trial
    args = ["ablate", "--keep-probs", "1,0.5", "--sizes", "200", "--seeds", "3", "--epochs", "3", "--jobs", "1",
            "--tracking-uri", server.url, "--yes"]
    ablate = Sweep(tmp_path, args, env={"SWEEP_TRACKING_WAIT": "120"})
    _wait_for_created_run(tmp_path / ".sweep" / STUDY / "*" / "spool", pattern="cell-*.state")
    _sigkill(server)
    time.sleep(15)
    server.start()
    code, out = ablate.wait()
    print(out)
    assert code == 0, out
    assert out.count("is unreachable since") == 1 and out.count("is back after") == 1, out
    assert "NOT ALL IN MLFLOW" not in out and "Traceback" not in out
    client, parents, children = mlflow_runs(None, tracking_uri=server.url)
    (_key, parent), = ((k, p) for k, p in parents.items() if k.startswith("ablation:"))
    assert parent.info.status == "FINISHED"
    cells = [r for r in children if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    names = sorted(r.info.run_name for r in cells)
    assert len(names) == 6 == len(set(names)), names  # 2 keep_probs x 1 size x 3 seeds, each once
    for run in cells:
        assert run.info.status == "FINISHED", run.info.run_name
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2, 3]


def test_sweep_report_not_uploaded_to_a_full_artifact_store_then_again(
    mlflow_server_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's artifact folder is full: the report is written on disk, one line says it
    is not in MLflow and what to do, exit 3; the same command uploads it once there is room."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(artifacts)], check=True)
    try:
        server = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}", artifacts_destination=artifacts)
        run_cli(tmp_path, "run", *FAST, "--tracking-uri", server.url)
        filler = _fill(artifacts)
        monkeypatch.setenv("SWEEP_TRACKING_WAIT", "3")
        failed = run_cli(tmp_path, "report", "--tracking-uri", server.url, check=False)
        print(failed.stdout, failed.stderr)
        assert failed.returncode == 3, failed.stdout + failed.stderr
        assert "Traceback" not in failed.stdout + failed.stderr
        lines = [line for line in failed.stderr.splitlines() if line.startswith("sweep report:")]
        assert len(lines) == 1 and "not uploaded to MLflow at" in lines[0] and "tried for 3 s" in lines[0], failed.stderr
        assert "run `sweep report` again" in lines[0]
        report = tmp_path / "reports" / STUDY / "report.md"
        assert report.is_file() and "Report for `dropout-digits`" in report.read_text()

        filler.unlink()
        done = run_cli(tmp_path, "report", "--tracking-uri", server.url)
        assert "report written to" in done.stdout
        client, parents, _ = mlflow_runs(None, tracking_uri=server.url)
        uploaded = {a.path for a in client.list_artifacts(parents["study"].info.run_id, "report")}
        assert "report/report.md" in uploaded, uploaded
    finally:
        subprocess.run(["umount", "-l", str(artifacts)], check=False)


def test_mlflow_db_deleted_then_sweep_sync_and_the_next_sweep_send_everything_again(tmp_path: Path) -> None:
    """`rm mlflow.db` with .sweep/ kept (a fresh start of the tracking store): its side files
    say every run was sent, but not to this store. `sweep sync` sends them all again, the
    parent with its summary; the next sweep does the same and adds its own trials."""
    # This process keeps an SQLAlchemy engine per tracking URI, still on the deleted file
    # afterwards: each new mlflow.db is read through a URI spelled differently.
    def url(generation: int) -> str:
        return f"sqlite:///{tmp_path}/{'./' * generation}mlflow.db"

    run_cli(tmp_path, "run", *FAST)
    _assert_all_in_mlflow(tmp_path, url(0), 6)

    (tmp_path / "mlflow.db").unlink()
    synced = run_cli(tmp_path, "sync")
    print(synced.stdout, synced.stderr)
    assert "sending the 6 run(s)" in synced.stdout + synced.stderr
    assert re.search(r"created 6 run\(s\), completed 6 run\(s\)", synced.stdout), synced.stdout
    _assert_all_in_mlflow(tmp_path, url(1), 6)
    again = run_cli(tmp_path, "sync")
    assert "nothing to do" in again.stdout, again.stdout

    (tmp_path / "mlflow.db").unlink()
    more = run_cli(tmp_path, "run", *FAST[2:], "--trials", "8")
    print(more.stdout)
    assert "sending the 6 run(s)" in more.stdout, more.stdout
    _assert_all_in_mlflow(tmp_path, url(2), 8)


def test_sweep_run_sigkilled_mid_sweep_then_the_same_command(tmp_path: Path) -> None:
    """SIGKILL of `sweep run` and its workers (test_sweep_run covers a killed worker and SIGTERM)."""
    cfg = write_config(tmp_path / "slow.toml", SLOW_SPACE.replace("epochs = 12", "epochs = 6"), sweep='pruner = "none"')
    args = ["run", str(cfg), "--jobs", "2", "--trials", "4"]
    sweep = Sweep(tmp_path, args)
    number, _ = running_worker(tmp_path / ".sweep" / STUDY / "spool")
    os.killpg(sweep.proc.pid, signal.SIGKILL)
    code, _ = sweep.wait()
    assert code == -signal.SIGKILL
    assert load_study(tmp_path).trials[number].state == TrialState.RUNNING  # what a kill leaves behind

    out = run_cli(tmp_path, *args).stdout
    print(out)
    assert "re-queued trials left running by a stopped sweep" in out, out
    study = load_study(tmp_path)
    assert counted_trials(study) == 4
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = study.trials[number]
    assert killed.state == TrialState.FAIL and "found on resume" in killed.user_attrs["failure_reason"]
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    _, parents, children = mlflow_runs(tmp_path)
    numbers = [int(r.data.tags["optuna.trial_number"]) for r in children]
    assert sorted(numbers) == sorted(t.number for t in study.trials)  # one run per trial number, no duplicate
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert parents["study"].info.status == "FINISHED"
    # Found dead on resume: a failure (FAILED), not an interrupt the sweep saw (KILLED).
    killed_run = next(r for r in children if r.data.tags["optuna.trial_number"] == str(number))
    assert killed_run.info.status == "FAILED" and "found on resume" in killed_run.data.tags["failure_reason"]


# -- secrets -------------------------------------------------------------------------


def test_no_password_or_token_reaches_output_files_or_mlflow(
    mlflow_server_factory: Any, postgres_server: Any, tmp_path: Path
) -> None:
    password, token, env_token = (f"Pw{uuid.uuid4().hex[:10]}", f"Tk{uuid.uuid4().hex[:10]}", f"Env{uuid.uuid4().hex[:10]}")
    role, db = f"r{uuid.uuid4().hex[:8]}", f"d{uuid.uuid4().hex[:8]}"
    postgres_server.query(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    postgres_server.query(f'CREATE DATABASE "{db}" OWNER {role}')
    storage = f"postgresql+psycopg2://{role}:{password}@127.0.0.1:{postgres_server.port}/{db}"
    server = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}")
    uri = server.url.replace("http://", f"http://sweeper:{token}@")
    env = {"MLFLOW_TRACKING_TOKEN": env_token}
    flags = ["--storage", storage, "--tracking-uri", uri]
    outputs = []
    for args in (["run", "--trials", "2", "--epochs", "2", "--jobs", "1", *flags],
                 ["ablate", "--keep-probs", "1,0.5", "--sizes", "100", "--seeds", "1", "--epochs", "2", "--jobs", "1", *flags],
                 ["report", *flags], ["sync", "--tracking-uri", uri]):
        proc = subprocess.run([*SWEEP, *args], cwd=tmp_path, env={**sweep_env(tmp_path), **env},
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        outputs.append(proc.stdout + proc.stderr)
    # A bad-input error echoes the URL too.
    proc = subprocess.run([*SWEEP, "run", "--storage", storage.replace("postgresql+psycopg2", "postgresqll")],
                          cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and f"{role}:***@" in proc.stderr, proc.stderr
    outputs.append(proc.stderr)
    secrets = (password, token, env_token)
    for text in outputs:
        assert not [s for s in secrets if s in text], text
    for path in tmp_path.rglob("*"):  # spool, state, report, figures, the server's own store
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path
    _, parents, children = mlflow_runs(None, tracking_uri=server.url)
    assert parents["study"].data.params["storage"] == f"postgresql+psycopg2://{role}:***@127.0.0.1:{postgres_server.port}/{db}"
    for run in [*parents.values(), *children]:
        blob = json.dumps([run.info.run_name, run.data.params, run.data.tags])
        assert not [s for s in secrets if s in blob], blob


def test_an_old_parent_run_keeps_its_params_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """MLflow params are immutable: a re-run must not log a masked `storage` over an old value."""
    from mlflow.tracking import MlflowClient
    from optuna.study import StudyDirection

    from sweep.paths import STUDY_KEY_ATTR, STUDY_KEY_TAG
    from sweep.search.study import make_storage

    # The study exists (its parent run is the study's own: a new study of the name would get its own).
    storage = make_storage(None, tmp_path / "optuna.journal")
    storage.set_study_system_attr(storage.create_new_study([StudyDirection.MAXIMIZE], STUDY), STUDY_KEY_ATTR, "k1")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment(STUDY)
    old = client.create_run(exp, run_name=STUDY, tags={"sweep.parent_key": "study", STUDY_KEY_TAG: "k1"})
    client.log_param(old.info.run_id, "storage", "postgresql+psycopg2://u:old-plain@db/optuna")
    client.set_terminated(old.info.run_id, "FINISHED")
    run_cli(tmp_path, "run", "--trials", "1", "--epochs", "1", "--jobs", "1")
    _, parents, children = mlflow_runs(tmp_path)
    assert parents["study"].info.run_id == old.info.run_id and len(children) == 1
    assert parents["study"].data.params["storage"] == "postgresql+psycopg2://u:old-plain@db/optuna"  # not rewritten
    assert parents["study"].info.status == "FINISHED"


# -- the Optuna storage --------------------------------------------------------------


def test_postgres_restarted_mid_sweep(postgres_server: Any, postgres_db: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "slow.toml", SLOW_SPACE.replace("epochs = 12", "epochs = 6"), sweep='pruner = "none"')
    sweep = Sweep(tmp_path, ["run", str(cfg), "--jobs", "2", "--trials", "6", "--storage", postgres_db])
    running_worker(tmp_path / ".sweep" / STUDY / "spool")
    postgres_server.restart(down_seconds=5)
    code, out = sweep.wait(timeout=400)
    print(out)
    assert code == 0, out
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=postgres_db)
    trials = study.get_trials()
    assert counted_trials(study) == 6, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, out  # the restart cut at least one trial in flight
    for t in failed:
        assert "storage" in t.user_attrs.get("failure_reason", "") or "heartbeat" in t.user_attrs.get(
            "failure_reason", ""), t.user_attrs
        retry = [u for u in trials if u.system_attrs.get("failed_trial") == t.number]
        # Cut between two suggests: what it had drawn is re-queued as is, the retry draws the rest.
        assert retry and retry[0].state == TrialState.COMPLETE
        assert {k: retry[0].params[k] for k in t.params} == t.params
    _, parents, children = mlflow_runs(tmp_path)
    assert not [r for r in children if r.info.status == "RUNNING"]
    assert parents["study"].info.status == "FINISHED"
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == sorted(t.number for t in trials)
    failed_runs = [r for r in children if r.info.status == "FAILED"]
    assert failed_runs and all("storage" in r.data.tags.get("failure_reason", "") for r in failed_runs)


def test_a_worker_whose_first_task_meets_a_restarting_database_waits_for_it(
    postgres_server: Any, postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loky worker that starts (or a new one that joins) while PostgreSQL restarts connects
    for the first time then: it waits for the database instead of crashing the sweep with
    a traceback (a CI failure of test_postgres_restarted_mid_sweep: Optuna's RDBStorage
    connects in its constructor)."""
    import optuna

    from sweep.config.sweep_file import load_config
    from sweep.search.study import make_storage, open_study
    from sweep.search.worker import run_one_trial
    from sweep_helpers import trial_context

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(None, {"study": "late-worker", "trials": 1, "epochs": 1, "storage": postgres_db})
    ctx = trial_context(cfg, tmp_path)
    open_study(cfg, make_storage(postgres_db, ctx.journal_path))
    postgres_server.down()
    back = threading.Timer(4.0, postgres_server.up)
    back.start()
    try:
        res = run_one_trial(ctx)
    finally:
        back.join()
    [trial] = optuna.load_study(study_name="late-worker", storage=postgres_db).get_trials()
    assert res["number"] == trial.number == 0 and res["state"] == trial.state.name == "COMPLETE", res


def test_journal_cut_in_its_last_record_resumes_or_says_what_to_do(tmp_path: Path) -> None:
    run_cli(tmp_path, "run", "--trials", "3", "--epochs", "2", "--jobs", "1", "--pruner", "none")
    journal = tmp_path / "optuna.journal"
    before = load_study(tmp_path).get_trials()
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(data[: last + (len(data) - last) // 2])  # killed while writing its last record
    proc = run_cli(tmp_path, "run", "--trials", "4", "--epochs", "2", "--jobs", "1", "--pruner", "none", check=False)
    out = proc.stdout + proc.stderr
    print(out)
    assert "Traceback" not in out, out
    if proc.returncode == 0:  # resumed: the cut record is dropped and said so, nothing before it is lost
        assert f"{journal}: dropped its incomplete last record" in out, out
        assert (tmp_path / "optuna.journal.damaged").exists()
        study = load_study(tmp_path)
        assert counted_trials(study) == 4
        assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        # Every trial that was there is still there; one whose last record was cut is re-run.
        assert [t.number for t in study.trials[: len(before)]] == [t.number for t in before]
        for t in study.trials[: len(before)]:
            assert t.state == TrialState.COMPLETE or any(u.system_attrs.get("failed_trial") == t.number
                                                         for u in study.trials), t
        _, _, children = mlflow_runs(tmp_path)
        assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [t.number for t in study.trials]
    else:
        assert proc.returncode == 2 and str(journal) in proc.stderr, proc.stderr


def test_spool_folder_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_TRACKING_WAIT", "5")  # the tracker cannot save its state there either
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    spool_dir = tmp_path / ".sweep" / STUDY / "spool"
    spool_dir.mkdir(parents=True)
    # tmpfs counts whole 4 kB pages: the lock, .parents.json and two pages per trial (events, .state)
    # fill 32 kB within the first few trials.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(spool_dir)], check=True)
    try:
        proc = run_cli(tmp_path, "run", "--trials", "30", "--epochs", "3", "--jobs", "1", "--pruner", "none",
                       check=False, timeout=400)
        out = proc.stdout + proc.stderr
        print(out)
        assert proc.returncode == 4, out
        assert "Traceback" not in out
        assert f"cannot write the spool folder {spool_dir}" in out and "stopping the sweep" in out, out
        study = load_study(tmp_path)
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]
        failed = [t for t in study.trials if t.state == TrialState.FAIL]
        assert failed and str(spool_dir) in failed[-1].user_attrs["failure_reason"]
        # What was recorded before is intact: every line parses, every finished trial is in MLflow.
        for path in spool_dir.glob("*.jsonl"):
            text = path.read_text()
            assert text == "" or text.endswith("\n"), path
            [json.loads(line) for line in text.splitlines()]
        _, _, children = mlflow_runs(tmp_path)
        done = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
        assert done and done <= {int(r.data.tags["optuna.trial_number"]) for r in children}
    finally:
        subprocess.run(["umount", "-l", str(spool_dir)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the filesystem under `folder` to the last page; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_tracker_that_cannot_save_its_progress_mirrors_from_memory(tmp_path: Path) -> None:
    """The disk under the spool folder is full after the workers wrote their runs: the
    tracker cannot write a single side file, and every run, epoch and parent summary
    still reaches MLflow, once; `sweep sync` after space is back duplicates nothing."""
    from sweep.tracking import spool
    from sweep.tracking.store import child_runs
    from sweep.tracking.tracker import ParentSpec, Tracker

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parents = [ParentSpec("study", "exp")]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(spool_dir)], check=True)
    try:
        first = Tracker(uri, "exp", spool_dir, parents, poll_seconds=0.05).start()  # the sweep's start
        assert first.wait_ready(60)
        first.stop()
        for n in range(3):
            with spool.RunRecorder(spool_dir / f"trial-000{n}.jsonl") as rec:
                rec.start(f"trial-000{n}", "study", {"keep_prob": 0.5}, {"optuna.trial_number": str(n)})
                for e in range(1, 4):
                    rec.epoch(e, {"val_acc": 0.1 * e + n})
                rec.end("FINISHED", {"state": "COMPLETE"}, {"summary/best_val_acc": 0.3 + n})
        filler = _fill(spool_dir)
        said: list[str] = []
        tracker = Tracker(uri, "exp", spool_dir, parents, poll_seconds=0.05, say=said.append).start()
        assert tracker.wait_ready(60)
        assert tracker.log_parent("study", tags={"summary/best_test_acc": "0.97"})
        left = tracker.stop(parent_status="FINISHED", timeout=10)
        assert not list(spool_dir.glob("*.state")), "the disk was meant to be full"
        assert (left.runs_open, left.events, left.parents) == (0, 0, 0), left.describe()
        assert len([line for line in said if "cannot save its progress" in line]) == 1, said

        def snapshot() -> dict[str, tuple[str, list[int], str]]:
            client = tracker.client
            parent = tracker.parent_run_ids["study"]
            return {r.info.run_name: (r.info.status,
                                      [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")],
                                      r.data.tags.get("state", ""))
                    for r in child_runs(client, tracker.experiment_id, parent)}

        expected = {f"trial-000{n}": ("FINISHED", [1, 2, 3], "COMPLETE") for n in range(3)}
        assert snapshot() == expected
        parent_run = tracker.client.get_run(tracker.parent_run_ids["study"])
        assert parent_run.info.status == "FINISHED"
        assert parent_run.data.tags["summary/best_test_acc"] == "0.97"

        # Space is back; the side files still say nothing was sent: `sweep sync` resends,
        # and MLflow ends with the same runs and points.
        filler.unlink()
        again = Tracker(uri, "exp", spool_dir, parents).sync_now()
        assert (again.runs_open, again.events) == (0, 0)
        assert snapshot() == expected
    finally:
        subprocess.run(["umount", "-l", str(spool_dir)], check=False)


# -- bad input at every entry point ----------------------------------------------------
# One row per case: (id, argv, sweep file text or None, text the one-line error must contain).
# The sweep file, when given, is written as sweep.toml and passed as the config argument.
# To add a flag or key: add its rows here (wrong type, out of range, unknown name).

BAD_INPUT = [
    # run: flags
    ("run-trials-type", ["run", "--trials", "many"], None, "--trials"),
    ("run-trials-range", ["run", "--trials", "0"], None, "trials"),
    ("run-jobs-range", ["run", "--jobs", "-1"], None, "jobs"),
    ("run-jobs-type", ["run", "--jobs", "two"], None, "--jobs"),
    ("run-epochs-range", ["run", "--epochs", "0"], None, "epochs"),
    ("run-seed-range", ["run", "--seed", "-1"], None, "seed"),
    ("run-num-train-range", ["run", "--num-train", "0"], None, "--num-train"),
    ("run-dataset-name", ["run", "--dataset", "mnist"], None, "--dataset"),
    ("run-pruner-name", ["run", "--pruner", "sometimes"], None, "--pruner"),
    ("run-unknown-flag", ["run", "--trails", "5"], None, "--trails"),
    ("run-storage-scheme", ["run", "--storage", "postgresqll://u:pw@127.0.0.1/db"], None, "--storage"),
    ("run-storage-driver", ["run", "--storage", "postgresql+pg8000://u:pw@127.0.0.1/db"], None, "pg8000"),
    ("run-storage-unreachable", ["run", "--storage", "postgresql+psycopg2://u:pw@127.0.0.1:1/db"], None, "--storage"),
    ("run-storage-journal-dir", ["run", "--storage", "journal:."], None, "--storage"),
    # A raw '@' in the password: SQLAlchemy would take 'x@127.0.0.1' for the host (and print it).
    ("run-storage-raw-at", ["run", "--storage", "postgresql+psycopg2://u:pw@x@127.0.0.1:1/db"], None, "%40"),
    ("run-tracking-scheme", ["run", "--tracking-uri", "htp://host"], None, "--tracking-uri"),
    ("run-tracking-unreachable", ["run", "--tracking-uri", "http://127.0.0.1:1"], None, "did not answer within 5 s"),
    ("run-study-empty", ["run", "--study", " "], None, "study"),
    ("run-jobs-beyond-cores", ["run", "--jobs", "100000"], None, "--jobs"),
    ("run-network-too-big", ["run", "--jobs", "1"], "[space]\nwidth = 300000\ndepth = 2\n", "space.width"),
    ("run-study-parent-path", ["run", "--study", "../../escape"], None, "study: '../../escape' is not allowed"),
    ("run-study-absolute-path", ["run", "--study", "/some/other/folder"], None, "study: '/some/other/folder'"),
    ("run-study-too-long", ["run", "--study", "a" * 300], None, "at most 100 characters"),
    ("run-study-hidden", ["run", "--study", ".hidden"], None, "not starting with '.'"),
    ("run-study-control-char", ["run", "--study", "a\tb"], None, "control characters"),
    # run: sweep-file keys
    ("file-trials-type", ["run"], '[sweep]\ntrials = "many"\n', "sweep.trials"),
    ("file-trials-range", ["run"], "[sweep]\ntrials = 0\n", "sweep.trials"),
    ("file-jobs-range", ["run"], "[sweep]\njobs = -1\n", "sweep.jobs"),
    ("file-seed-type", ["run"], "[sweep]\nseed = 1.5\n", "sweep.seed"),
    ("file-jobs-beyond-cores", ["run"], "[sweep]\njobs = 100000\n", "[sweep] jobs in sweep.toml"),
    ("file-oversubscribe-type", ["run"], '[sweep]\noversubscribe = "yes"\n', "sweep.oversubscribe"),
    ("file-network-too-big", ["run"], "[space]\nwidth = 1000000000\n", "space.width"),
    ("file-dataset-name", ["run"], '[sweep]\ndataset = "mnist"\n', "sweep.dataset"),
    ("file-pruner-name", ["run"], '[sweep]\npruner = "sometimes"\n', "sweep.pruner"),
    ("file-unknown-key", ["run"], "[sweep]\ntrails = 5\n", "trails"),
    ("file-unknown-section", ["run"], "[sweeps]\ntrials = 5\n", "sweeps"),
    ("file-storage-scheme", ["run"], '[sweep]\nstorage = "postgresqll://u:pw@h/db"\n', "[sweep] storage"),
    ("file-storage-type", ["run"], "[sweep]\nstorage = 5\n", "sweep.storage"),
    ("file-tracking-scheme", ["run"], '[sweep]\ntracking_uri = "htp://host"\n', "[sweep] tracking_uri"),
    ("file-keep-prob-range", ["run"], "[space]\nkeep_prob = 1.5\n", "space.keep_prob"),
    ("file-keep-prob-type", ["run"], '[space]\nkeep_prob = "half"\n', "space.keep_prob"),
    ("file-space-unknown", ["run"], "[space]\nkeep_prop = 0.5\n", "keep_prop"),
    ("file-depth-range", ["run"], "[space]\ndepth = 0\n", "space.depth"),
    ("file-epochs-type", ["run"], '[space]\nepochs = "ten"\n', "space.epochs"),
    ("file-ablation-seeds", ["run"], "[ablation]\nseeds = 0\n", "ablation.seeds"),
    ("file-ablation-keep-probs", ["run"], "[ablation]\nkeep_probs = [0.5]\n", "ablation.keep_probs"),
    ("file-ablation-subsets", ["run"], '[ablation]\nsubsets = "some"\n', "ablation.subsets"),
    ("file-study-path", ["run"], '[sweep]\nstudy = "../escape"\n', "sweep.study: '../escape' is not allowed"),
    ("file-not-toml", ["run"], "[sweep\n", "not valid TOML"),
    ("file-missing", ["run", "nowhere.toml"], None, "nowhere.toml"),
    # ablate
    ("ablate-keep-probs-range", ["ablate", "--keep-probs", "1,1.5"], None, "--keep-probs (value 2)"),
    ("ablate-keep-probs-type", ["ablate", "--keep-probs", "1,half"], None, "--keep-probs"),
    ("ablate-keep-probs-baseline", ["ablate", "--keep-probs", "0.5,0.75"], None, "1.0"),
    ("ablate-sizes-range", ["ablate", "--sizes", "0"], None, "sizes"),
    ("ablate-seeds-range", ["ablate", "--seeds", "0"], None, "seeds"),
    ("ablate-subsets-name", ["ablate", "--subsets", "some"], None, "--subsets"),
    ("ablate-tracking-scheme", ["ablate", "--tracking-uri", "htp://host"], None, "--tracking-uri"),
    ("ablate-nothing-to-ablate", ["ablate", "--seeds", "2"], None, "sweep run"),
    ("ablate-vary-too-big", ["ablate", "--seeds", "2", "--vary", "hidden_dims=64,1000000-1000000"], None,
     "vary.hidden_dims"),
    ("ablate-jobs-beyond-cores", ["ablate", "--seeds", "2", "--jobs", "100000"], None, "--oversubscribe"),
    # report
    ("report-tracking-scheme", ["report", "--tracking-uri", "htp://host"], None, "--tracking-uri"),
    ("report-storage-scheme", ["report", "--storage", "postgresqll://h/db"], None, "--storage"),
    # sync
    ("sync-tracking-scheme", ["sync", "--tracking-uri", "htp://host"], None, "--tracking-uri"),
    ("sync-study-path", ["sync", "--study", "../.."], None, "--study: '../..' is not allowed"),
    ("report-study-path", ["report", "--study", "/tmp"], None, "study: '/tmp' is not allowed"),
    ("sync-tracking-unreachable", ["sync", "--tracking-uri", "http://127.0.0.1:1"], None, "--tracking-uri"),
    # check
    ("check-module-missing", ["check", "no_such_layers"], None, "no_such_layers"),
    ("check-model-path-missing", ["check", "cs231n.layers", "--model-path", "nowhere"], None, "--model-path nowhere"),
    ("check-class-missing", ["check", "model.layers:FullyConnectedNet"], None, "no class 'FullyConnectedNet'"),
    # the command itself
    ("unknown-command", ["runn"], None, "runn"),
]


@pytest.mark.parametrize(("argv", "sweep_file", "names"), [row[1:] for row in BAD_INPUT], ids=[row[0] for row in BAD_INPUT])
def test_bad_input_is_one_line_naming_it_exit_2_nothing_created(
    tmp_path: Path, argv: list[str], sweep_file: str | None, names: str
) -> None:
    if sweep_file is not None:
        (tmp_path / "sweep.toml").write_text(sweep_file)
        argv = [argv[0], "sweep.toml", *argv[1:]]
    before = sorted(tmp_path.rglob("*"))
    proc = subprocess.run([*SWEEP, *argv], cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True, text=True,
                          timeout=120, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert names in lines[0], lines[0]
    assert ":pw@" not in proc.stderr  # passwords in a URL are masked
    assert sorted(tmp_path.rglob("*")) == before  # no journal, no mlflow.db, no .sweep, no cache
