"""The team stack, run natively the way docker-compose.yml wires it.

Each service is started from the compose file's own command and environment
(tests/services.py rewrites only what differs outside containers: ports,
the `postgres:5432` host inside URLs, the artifact folder), against a real
PostgreSQL set up by the stack's init script. Then the real clients use it:
MlflowClient, Optuna's RDB storage from several processes, optuna-dashboard's
HTTP API, joblib on Dask.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from services import (
    NATIVE_ADMIN,
    VENV_BIN,
    PostgresServer,
    ServerProcess,
    free_port,
    healthcheck_argv,
    http_request,
    import_or_unavailable,
    load_compose,
    native_argv,
    native_environment,
    service_command,
    unavailable,
)

COMPOSE = load_compose()  # every variable at its documented default

# Heartbeats and their retry callback are "experimental" in Optuna 5.0: known, and used on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _in_container_network(pg: PostgresServer) -> dict[str, str]:
    """Container address of PostgreSQL -> the native cluster's."""
    return {"postgres:5432": f"127.0.0.1:{pg.port}"}


def _no_password(url: str) -> str:
    """The URL as the compose file writes it: role, no password (libpq reads PGPASSWORD)."""
    scheme, rest = url.split("://", 1)
    userinfo, _, host = rest.rpartition("@")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{host}"


_ADMIN_HEADERS = {"Authorization": "Basic " + base64.b64encode(":".join(NATIVE_ADMIN).encode()).decode()}


# --------------------------------------------------------------------------
# PostgreSQL


def test_init_script_gives_each_tool_its_own_database_and_role(postgres_server: PostgresServer) -> None:
    import psycopg2

    for name in ("mlflow", "optuna"):
        rows = postgres_server.query("SELECT current_user, current_database()", name, role=name)
        assert rows == [(name, name)]
        # The role owns its database, so it can create the tool's tables.
        postgres_server.query("CREATE TABLE probe (x int); DROP TABLE probe", name, role=name)
    # Neither tool can open the other's database ...
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        postgres_server.query("SELECT 1", "mlflow", role="optuna")
    # ... and passwords are checked on TCP connections, as in the container.
    wrong = postgres_server.url("optuna", role="optuna", driver="postgresql").replace(":optuna@", ":wrong@")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong, connect_timeout=10).close()


def test_postgres_healthcheck_passes_only_when_the_server_listens(postgres_server: PostgresServer) -> None:
    env = postgres_server.client_env()
    ok = subprocess.run(
        healthcheck_argv(COMPOSE, "postgres", container_port=5432, native_port=postgres_server.port),
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    dead = subprocess.run(
        healthcheck_argv(COMPOSE, "postgres", container_port=5432, native_port=free_port()),
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert dead.returncode != 0


# --------------------------------------------------------------------------
# Optuna on PostgreSQL, optuna-dashboard


def _run_schema_job(pg: PostgresServer) -> subprocess.CompletedProcess[str]:
    argv = native_argv(service_command(COMPOSE, "optuna-schema"), hosts=_in_container_network(pg))
    assert argv[-1] == _no_password(pg.url("optuna", role="optuna"))
    env = {**os.environ, **native_environment(COMPOSE, "optuna-schema")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def optuna_url(postgres_server: PostgresServer) -> str:
    """The Optuna database URL (role optuna) after the compose schema job ran."""
    result = _run_schema_job(postgres_server)
    assert result.returncode == 0, result.stdout + result.stderr
    return postgres_server.url("optuna", role="optuna")


# A sweep worker in miniature: loads the study and runs trials with heartbeats.
# With BLOCK=1 it announces its trial and then hangs, to be killed.
WORKER = r"""
import os, sys, time
import optuna

url, study_name, n_trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
study = optuna.load_study(study_name=study_name, storage=storage)

def objective(trial):
    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", -5.0, 5.0)
    if os.environ.get("BLOCK") == "1":
        print("started", trial.number, flush=True)
        time.sleep(300)
    time.sleep(0.05)
    return (x - 1.0) ** 2

study.optimize(objective, n_trials=n_trials)
"""


def _worker(url: str, study: str, n_trials: int, *, block: bool = False) -> subprocess.Popen[str]:
    env = dict(os.environ, BLOCK="1" if block else "0")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, study, str(n_trials)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


@pytest.fixture(scope="module")
def two_process_study(optuna_url: str) -> str:
    """A study whose 8 trials were run by two worker processes at once."""
    import optuna

    name = "two-workers"
    optuna.create_study(study_name=name, storage=optuna_url, sampler=optuna.samplers.TPESampler(seed=0))
    workers = [_worker(optuna_url, name, 4), _worker(optuna_url, name, 4)]
    for proc in workers:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return name


def test_schema_job_creates_optuna_tables_and_can_run_again(optuna_url: str, postgres_server: PostgresServer) -> None:
    tables = {row[0] for row in postgres_server.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", "optuna", role="optuna"
    )}
    assert {"studies", "trials", "trial_heartbeats", "version_info", "alembic_version"} <= tables
    again = _run_schema_job(postgres_server)  # `docker compose up` runs it on every start
    assert again.returncode == 0, again.stderr
    assert "optuna schema ready" in again.stdout


def test_two_processes_share_one_study(optuna_url: str, two_process_study: str) -> None:
    import optuna

    trials = optuna.load_study(study_name=two_process_study, storage=optuna_url).get_trials()
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids


def test_killed_worker_trial_fails_by_heartbeat_and_its_params_run_again(optuna_url: str) -> None:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    name = "killed-worker"
    storage = optuna.storages.RDBStorage(
        optuna_url, heartbeat_interval=1, grace_period=2,
        # (`failed_trial_callback`, the older name, is deprecated since Optuna 4.9.)
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )
    study = optuna.create_study(study_name=name, storage=storage)
    proc = _worker(optuna_url, name, 1, block=True)
    try:
        line = _read_line(proc, timeout=60)
        assert line.startswith("started"), line
        killed_number = int(line.split()[1])
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert study.trials[killed_number].state == TrialState.RUNNING  # nobody told the DB

    # Once its heartbeat is older than grace_period, any process on the study fails it.
    deadline = time.monotonic() + 30
    while study.trials[killed_number].state == TrialState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.5)
        optuna.storages.fail_stale_trials(study)
    killed = study.trials[killed_number]
    assert killed.state == TrialState.FAIL

    study.optimize(lambda t: (t.suggest_float("x", -5.0, 5.0) - 1.0) ** 2, n_trials=1)
    retried = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_number]
    assert len(retried) == 1
    assert retried[0].state == TrialState.COMPLETE and retried[0].params == killed.params


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line from `proc`, or '' after `timeout` seconds."""
    assert proc.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


def test_dashboard_from_compose_lists_the_study(
    postgres_server: PostgresServer, optuna_dashboard, two_process_study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = native_argv(service_command(COMPOSE, "optuna-dashboard"), hosts=_in_container_network(postgres_server))
    for key, value in native_environment(COMPOSE, "optuna-dashboard").items():
        monkeypatch.setenv(key, value)  # PGPASSWORD, as with-secrets.sh sets it; the dashboard inherits it
    url = optuna_dashboard(argv=argv)

    status, body = http_request(url + "/api/studies")
    assert status == 200
    studies = {s["study_name"]: s["study_id"] for s in json.loads(body)["study_summaries"]}
    assert two_process_study in studies
    status, body = http_request(f"{url}/api/studies/{studies[two_process_study]}")
    assert status == 200
    assert len(json.loads(body)["trials"]) == 8

    port = int(url.rsplit(":", 1)[1])
    check = subprocess.run(
        healthcheck_argv(COMPOSE, "optuna-dashboard", container_port=8080, native_port=port),
        capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stderr


# --------------------------------------------------------------------------
# Dask


def test_joblib_dask_backend_runs_tasks_on_both_cluster_workers(dask_client) -> None:
    import joblib
    from distributed import Event

    def rendezvous(i: int) -> int:
        # Each task waits for the other: this only finishes if two workers run
        # them at the same time (each worker has one thread).
        Event(f"arrived-{i}").set()
        if not Event(f"arrived-{1 - i}").wait(timeout=30):
            raise TimeoutError(f"task {i} ran alone")
        return os.getpid()

    with joblib.parallel_config(backend="dask"):
        pids = joblib.Parallel(n_jobs=2)(joblib.delayed(rendezvous)(i) for i in range(2))
    worker_pids = set(dask_client.run(os.getpid).values())
    assert len(worker_pids) == 2
    assert set(pids) == worker_pids


def test_dask_cli_workers_run_optuna_trials_on_the_shared_database(optuna_url: str, tmp_path: Path) -> None:
    """The multi-machine recipe of docs/team.md on one machine: `dask scheduler`,
    `dask worker`, and joblib tasks that open the same Optuna database."""
    import joblib
    import optuna

    distributed = import_or_unavailable("distributed", "pip install -e '.[test]'")
    if not (VENV_BIN / "dask").exists():
        unavailable(f"the dask command is not installed in {VENV_BIN}; pip install -e '.[test]'")
    name = "dask-workers"
    optuna.create_study(study_name=name, storage=optuna_url)

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = ServerProcess(
        "dask scheduler",
        [VENV_BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        port=port, health_path=None, log_path=tmp_path / "scheduler.log",
    )
    worker = ServerProcess(
        "dask worker",
        # Two threads: with a single one joblib sees n_jobs == 1 and silently
        # runs every task here, in the calling process.
        [VENV_BIN / "dask", "worker", address, "--nworkers", "1", "--nthreads", "2", "--no-dashboard",
         "--local-directory", tmp_path / "worker"],
        port=port, health_path=None, log_path=tmp_path / "worker.log",
    )
    try:
        scheduler.start(timeout=60)
        worker.start(timeout=60)
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            worker_pids = set(client.run(os.getpid).values())

            def one_trial(url: str, study_name: str) -> int:
                import optuna as remote_optuna

                remote_optuna.logging.set_verbosity(remote_optuna.logging.WARNING)
                study = remote_optuna.load_study(study_name=study_name, storage=url)
                study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) ** 2, n_trials=1)
                return os.getpid()

            with joblib.parallel_config(backend="dask"):
                pids = joblib.Parallel(n_jobs=2)(joblib.delayed(one_trial)(optuna_url, name) for _ in range(3))
    finally:
        worker.stop()
        scheduler.stop()

    assert set(pids) == worker_pids
    trials = optuna.load_study(study_name=name, storage=optuna_url).get_trials()
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


# --------------------------------------------------------------------------
# MLflow on PostgreSQL with proxied artifacts


@dataclass
class MlflowStack:
    server: ServerProcess
    artifacts: Path

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module", autouse=True)
def _mlflow_launch(request: pytest.FixtureRequest) -> MlflowStack | None:
    """Launch the compose MLflow server as soon as the module starts, if any
    selected test needs it: its ~10 s start-up then overlaps the other tests."""
    if not any("compose_mlflow" in item.fixturenames for item in request.session.items):
        return None
    postgres_server: PostgresServer = request.getfixturevalue("postgres_server")
    factory = request.getfixturevalue("mlflow_server_factory")
    artifacts = request.getfixturevalue("tmp_path_factory").mktemp("mlflow-artifacts")
    argv = native_argv(
        service_command(COMPOSE, "mlflow"),
        # One worker: the count is a capacity setting, and each costs seconds here.
        options={"--artifacts-destination": str(artifacts), "--workers": "1"},
        hosts=_in_container_network(postgres_server),
    )
    assert _no_password(postgres_server.url("mlflow", role="mlflow")) in argv
    auth_dir = request.getfixturevalue("tmp_path_factory").mktemp("mlflow-auth")
    server = factory(argv=argv, env=native_environment(COMPOSE, "mlflow", auth_dir=auth_dir), wait=False)
    return MlflowStack(server, artifacts)


@pytest.fixture(scope="module")
def compose_mlflow(_mlflow_launch: MlflowStack | None) -> MlflowStack:
    """`mlflow server` with the compose command and environment, on the mlflow DB."""
    assert _mlflow_launch is not None
    _mlflow_launch.server.wait_ready()
    return _mlflow_launch


def test_mlflow_server_keeps_runs_in_postgres_and_proxies_artifacts(
    compose_mlflow: MlflowStack, postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunStatus

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", NATIVE_ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", NATIVE_ADMIN[1])
    client = MlflowClient(tracking_uri=compose_mlflow.url)
    experiment_id = client.create_experiment("stack-check")
    # Proxied artifacts: the experiment points at the server, not at a path
    # that only the server's machine could write to.
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")

    run_id = client.create_run(experiment_id, run_name="trial-0000").info.run_id
    stamp = int(time.time() * 1000)
    val_acc = [0.31, 0.52, 0.64, 0.66, 0.71]
    train_loss = [2.1, 1.4, 1.0, 0.8, 0.7]
    metrics = [Metric("val_acc", v, stamp, step) for step, v in enumerate(val_acc)]
    metrics += [Metric("train_loss", v, stamp, step) for step, v in enumerate(train_loss)]
    client.log_batch(run_id, metrics=metrics, params=[Param("keep_prob", "0.5"), Param("hidden_dims", "[64, 32]")])
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"val_acc": val_acc}))
    client.log_artifact(run_id, str(curve), artifact_path="curves")
    client.set_terminated(run_id)

    run = client.get_run(run_id)
    assert run.info.status == RunStatus.to_string(RunStatus.FINISHED)
    assert run.data.params == {"keep_prob": "0.5", "hidden_dims": "[64, 32]"}
    history = sorted(client.get_metric_history(run_id, "val_acc"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == list(enumerate(val_acc))
    assert [a.path for a in client.list_artifacts(run_id, "curves")] == ["curves/curve.json"]
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="curves/curve.json", dst_path=str(tmp_path / "download"),
        tracking_uri=compose_mlflow.url,
    )
    assert json.loads(Path(local).read_text()) == {"val_acc": val_acc}

    # The bytes went through the server into its --artifacts-destination ...
    stored = list(compose_mlflow.artifacts.rglob("curve.json"))
    assert len(stored) == 1 and run_id in stored[0].parts
    # ... and the run and its 10 points are rows in PostgreSQL, seen by role mlflow.
    rows = postgres_server.query(
        f"SELECT count(*) FROM metrics WHERE run_uuid = '{run_id}'", "mlflow", role="mlflow"
    )
    assert rows == [(len(metrics),)]


def test_mlflow_accepts_the_compose_host_names_and_rejects_others(compose_mlflow: MlflowStack) -> None:
    api = compose_mlflow.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    # `mlflow:5000` is how other containers reach it; localhost/LAN IPs stay allowed.
    for host in ("mlflow:5000", "localhost:5000", "127.0.0.1:5000", "192.168.1.20:5000", "172.20.0.5:5000"):
        assert http_request(api, headers={"Host": host, **_ADMIN_HEADERS})[0] == 200, host
    # A DNS-rebinding page arrives with its own name as Host.
    assert http_request(api, headers={"Host": "attacker.example:5000", **_ADMIN_HEADERS})[0] == 403

    # State-changing requests from a foreign page are refused; the UI's own
    # origin (localhost, any port) is not.
    post = compose_mlflow.url + "/api/2.0/mlflow/experiments/create"
    for origin, expected in (("http://attacker.example", 403), ("http://localhost:5000", 200)):
        body = json.dumps({"name": f"cors-{expected}"}).encode()
        status, text = http_request(
            post, method="POST", body=body,
            headers={"Origin": origin, "Content-Type": "application/json", **_ADMIN_HEADERS},
        )
        assert status == expected, (origin, text[:200])


def test_mlflow_healthcheck_command_reaches_the_server(compose_mlflow: MlflowStack) -> None:
    ok = subprocess.run(
        healthcheck_argv(COMPOSE, "mlflow", container_port=5000, native_port=compose_mlflow.server.port),
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    dead = subprocess.run(
        healthcheck_argv(COMPOSE, "mlflow", container_port=5000, native_port=free_port()),
        capture_output=True, text=True, timeout=60,
    )
    assert dead.returncode != 0


def test_mlflow_from_compose_requires_a_login(compose_mlflow: MlflowStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compose command always runs MLflow's basic-auth app (users in the mlflow-auth volume)."""
    api = compose_mlflow.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_request(api)[0] == 401
    wrong = base64.b64encode(b"admin:wrong-password-1").decode()
    assert http_request(api, headers={"Authorization": f"Basic {wrong}"})[0] == 401
    assert http_request(api, headers=_ADMIN_HEADERS)[0] == 200
    assert http_request(compose_mlflow.url + "/health")[0] == 200  # the healthcheck needs no login
    # What the proxy asks MLflow for every request: is this login a user?
    me = compose_mlflow.url + f"/api/2.0/mlflow/users/get?username={NATIVE_ADMIN[0]}"
    assert http_request(me, headers=_ADMIN_HEADERS)[0] == 200 and http_request(me)[0] == 401

    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", NATIVE_ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", NATIVE_ADMIN[1])
    client = MlflowClient(tracking_uri=compose_mlflow.url)
    assert client.get_experiment(client.create_experiment("with-auth")).name == "with-auth"
