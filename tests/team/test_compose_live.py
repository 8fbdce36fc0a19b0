"""The team stack for real: docker-compose.yml and docker/*/Dockerfile, unchanged, in a Docker engine.

`pytest -m compose` (run by .ci/run after tests/compose/install-docker.sh).
A private dockerd is started for the session (tests/compose_engine.py); the
two Docker Hub images are test-only stand-ins and pip installs from wheels
built on the host (tests/compose/compose.offline.yml). Every request goes to
the stack's ports published on 127.0.0.1.

The tests share one compose project and run in file order: up, a sweep, the
network and ports, a restart (data kept), `down -v` (data gone), basic auth,
the `dask` profile.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
from services import BASIC_AUTH_FILE
from sweep_helpers import SWEEP, sweep_env

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

SERVERS = {"postgres", "mlflow", "optuna-dashboard"}
STUDY = "compose-digits"
# Passed to compose's --wait-timeout: the stack must be healthy within this.
UP_TIMEOUT_S = 600
AUTH_ENV = {"MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 48, "MLFLOW_AUTH_ADMIN_PASSWORD": "compose-admin-password"}


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
    """The stack built and started with `up -d --build --wait`; `down -v` at the end."""
    folder = tmp_path_factory.mktemp("compose")
    started = time.monotonic()
    wheels = serve_wheels(wheel_folder(), folder)
    print(f"\ncompose: wheels {time.monotonic() - started:.0f} s", end="")
    empty_env = folder / "empty.env"  # hermetic: a developer's .env in the checkout is not read
    empty_env.write_text("")
    st = ComposeStack(engine, "dsdtest", wheel_url=wheels.url + "/", env_file=empty_env)
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


def _http(url: str, *, auth: tuple[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


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
    schema = states["optuna-schema"]
    assert [(c["State"], c["ExitCode"]) for c in schema] == [("exited", 0)], schema


# --------------------------------------------------------------------------
# up


def test_the_images_are_the_stand_ins_or_built_here() -> None:
    # Only the two Docker Hub images are stood in for; everything else is built from docker/.
    assert images_used() == {tag for tag, _ in STAND_IN_IMAGES.values()}


def test_up_builds_and_every_service_becomes_healthy(stack: ComposeStack) -> None:
    result = stack.up_result
    assert result.returncode == 0, f"docker compose up failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    assert set(stack.ps()) == SERVERS | {"optuna-schema"}
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


def _dashboard_trials(stack: ComposeStack, study: str) -> list[dict[str, Any]]:
    base = stack.url("OPTUNA_DASHBOARD_PORT")
    status, body = _http(f"{base}/api/studies")
    assert status == 200, body[:500]
    ids = [s["study_id"] for s in json.loads(body)["study_summaries"] if s["study_name"] == study]
    assert len(ids) == 1, body[:1000]
    status, body = _http(f"{base}/api/studies/{ids[0]}?after=0")
    assert status == 200, body[:500]
    return json.loads(body)["trials"]


def _report_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_report_downloads(sw: TeamSweep, target: Path) -> None:
    """The report folder comes back, byte for byte, through MLflow's artifact proxy."""
    from mlflow.tracking import MlflowClient

    from sweep_helpers import mlflow_runs

    _, parents, _ = mlflow_runs(None, STUDY, tracking_uri=sw.tracking_uri)
    parent = parents["study"]
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/"), parent.info.artifact_uri  # proxied
    client = MlflowClient(tracking_uri=sw.tracking_uri)
    got = Path(client.download_artifacts(parent.info.run_id, "report", str(target)))
    expected = _report_files(sw.report)
    assert "report.md" in expected and any(name.endswith(".png") for name in expected), sorted(expected)
    assert _report_files(got) == expected


def test_a_sweep_logs_its_study_runs_curves_and_report_to_the_stack(
    stack: ComposeStack, team_sweep: TeamSweep, tmp_path: Path
) -> None:
    from test_sweep_team import _assert_study_mirrored  # 6 trials, 6 children under one parent, full curves

    _assert_study_mirrored(team_sweep.storage, team_sweep.tracking_uri, STUDY, 6)
    trials = _dashboard_trials(stack, STUDY)
    assert sorted(t["number"] for t in trials) == list(range(6))
    assert all(t["state"] in ("Complete", "Pruned", "Fail") for t in trials), [t["state"] for t in trials]
    assert any(t["intermediate_values"] for t in trials)
    _assert_report_downloads(team_sweep, tmp_path / "download")
    # The proxy wrote them into the mlflow-artifacts volume, under the server's artifact folder.
    found = stack.compose("exec", "-T", "mlflow", "find", "/mlflow/artifacts", "-name", "report.md").stdout
    assert found.strip().endswith("/artifacts/report/report.md"), found


# --------------------------------------------------------------------------
# inside the compose network, and what is published


def test_services_reach_mlflow_by_name_inside_the_network(stack: ComposeStack) -> None:
    probe = ("import urllib.request as u\n"
             "print(u.urlopen('http://mlflow:5000/health', timeout=10).read().decode())\n"
             # A real API call: `mlflow` is one of the Host names MLflow accepts.
             "print(u.urlopen('http://mlflow:5000/api/2.0/mlflow/experiments/search?max_results=1',"
             " timeout=10).status)\n")
    out = stack.compose("exec", "-T", "optuna-dashboard", "python", "-c", probe).stdout.split()
    assert out == ["OK", "200"]


@pytest.mark.parametrize(("role", "other"), [("optuna", "mlflow"), ("mlflow", "optuna")])
def test_each_database_role_reads_only_its_own_database(stack: ComposeStack, role: str, other: str) -> None:
    def psql(database: str) -> subprocess.CompletedProcess[str]:
        # Over TCP through the service name, as the other services connect.
        url = f"postgresql://{role}:{role}@postgres:5432/{database}"
        return stack.compose("exec", "-T", "postgres", "psql", url, "-tAc", "select current_database()",
                             check=False)

    own = psql(role)
    assert own.returncode == 0 and own.stdout.strip() == role, own.stderr
    denied = psql(other)
    assert denied.returncode != 0
    assert f'permission denied for database "{other}"' in denied.stderr, denied.stderr


def _published(containers: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(b["HostIp"], b["HostPort"]) for c in containers
            for bindings in (c["HostConfig"]["PortBindings"] or {}).values() for b in bindings]


def test_ports_are_published_on_127_0_0_1_unless_sweep_bind_address_says_otherwise(stack: ComposeStack) -> None:
    expected = {"postgres": "POSTGRES_PORT", "mlflow": "MLFLOW_PORT", "optuna-dashboard": "OPTUNA_DASHBOARD_PORT"}
    for service in ("postgres", "mlflow", "optuna-dashboard", "optuna-schema"):
        bound = _published(stack.containers(service))
        want = [("127.0.0.1", str(stack.ports[expected[service]]))] if service in expected else []
        assert bound == want, (service, bound)
        # What the engine actually listens on, not only what was asked for.
        live = [(b["HostIp"], b["HostPort"]) for c in stack.containers(service)
                for bindings in (c["NetworkSettings"]["Ports"] or {}).values() if bindings for b in bindings]
        assert live == want, (service, live)
    # Another project, created (not started) with an override: the engine's bindings follow it.
    other = ComposeStack(stack.engine, "dsdbind", wheel_url=stack.env["SWEEP_TEST_WHEEL_URL"],
                         env_file=stack.env_file, env={"SWEEP_BIND_ADDRESS": "127.0.0.2"})
    try:
        other.compose("create", "--no-build", "postgres", "mlflow", "optuna-dashboard")
        for service, var in expected.items():
            assert _published(other.containers(service)) == [("127.0.0.2", str(other.ports[var]))], service
    finally:
        other.compose("down", "-v", check=False)


# --------------------------------------------------------------------------
# restarts


def test_down_then_up_keeps_study_runs_and_artifacts_and_down_v_removes_them(
    stack: ComposeStack, team_sweep: TeamSweep, tmp_path: Path
) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    from test_sweep_team import _assert_study_mirrored

    volumes = stack.volumes()
    assert volumes == {"dsdtest_postgres-data", "dsdtest_mlflow-artifacts"}
    stack.compose("down")
    assert stack.ps() == {}
    assert stack.volumes() == volumes
    stack.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
    _assert_healthy(stack, SERVERS)
    _assert_study_mirrored(team_sweep.storage, team_sweep.tracking_uri, STUDY, 6)
    _assert_report_downloads(team_sweep, tmp_path / "after-restart")

    stack.compose("down", "-v")
    assert stack.volumes() == set()
    stack.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
    _assert_healthy(stack, SERVERS)
    with pytest.raises(KeyError):
        optuna.load_study(study_name=STUDY, storage=team_sweep.storage)
    assert MlflowClient(tracking_uri=team_sweep.tracking_uri).get_experiment_by_name(STUDY) is None


# --------------------------------------------------------------------------
# basic auth


def test_basic_auth_override_asks_for_credentials_and_a_sweep_logs_with_them(
    stack: ComposeStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweep_helpers import mlflow_runs

    auth = stack.with_files(BASIC_AUTH_FILE, env=AUTH_ENV)
    auth.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
    _assert_healthy(auth, SERVERS)
    base = stack.url("MLFLOW_PORT")
    api = f"{base}/api/2.0/mlflow/experiments/search?max_results=10"
    admin = ("admin", AUTH_ENV["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert _http(api)[0] == 401
    assert _http(api, auth=("admin", "wrong-password"))[0] == 401
    assert _http(api, auth=admin)[0] == 200
    assert _http(f"{base}/health")[0] == 200  # the healthcheck needs no login

    creds = {"MLFLOW_TRACKING_USERNAME": admin[0], "MLFLOW_TRACKING_PASSWORD": admin[1]}
    name = "compose-auth"
    _sweep(tmp_path, "run", "--study", name, "--storage", stack.storage_url(), "--tracking-uri", base,
           "--trials", "2", "--jobs", "2", "--epochs", "2", env=creds)
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
    _, parents, children = mlflow_runs(None, name, tracking_uri=base)
    assert list(parents) == ["study"] and len(children) == 2
    # The password is not in what MLflow recorded.
    for run in [*parents.values(), *children]:
        assert admin[1] not in json.dumps({**run.data.params, **run.data.tags})


# --------------------------------------------------------------------------
# the dask profile


@pytest.mark.filterwarnings("ignore:Mismatched versions found")
def test_dask_profile_runs_the_trials_in_both_worker_containers(stack: ComposeStack, tmp_path: Path) -> None:
    import distributed
    import optuna

    from sweep.search.study import WORKER_ATTR
    from sweep.tracking import spool
    from test_sweep_team import _assert_study_mirrored

    # Back to the main file only (the previous test left basic auth on), with the cluster.
    stack.compose("--profile", "dask", "up", "-d", "--build", "--scale", "dask-worker=2", "--wait",
                  "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 900)
    _assert_healthy(stack, SERVERS | {"dask-scheduler"})
    workers = stack.containers("dask-worker")
    assert [c["State"]["Health"]["Status"] for c in workers] == ["healthy", "healthy"]
    hostnames = {c["Config"]["Hostname"] for c in workers}
    assert len(hostnames) == 2
    scheduler = f"tcp://127.0.0.1:{stack.ports['DASK_SCHEDULER_PORT']}"
    with distributed.Client(scheduler, timeout=30) as client:
        # Trials travel as pickles: the image runs the host's versions of what unpickles them.
        # (Python itself is Debian's 3.11.2 in the stand-in; Dask only warns about a patch level.)
        versions = client.get_versions()
        mine = versions["client"]["packages"]
        for worker in versions["workers"].values():
            theirs = worker["packages"]
            for pkg in ("dask", "distributed", "cloudpickle", "msgpack", "toolz", "tornado", "numpy"):
                assert theirs[pkg] == mine[pkg], (pkg, theirs[pkg], mine[pkg])
            assert theirs["python"].split(".")[:2] == mine["python"].split(".")[:2]
        assert sorted(client.nthreads().values()) == [1, 1]

    name, storage, tracking = "compose-dask", stack.storage_url(), stack.url("MLFLOW_PORT")
    out = _sweep(tmp_path, "run", "--study", name, "--storage", storage, "--tracking-uri", tracking,
                 "--dask-scheduler", scheduler, "--trials", "6", "--epochs", "2")
    assert "6/6" in out and "best trial" in out, out
    _assert_study_mirrored(storage, tracking, name, 6)  # every trial's curve is in MLflow
    # Each trial records the host that ran it (sweep.search.study.WORKER_ATTR): both containers did.
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    ran_on = [t.system_attrs[WORKER_ATTR]["host"] for t in trials]
    assert set(ran_on) == hostnames, ran_on
    # The events came back with the results (no shared folder), naming the same hosts.
    spool_hosts = [spool.read_state(p).start["host"] for p in spool.spool_files(tmp_path / ".sweep" / name / "spool")]
    assert sorted(spool_hosts) == sorted(ran_on)
