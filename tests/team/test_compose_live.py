"""The team stack for real: docker-compose.yml and docker/*/Dockerfile, unchanged, in a Docker engine.

`pytest -m compose` (run by .ci/run after tests/compose/install-docker.sh).
A private dockerd is started for the session (tests/compose_engine.py); the
two Docker Hub images are test-only stand-ins and pip installs from wheels
built on the host (tests/compose/compose.offline.yml). Every request goes to
the stack's ports published on 127.0.0.1.

The tests share one compose project and run in file order: up, the login
on every published endpoint, a sweep, secrets, the network and ports, a
restart (data kept), the auth preflight, backup -> `down -v` -> restore, the
`dask` profile (TLS, two workers, a worker killed mid-trial).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compose_ops import (
    UP_TIMEOUT_S,
    assert_login_required,
    assert_report_downloads,
    backup,
    client_certs,
    dashboard_trials,
    fingerprint,
    http,
    restore,
)

from compose_engine import (
    STAND_IN_IMAGES,
    ComposeStack,
    DockerEngine,
    build_stand_ins,
    check_tools,
    images_used,
    serve_wheels,
    wheel_folder,
)
from sweep_helpers import SWEEP, sweep_env

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

SERVERS = {"postgres", "mlflow", "optuna-dashboard", "proxy"}
ONE_SHOTS = {"optuna-schema", "certs"}
STUDY = "compose-digits"


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    """A private dockerd for the session; stopped and its folders removed at the end."""
    check_tools()
    eng = DockerEngine().start()
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def stack(engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """The stack built and started with `up -d --build --wait`; `down -v` at the end.

    This process and the sweeps it starts log in as the docs say: the Optuna
    password in a libpq password file (PGPASSFILE), MLflow's admin through
    MLFLOW_TRACKING_USERNAME/PASSWORD.
    """
    folder = tmp_path_factory.mktemp("compose")
    mp = pytest.MonkeyPatch()
    started = time.monotonic()
    wheels = serve_wheels(wheel_folder(), folder)
    print(f"\ncompose: wheels {time.monotonic() - started:.0f} s", end="")
    empty_env = folder / "empty.env"  # hermetic: a developer's .env in the checkout is not read
    empty_env.write_text("")
    st = ComposeStack(engine, "dsdtest", wheel_url=wheels.url + "/", env_file=empty_env)
    mp.setenv("PGPASSFILE", str(st.write_pgpass(folder / "pgpass")))
    mp.setenv("MLFLOW_TRACKING_USERNAME", st.admin[0])
    mp.setenv("MLFLOW_TRACKING_PASSWORD", st.admin[1])
    try:
        started = time.monotonic()
        build_stand_ins(engine)
        stand_ins = time.monotonic()
        st.up_result = st.compose("up", "-d", "--build", "--wait", "--wait-timeout", str(UP_TIMEOUT_S),
                                  check=False, timeout=UP_TIMEOUT_S + 900)
        done = time.monotonic()
        print(f"\ncompose: stand-in images {stand_ins - started:.0f} s, "
              f"`up -d --build --wait` {done - stand_ins:.0f} s (exit {st.up_result.returncode})")
        yield st
    finally:
        st.compose("--profile", "dask", "down", "-v", "--remove-orphans", check=False, timeout=300)
        wheels.stop()
        mp.undo()


def _sweep(workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([*SWEEP, *args], cwd=workdir, env={**sweep_env(workdir), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"sweep {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _assert_healthy(st: ComposeStack, servers: set[str]) -> None:
    states = st.ps()
    for name in servers:
        assert [(c["State"], c["Health"]) for c in states[name]] == [("running", "healthy")], (name, states[name])
    for one_shot in ONE_SHOTS:
        assert [(c["State"], c["ExitCode"]) for c in states[one_shot]] == [("exited", 0)], states[one_shot]


# --------------------------------------------------------------------------
# up


def test_the_images_are_the_stand_ins_or_built_here() -> None:
    # Only the two Docker Hub images are stood in for; everything else is built from docker/.
    assert images_used() == {tag for tag, _ in STAND_IN_IMAGES.values()}


def test_up_builds_and_every_service_becomes_healthy(stack: ComposeStack) -> None:
    result = stack.up_result
    assert result.returncode == 0, f"docker compose up failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    assert set(stack.ps()) == SERVERS | ONE_SHOTS
    _assert_healthy(stack, SERVERS)
    # The images hold the pinned versions (the same the host's client runs).
    versions = stack.compose("exec", "-T", "mlflow", "python", "-c",
                             "import mlflow, psycopg2; print(mlflow.__version__)").stdout.split()
    assert versions == ["3.17.2"]
    # The postgres entrypoint ran the init script and serves as the postgres user.
    logs = stack.compose("logs", "postgres").stdout
    assert "init-databases.sh: created database and role 'mlflow'" in logs
    assert "init-databases.sh: created database and role 'optuna'" in logs
    owner = stack.compose("exec", "-T", "postgres", "stat", "-c", "%U", "/proc/1").stdout.strip()
    assert owner == "postgres"  # the server (pid 1 after the entrypoint's exec) does not run as root


# --------------------------------------------------------------------------
# a sweep against the stack


@dataclass
class TeamSweep:
    workdir: Path
    storage: str
    tracking_uri: str
    report: Path


@pytest.fixture(scope="module")
def team_sweep(stack: ComposeStack, tmp_path_factory: pytest.TempPathFactory) -> TeamSweep:
    assert stack.up_result.returncode == 0, "the stack did not start (see test_up_builds_...)"
    workdir = tmp_path_factory.mktemp("team-sweep")
    storage, tracking = stack.storage_url(), stack.url("MLFLOW_PORT")
    common = ["--study", STUDY, "--storage", storage, "--tracking-uri", tracking]
    out = _sweep(workdir, "run", *common, "--trials", "6", "--jobs", "2", "--epochs", "3")
    assert "best trial" in out, out
    _sweep(workdir, "report", *common, "--out", str(workdir / "report"))
    return TeamSweep(workdir, storage, tracking, workdir / "report")


def test_a_sweep_logs_its_study_runs_curves_and_report_to_the_stack(
    stack: ComposeStack, team_sweep: TeamSweep, tmp_path: Path
) -> None:
    from test_sweep_team import _assert_study_mirrored  # 6 trials, 6 children under one parent, full curves

    _assert_study_mirrored(team_sweep.storage, team_sweep.tracking_uri, STUDY, 6)
    trials = dashboard_trials(stack, STUDY)
    assert sorted(t["number"] for t in trials) == list(range(6))
    assert all(t["state"] in ("Complete", "Pruned", "Fail") for t in trials), [t["state"] for t in trials]
    assert any(t["intermediate_values"] for t in trials)
    assert_report_downloads(team_sweep, tmp_path / "download", STUDY)
    # The proxy wrote them into the mlflow-artifacts volume, under the server's artifact folder.
    found = stack.compose("exec", "-T", "mlflow", "find", "/mlflow/artifacts", "-name", "report.md").stdout
    assert found.strip().endswith("/artifacts/report/report.md"), found


# --------------------------------------------------------------------------
# the login, the secrets


def test_without_a_login_every_published_endpoint_but_health_answers_401(stack: ComposeStack,
                                                                         team_sweep: TeamSweep) -> None:
    assert_login_required(stack)
    # The study the sweep made is still there: the unauthenticated DELETE did nothing.
    assert dashboard_trials(stack, STUDY)


def test_no_secret_in_compose_config_docker_inspect_or_any_command_line(stack: ComposeStack,
                                                                         team_sweep: TeamSweep) -> None:
    secrets = list(stack.secrets.values())
    config = stack.compose("config").stdout
    ids = stack.compose("ps", "-a", "-q").stdout.split()
    inspect = json.dumps(stack.engine.inspect(*ids))
    running = [name for name, rows in stack.ps().items() if rows[0]["State"] == "running"]
    cmdlines = {name: stack.compose("exec", "-T", name, "sh", "-c",
                                    "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done").stdout
                for name in running}
    assert set(running) == SERVERS and all("mlflow server" in cmdlines["mlflow"] for _ in [0])
    for secret in secrets:
        assert secret not in config
        assert secret not in inspect
        for name, text in cmdlines.items():
            assert secret not in text, name
    # Each service reads its own secret as its own user; nobody else in the container can.
    mode = stack.compose("exec", "-T", "mlflow", "stat", "-c", "%a %u", "/run/secrets/mlflow_db_password")
    assert mode.stdout.split() == ["400", "10001"]
    # Not uid 1000, which is usually a person on the host.
    assert stack.compose("exec", "-T", "mlflow", "stat", "-c", "%u", "/proc/1").stdout.strip() == "10001"


# --------------------------------------------------------------------------
# inside the compose network, and what is published


@pytest.mark.parametrize(("role", "other"), [("optuna", "mlflow"), ("mlflow", "optuna")])
def test_each_database_role_reads_only_its_own_database(stack: ComposeStack, role: str, other: str) -> None:
    password = stack.secrets[f"{role.upper()}_DB_PASSWORD"]

    def psql(database: str) -> subprocess.CompletedProcess[str]:
        # Over TCP through the service name, as the other services connect.
        url = f"postgresql://{role}:{password}@postgres:5432/{database}"
        return stack.compose("exec", "-T", "postgres", "psql", url, "-tAc", "select current_database()",
                             check=False)

    own = psql(role)
    assert own.returncode == 0 and own.stdout.strip() == role, own.stderr
    denied = psql(other)
    assert denied.returncode != 0
    assert f'permission denied for database "{other}"' in denied.stderr, denied.stderr


def test_the_superuser_is_refused_over_tcp(stack: ComposeStack) -> None:
    url = f"postgresql://postgres:{stack.secrets['POSTGRES_PASSWORD']}@postgres:5432/postgres"
    denied = stack.compose("exec", "-T", "postgres", "psql", url, "-tAc", "select 1", check=False)
    assert denied.returncode != 0 and "pg_hba.conf rejects connection" in denied.stderr, denied.stderr
    # The unix socket (what backups use) still works.
    assert stack.compose("exec", "-T", "postgres", "psql", "-U", "postgres", "-tAc", "select 1").stdout.strip() == "1"


def _published(containers: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(b["HostIp"], b["HostPort"]) for c in containers
            for bindings in (c["HostConfig"]["PortBindings"] or {}).values() for b in bindings}


def test_only_the_proxy_publishes_ports_on_127_0_0_1_unless_told_otherwise(stack: ComposeStack) -> None:
    web = ("MLFLOW_PORT", "OPTUNA_DASHBOARD_PORT", "DASK_SCHEDULER_PORT")
    want = {("127.0.0.1", str(stack.ports[v])) for v in (*web, "POSTGRES_PORT")}
    for service in ("postgres", "mlflow", "optuna-dashboard", "optuna-schema", "certs"):
        assert _published(stack.containers(service)) == set(), service
    assert _published(stack.containers("proxy")) == want
    # What the engine actually listens on, not only what was asked for.
    live = {(b["HostIp"], b["HostPort"]) for c in stack.containers("proxy")
            for bindings in (c["NetworkSettings"]["Ports"] or {}).values() if bindings for b in bindings}
    assert live == want
    # Another project, created (not started) with an override: the engine's bindings follow it,
    # PostgreSQL (not encrypted) stays on loopback unless POSTGRES_BIND_ADDRESS says otherwise.
    other = ComposeStack(stack.engine, "dsdbind", wheel_url=stack.env["SWEEP_TEST_WHEEL_URL"],
                         env_file=stack.env_file, env={"SWEEP_BIND_ADDRESS": "127.0.0.2"})
    try:
        other.compose("create", "--no-build", "proxy")
        assert _published(other.containers("proxy")) == {
            *(("127.0.0.2", str(other.ports[v])) for v in web), ("127.0.0.1", str(other.ports["POSTGRES_PORT"]))}
    finally:
        other.compose("down", "-v", check=False)


def test_beyond_loopback_the_proxy_refuses_development_passwords_and_serves_tls(stack: ComposeStack) -> None:
    public = ["-e", "SWEEP_BIND_ADDRESS=0.0.0.0"]
    weak = stack.compose("run", "--rm", "--no-deps", *public, "proxy", check=False,
                         env={"MLFLOW_DB_PASSWORD": "mlflow"})
    assert weak.returncode != 0
    assert "secret mlflow_db_password is a development password; run docker/new-env.sh" in weak.stderr, weak.stderr
    name = f"{stack.project}-tls-probe"
    stack.compose("run", "-d", "--no-deps", "--name", name, *public, "proxy")
    try:
        probe = ("import ssl, time, urllib.request as u\n"
                 "ctx = ssl.create_default_context(cafile='/certs/ca.crt')\n"
                 "for _ in range(50):\n"
                 "    try:\n"
                 "        print(u.urlopen('https://localhost:5000/health', context=ctx, timeout=5).status); break\n"
                 "    except OSError: time.sleep(0.2)\n")
        assert stack.engine.docker("exec", name, "python", "-c", probe).stdout.split() == ["200"]
        logs = stack.engine.docker("logs", name).stdout
        assert "proxy: TLS on, published on 0.0.0.0" in logs, logs
    finally:
        stack.engine.docker("rm", "-f", name, check=False)


# --------------------------------------------------------------------------
# restarts, the login preflight, backup and restore


def test_down_then_up_keeps_study_runs_artifacts_and_the_login(
    stack: ComposeStack, team_sweep: TeamSweep, tmp_path: Path
) -> None:
    from test_sweep_team import _assert_study_mirrored

    volumes = stack.volumes()
    assert volumes == {f"dsdtest_{v}" for v in ("postgres-data", "mlflow-artifacts", "mlflow-auth", "stack-certs")}
    stack.compose("down")
    assert stack.ps() == {}
    assert stack.volumes() == volumes  # nothing anonymous either
    # The plain command the docs give: the login stays (it is in the one compose file).
    stack.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
    _assert_healthy(stack, SERVERS)
    assert_login_required(stack)
    _assert_study_mirrored(team_sweep.storage, team_sweep.tracking_uri, STUDY, 6)
    assert_report_downloads(team_sweep, tmp_path / "after-restart", STUDY)


def test_a_missing_login_is_exit_2_before_training(stack: ComposeStack, tmp_path: Path) -> None:
    env = {k: v for k, v in sweep_env(tmp_path).items() if not k.startswith("MLFLOW_TRACKING_")}
    proc = subprocess.run([*SWEEP, "run", "--study", "compose-no-login", "--storage", stack.storage_url(),
                           "--tracking-uri", stack.url("MLFLOW_PORT"), "--trials", "2", "--epochs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in proc.stderr, proc.stderr
    assert not (tmp_path / ".sweep").exists()


def test_backup_down_v_restore_gives_back_every_study_run_metric_artifact_and_user(
    stack: ComposeStack, team_sweep: TeamSweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.client import AuthServiceClient

    AuthServiceClient(stack.url("MLFLOW_PORT")).create_user("carol", "carol-password-1234")  # docs/team.md, "Users"
    before = fingerprint(stack, tmp_path / "before")
    assert STUDY in before["studies"] and len(before["runs"]) >= 7 and "carol" in before["users"]
    assert any(a for *_, a in before["runs"].values())
    backup(stack, tmp_path / "backup")
    stack.compose("down", "-v")
    assert stack.volumes() == set()
    stack.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
    assert http(f"{stack.url('MLFLOW_PORT')}/api/2.0/mlflow/users/get?username=carol",
                 auth=("carol", "carol-password-1234"))[0] == 401  # empty again
    restore(stack, tmp_path / "backup")
    _assert_healthy(stack, SERVERS)
    assert fingerprint(stack, tmp_path / "after") == before
    assert http(f"{stack.url('MLFLOW_PORT')}/api/2.0/mlflow/users/get?username=carol",
                 auth=("carol", "carol-password-1234"))[0] == 200


# --------------------------------------------------------------------------
# the dask profile


@pytest.fixture(scope="module")
def dask_stack(stack: ComposeStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The `dask` profile with two workers; the client's Dask variables."""
    stack.compose("--profile", "dask", "up", "-d", "--build", "--scale", "dask-worker=2", "--wait",
                  "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 900)
    _assert_healthy(stack, SERVERS | {"dask-scheduler"})
    return client_certs(stack, tmp_path_factory.mktemp("dask-certs"))


@pytest.mark.filterwarnings("ignore:Mismatched versions found")
def test_a_dask_client_without_the_certificate_is_refused(stack: ComposeStack, dask_stack: dict[str, str],
                                                         tmp_path: Path) -> None:
    import distributed
    from distributed.security import Security

    port = stack.ports["DASK_SCHEDULER_PORT"]
    with pytest.raises((OSError, TimeoutError)):
        distributed.Client(f"tcp://127.0.0.1:{port}", timeout=10)
    # A certificate of its own (not from the stack's CA) is refused too.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=intruder", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(tmp_path / "c.pem")], check=True, capture_output=True)
    own = Security(tls_ca_file=dask_stack["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"], require_encryption=True,
                   tls_client_cert=str(tmp_path / "c.pem"), tls_client_key=str(tmp_path / "k.pem"))
    with pytest.raises((OSError, TimeoutError)):
        distributed.Client(f"tls://127.0.0.1:{port}", security=own, timeout=10)
    team = Security(tls_ca_file=dask_stack["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"],
                    tls_client_cert=dask_stack["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"],
                    tls_client_key=dask_stack["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"], require_encryption=True)
    with distributed.Client(f"tls://127.0.0.1:{port}", security=team, timeout=30) as client:
        assert sorted(client.nthreads().values()) == [1, 1]


@pytest.mark.filterwarnings("ignore:Mismatched versions found")
def test_dask_profile_runs_the_trials_in_both_worker_containers(stack: ComposeStack, dask_stack: dict[str, str],
                                                                tmp_path: Path) -> None:
    import optuna

    from sweep.search.study import WORKER_ATTR
    from sweep.tracking import spool
    from test_sweep_team import _assert_study_mirrored, _server_runs

    hostnames = {c["Config"]["Hostname"] for c in stack.containers("dask-worker")}
    assert len(hostnames) == 2
    scheduler = f"tls://127.0.0.1:{stack.ports['DASK_SCHEDULER_PORT']}"
    name, storage, tracking = "compose-dask", stack.storage_url(), stack.url("MLFLOW_PORT")
    out = _sweep(tmp_path, "run", "--study", name, "--storage", storage, "--tracking-uri", tracking,
                 "--dask-scheduler", scheduler, "--trials", "6", "--epochs", "2", env=dask_stack)
    assert "6/6" in out and "best trial" in out, out
    _assert_study_mirrored(storage, tracking, name, 6)  # every trial's curve is in MLflow
    # The parent names the best trial, though its weights (so its test accuracy) stayed in a container.
    study = optuna.load_study(study_name=name, storage=storage)
    parent = _server_runs(tracking, name)[1]["study"]
    assert parent.data.tags.get("best_trial") == str(study.best_trial.number), parent.data.tags
    assert "test_acc n/a" in out, out
    # Each trial records the host that ran it (sweep.search.study.WORKER_ATTR): both containers did.
    trials = study.get_trials()
    ran_on = [t.system_attrs[WORKER_ATTR]["host"] for t in trials]
    assert set(ran_on) == hostnames, ran_on
    # The events came back with the results (no shared folder), naming the same hosts.
    spool_hosts = [spool.read_state(p).start["host"] for p in spool.spool_files(tmp_path / ".sweep" / name / "spool")]
    assert sorted(spool_hosts) == sorted(ran_on)


def test_a_worker_killed_mid_trial_does_not_hang_the_sweep(stack: ComposeStack, dask_stack: dict[str, str],
                                                           tmp_path: Path) -> None:
    import optuna

    from sweep.search.study import WORKER_ATTR

    scheduler = f"tls://127.0.0.1:{stack.ports['DASK_SCHEDULER_PORT']}"
    name, storage = "compose-dask-kill", stack.storage_url()
    # Long trials (the first ones are never pruned): the kill lands mid-trial.
    proc = subprocess.Popen([*SWEEP, "run", "--study", name, "--storage", storage,
                             "--tracking-uri", stack.url("MLFLOW_PORT"), "--dask-scheduler", scheduler,
                             "--trials", "4", "--epochs", "150"],
                            cwd=tmp_path, env={**sweep_env(tmp_path), **dask_stack},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim, deadline = None, time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                running = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials()
                           if t.state.name == "RUNNING" and WORKER_ATTR in t.system_attrs]
            except KeyError:
                continue
            if running:
                victim = running[0]
        assert victim is not None, "no trial started on a worker"
        host = victim.system_attrs[WORKER_ATTR]["host"]
        ids = [c["Id"] for c in stack.containers("dask-worker") if c["Config"]["Hostname"] == host]
        stack.engine.docker("kill", *ids)
        out, _ = proc.communicate(timeout=600)  # hangs -> TimeoutExpired fails the test
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "4/4" in out and "best trial" in out, out
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 4, [t.state for t in trials]
    # The killed trial failed (Optuna's heartbeat, in a later task's check, or the sweep's own
    # `ran on a Dask worker that is gone` line once its tasks ran out) and was trained again.
    assert trials[victim.number].state.name == "FAIL", out
    assert "in another sweep process" not in out
    assert [t.params for t in trials].count(trials[victim.number].params) == 2
    # Bring the killed worker back as the docs say (a killed container stays down).
    stack.compose("--profile", "dask", "up", "-d", "--scale", "dask-worker=2", "--wait",
                  "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)


@pytest.mark.filterwarnings("ignore:Mismatched versions found")
def test_a_second_machine_joins_as_a_worker_through_the_proxy_with_the_team_certificate(
    stack: ComposeStack, dask_stack: dict[str, str], tmp_path: Path
) -> None:
    """docs/team.md's `dask worker tls://stackhost:8786 ... --host`: this host plays the other machine."""
    import os
    import signal

    import distributed
    import optuna
    from distributed.security import Security

    from sweep.search.study import WORKER_ATTR

    stack.compose("--profile", "dask", "up", "-d", "--scale", "dask-worker=0", "--wait",
                  "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
    # This machine, as the containers reach it: the compose network's gateway.
    here = stack.engine.inspect(f"{stack.project}_default")[0]["IPAM"]["Config"][0]["Gateway"]
    port = stack.ports["DASK_SCHEDULER_PORT"]
    certs = {k.rsplit("__", 1)[-1].lower(): v for k, v in dask_stack.items() if "TLS" in k}
    with open(tmp_path / "worker.log", "wb") as log:  # the child keeps its own descriptor
        worker = subprocess.Popen(
            [str(Path(SWEEP[0]).parent / "dask"), "worker", f"tls://127.0.0.1:{port}", "--nworkers", "2",
             "--nthreads", "1", "--no-dashboard", "--tls-ca-file", certs["ca_file"], "--tls-cert", certs["cert"],
             "--tls-key", certs["key"], "--host", here],
            cwd=tmp_path, env=sweep_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        team = Security(tls_ca_file=certs["ca_file"], tls_client_cert=certs["cert"], tls_client_key=certs["key"],
                        require_encryption=True)
        with distributed.Client(f"tls://127.0.0.1:{port}", security=team, timeout=30) as client:
            try:
                client.wait_for_workers(2, timeout=180)
            except Exception:  # WorkerStartTimeoutError: say why, from the worker's own output
                raise AssertionError((tmp_path / "worker.log").read_text()[-3000:]) from None
            pids = set(client.run(os.getpid).values())
        name, storage = "compose-dask-remote", stack.storage_url()
        out = _sweep(tmp_path, "run", "--study", name, "--storage", storage, "--tracking-uri",
                     stack.url("MLFLOW_PORT"), "--dask-scheduler", f"tls://127.0.0.1:{port}", "--trials", "4",
                     "--epochs", "2", env=dask_stack)
        assert "4/4" in out and "best trial" in out, out
        ran_in = {t.system_attrs[WORKER_ATTR]["pid"]
                  for t in optuna.load_study(study_name=name, storage=storage).get_trials()}
        assert ran_in <= pids, (ran_in, pids)  # every trial in the joined worker processes
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
