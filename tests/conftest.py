"""Shared fixtures that run real services on 127.0.0.1.

Fixtures (all tear down their processes, also when a test fails):

- ``postgres_server`` (session) -> :class:`services.PostgresServer`: a fresh
  PostgreSQL cluster set up by the compose stack's own init script, so it has
  databases ``mlflow`` and ``optuna`` owned by roles ``mlflow``/``optuna``.
  ``.url("optuna")`` is the superuser URL of a database,
  ``.url("optuna", role="optuna")`` the one the compose stack uses,
  ``.create_database(name)`` makes another one.
- ``postgres_url`` (session) -> str: ``postgresql+psycopg2://postgres:postgres@127.0.0.1:PORT``;
  append ``/optuna`` or ``/mlflow``.
- ``postgres_db`` (function) -> str: URL of a new empty database for one test,
  dropped afterwards.
- ``mlflow_server_factory`` (session) -> ``start(backend_store_uri, *, artifacts_destination=None,
  workers=1, extra_args=(), env=None, argv=None, wait=True) -> ServerProcess`` (``.url``).
- ``mlflow_server`` (session) -> str: URL of one ``mlflow server`` on a SQLite
  store with proxied artifacts (started once; ~10 s).
- ``optuna_dashboard`` (session) -> ``start(storage_url, *, extra_args=(), argv=None) -> str`` URL.
- ``dask_client`` (session) -> ``distributed.Client`` of a LocalCluster with
  two single-threaded worker processes.

Without PostgreSQL binaries (or mlflow, optuna-dashboard, distributed) the
tests that need them are skipped with the reason; with
SWEEP_REQUIRE_SERVICES=1 (CI) they fail instead.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from services import (
    PG_BIN_ENV,
    PG_INIT_SCRIPT,
    VENV_BIN,
    PostgresServer,
    ServerProcess,
    find_pg_bin,
    free_port,
    import_or_unavailable,
    load_compose,
    native_environment,
    set_option,
    start_postgres,
    unavailable,
)

# A test run started in the background of a non-interactive shell (`bash -c '... &'`,
# `nohup`) inherits SIGINT ignored, and an ignored signal stays ignored across exec: every
# `sweep` a test starts would ignore its Ctrl-C, and the tests that press it would see the
# command run to its end. A person's terminal delivers it, so the tests do too.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

MlflowFactory = Callable[..., ServerProcess]
DashboardFactory = Callable[..., str]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster on a free port with the compose stack's databases."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        where = (
            f"in ${PG_BIN_ENV}={os.environ[PG_BIN_ENV]}" if os.environ.get(PG_BIN_ENV)
            else f"on PATH or in /usr/lib/postgresql/*/bin (or set ${PG_BIN_ENV})"
        )
        unavailable(
            f"PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found {where};"
            " install them, e.g. `apt-get install postgresql`"
        )
    import_or_unavailable("psycopg2", "install the test extras: pip install -e '.[test]'")
    # The same environment the postgres container gets, defaults applied.
    env = native_environment(load_compose(), "postgres")  # NAME_FILE secrets -> NAME, as in the container
    init_env = {k: env[k] for k in ("POSTGRES_USER", "MLFLOW_DB_PASSWORD", "OPTUNA_DB_PASSWORD")}
    server = start_postgres(
        bin_dir,
        init_script=PG_INIT_SCRIPT,
        init_env=init_env,
        role_passwords={"mlflow": env["MLFLOW_DB_PASSWORD"], "optuna": env["OPTUNA_DB_PASSWORD"]},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """Superuser base URL; append ``/DBNAME`` (``/optuna``, ``/mlflow``)."""
    return postgres_server.base_url


_db_numbers = itertools.count()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    """URL (superuser) of a new empty database, dropped after the test."""
    name = f"test_{os.getpid()}_{next(_db_numbers)}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def _service_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def mlflow_server_factory(_service_dir: Path) -> Iterator[MlflowFactory]:
    """Start real ``mlflow server`` processes; all are stopped at session end.

    ``start(backend_store_uri, *, artifacts_destination=None, workers=1,
    extra_args=(), env=None, argv=None, wait=True)``: with `argv` (a full
    command line containing ``--port`` and ``--host``) the port and host are
    set to a free port on 127.0.0.1 and the rest is used as given; `env` adds
    variables. Returns the ServerProcess (``.url``, ``.log()``, ``.stop()``),
    answering /health; with ``wait=False`` only launched: call
    ``.wait_ready()`` before use (lets its ~10 s start overlap other work).
    """
    if not (VENV_BIN / "mlflow").exists():
        unavailable(f"the mlflow command is not installed in {VENV_BIN}")
    started: list[ServerProcess] = []
    counter = itertools.count()

    def start(
        backend_store_uri: str | None = None,
        *,
        artifacts_destination: str | Path | None = None,
        workers: int = 1,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
        wait: bool = True,
    ) -> ServerProcess:
        folder = _service_dir / f"mlflow-{next(counter)}"
        folder.mkdir()
        port = free_port()
        if argv is None:
            if backend_store_uri is None:
                raise ValueError("backend_store_uri is required unless argv is given")
            artifacts = artifacts_destination or (folder / "artifacts")
            argv = [
                str(VENV_BIN / "mlflow"), "server",
                "--backend-store-uri", backend_store_uri,
                "--artifacts-destination", str(artifacts),
                "--workers", str(workers),
                "--host", "127.0.0.1", "--port", str(port),
                *extra_args,
            ]
        else:
            argv = set_option(set_option(argv, "--host", "127.0.0.1"), "--port", str(port))
        full_env = dict(os.environ)
        # The GenAI job runner adds seven huey processes; sweeps never use it
        # (docker-compose.yml turns it off too).
        full_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            full_env.pop(key, None)
        full_env.update(env or {})
        server = ServerProcess(
            "mlflow server", argv, port=port, health_path="/health",
            log_path=folder / "server.log", env=full_env, cwd=folder,
        )
        started.append(server)
        return server.start() if wait else server.launch()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_factory: MlflowFactory, _service_dir: Path) -> str:
    """URL (``http://127.0.0.1:PORT``) of an MLflow server on a SQLite store."""
    db = _service_dir / "mlflow-sqlite.db"
    return mlflow_server_factory(f"sqlite:///{db}").url


@pytest.fixture(scope="session")
def optuna_dashboard(_service_dir: Path) -> Iterator[DashboardFactory]:
    """Start real ``optuna-dashboard`` processes; returns ``start(storage_url,
    *, extra_args=(), argv=None) -> url``. The storage must already have
    Optuna's tables (the dashboard does not create them). With `argv` its
    ``--host``/``--port`` are replaced by 127.0.0.1 and a free port."""
    if not (VENV_BIN / "optuna-dashboard").exists():
        unavailable(f"optuna-dashboard is not installed in {VENV_BIN}; pip install -e '.[test]'")
    started: list[ServerProcess] = []
    counter = itertools.count()

    def start(storage_url: str | None = None, *, extra_args: Sequence[str] = (),
              argv: Sequence[str] | None = None) -> str:
        folder = _service_dir / f"optuna-dashboard-{next(counter)}"
        folder.mkdir()
        port = free_port()
        if argv is None:
            if storage_url is None:
                raise ValueError("storage_url is required unless argv is given")
            argv = [str(VENV_BIN / "optuna-dashboard"), storage_url, "--host", "127.0.0.1",
                    "--port", str(port), *extra_args]
        else:
            argv = set_option(set_option(argv, "--host", "127.0.0.1"), "--port", str(port))
        server = ServerProcess(
            "optuna-dashboard", argv, port=port, health_path="/api/meta",
            log_path=folder / "server.log", cwd=folder,
        )
        started.append(server)
        return server.start(timeout=60.0).url

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A ``distributed.Client`` on a LocalCluster of 2 worker processes x 1 thread."""
    distributed = import_or_unavailable("distributed", "pip install -e '.[test]'")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,  # no bokeh server: nothing looks at it in tests
        silence_logs=logging.WARNING,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
