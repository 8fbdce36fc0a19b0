"""Static checks of docker-compose.yml and docker/ (no engine needed).

tests/team/test_services.py then runs the same commands for real.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    PG_INIT_SCRIPT,
    REPO_ROOT,
    find_pg_bin,
    interpolate,
    load_compose,
    load_compose_raw,
    parse_env_file,
    service_command,
    service_environment,
    variables_in,
    walk_strings,
)

PROXY_TEMPLATE = REPO_ROOT / "docker" / "proxy" / "nginx.conf.template"
SERVICES = {"postgres", "mlflow", "optuna-schema", "optuna-dashboard", "certs", "proxy"}
DASK_SERVICES = {"dask-scheduler", "dask-worker"}  # profile `dask` only
# The secrets docker/new-env.sh writes to .env (compose refuses to start without them).
SECRET_ENV = {name: f"{name.lower()}-value" for name in (
    "POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "OPTUNA_DB_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MLFLOW_AUTH_ADMIN_PASSWORD")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


# --------------------------------------------------------------------------
# the interpolation the other checks rely on


def test_interpolate_follows_compose_rules() -> None:
    assert interpolate("${A:-x}") == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("${A:-x}/${B}", {"A": "1", "B": "2"}) == "1/2"
    assert interpolate("$$HOME and $A", {"A": "a"}) == "$HOME and a"
    assert interpolate("${A:+on}", {"A": "1"}) == "on" and interpolate("${A:+on}") == ""
    with pytest.raises(ValueError, match="A is required: set it"):
        interpolate("${A:?set it}")
    with pytest.raises(ValueError, match="malformed"):
        interpolate("${A:-x")
    assert [v.name for v in variables_in("$$X ${A:-1} $B")] == ["A", "B"]


# --------------------------------------------------------------------------
# services, images, health


def test_stack_has_postgres_mlflow_and_the_dashboard(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES | DASK_SERVICES
    # `docker compose up` starts the tracking stack; the Dask cluster only with --profile dask.
    profiles = {name: s.get("profiles") for name, s in compose["services"].items()}
    assert {name for name, p in profiles.items() if p is None} == SERVICES
    assert all(profiles[name] == ["dask"] for name in DASK_SERVICES)


def test_dask_services_run_the_project_image_single_threaded(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["dask-scheduler"]["build"] == services["dask-worker"]["build"] == {
        "context": ".", "dockerfile": "docker/sweep/Dockerfile"}
    assert services["dask-scheduler"]["image"] == services["dask-worker"]["image"]
    assert services["dask-scheduler"]["image"].rpartition(":")[2] == importlib.metadata.version("dropout-sweep")
    worker = service_command(compose, "dask-worker")
    dask = worker[worker.index("--") + 1:]
    assert dask[:3] == ["dask", "worker", "tls://dask-scheduler:8786"]  # TLS only (mutual authentication)
    for service in ("dask-scheduler", "dask-worker"):
        argv = service_command(compose, service)
        assert [argv[argv.index(f) + 1] for f in ("--tls-ca-file", "--tls-cert", "--tls-key")] == [
            "/certs/ca.crt", "/certs/dask-node.crt", "/certs/dask-node.key"], service
        assert service_environment(compose, service)["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"
    scheduler = service_command(compose, "dask-scheduler")
    assert scheduler[scheduler.index("--protocol") + 1] == "tls"
    assert dask[dask.index("--nworkers") + 1] == "1" and dask[dask.index("--nthreads") + 1] == "1"
    # The storage URL `sweep run` hands its workers (the host's published port) is relayed to postgres.
    assert worker[:3] == ["python", "/usr/local/lib/sweep/loopback_forward.py", "5432=postgres:5432"]
    assert load_compose(COMPOSE_FILE, {"POSTGRES_PORT": "6543"})["services"]["dask-worker"]["command"][2] == \
        "6543=postgres:5432"
    assert "sweep-data:/data" in services["dask-worker"]["volumes"]
    dockerfile = (REPO_ROOT / "docker" / "sweep" / "Dockerfile").read_text()
    assert "ENV SWEEP_DATA_DIR=/data" in dockerfile
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in dockerfile


def test_images_are_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: image {image!r} has no pinned tag"
    mlflow_tag = compose["services"]["mlflow"]["image"].rpartition(":")[2]
    dashboard_tag = compose["services"]["optuna-dashboard"]["image"].rpartition(":")[2]
    assert mlflow_tag == _pins("mlflow")["mlflow"]
    assert dashboard_tag == _pins("optuna-dashboard")["optuna-dashboard"]


def test_postgres_image_is_the_major_version_the_fixtures_run(compose: dict[str, Any]) -> None:
    tag = compose["services"]["postgres"]["image"].rpartition(":")[2]
    major = re.match(r"\d+", tag)
    assert major, tag
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("no local PostgreSQL binaries to compare the image with")
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"\) {major.group()}\.", out), f"image {tag} vs local {out.strip()}"


def _pins(image_dir: str) -> dict[str, str]:
    """name -> version from docker/<image_dir>/requirements.txt (extras dropped)."""
    pins = {}
    for line in (REPO_ROOT / "docker" / image_dir / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[a-z,]+\])?==([0-9][0-9A-Za-z.]*)", line)
        assert m, f"docker/{image_dir}/requirements.txt: {line!r} is not pinned with =="
        pins[m.group(1).lower()] = m.group(2)
    return pins


@pytest.mark.parametrize("image_dir", ["mlflow", "optuna-dashboard", "sweep"])
def test_image_requirements_are_the_versions_tested_here(image_dir: str) -> None:
    pins = _pins(image_dir)
    assert pins
    for name, version in pins.items():
        installed = importlib.metadata.version(name)
        assert installed == version, f"docker/{image_dir}: {name}=={version} but the tests run {installed}"


def test_project_image_pins_every_dependency_of_the_project_and_its_team_extra() -> None:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["team"]]
    names = {re.match(r"[A-Za-z0-9_.-]+", req).group().lower() for req in wanted}
    names = {"distributed" if n == "dask" else n for n in names} | {"dask"}  # dask[distributed]
    assert names <= set(_pins("sweep")), names - set(_pins("sweep"))


@pytest.mark.parametrize("image_dir", ["mlflow", "optuna-dashboard"])
def test_dockerfiles_install_their_requirements(compose: dict[str, Any], image_dir: str) -> None:
    dockerfile = (REPO_ROOT / "docker" / image_dir / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", dockerfile, re.M)
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in dockerfile
    contexts = {Path(s["build"]["context"]).name for s in compose["services"].values() if "build" in s}
    assert image_dir in contexts


def test_servers_have_healthchecks_and_dependents_wait_for_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    one_shots = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shots == {"optuna-schema", "certs"}
    for name, service in services.items():
        if name not in one_shots:
            test = service.get("healthcheck", {}).get("test")
            assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition per service"
        for dep, rule in depends.items():
            expected = "service_completed_successfully" if dep in one_shots else "service_healthy"
            if name == "proxy" and dep not in one_shots:
                expected = "service_started"  # nginx starts without them (resolves names per request)
            assert rule == {"condition": expected}, f"{name} -> {dep}: {rule}"
    assert set(services["mlflow"]["depends_on"]) == {"postgres"}
    assert set(services["optuna-dashboard"]["depends_on"]) == {"postgres", "optuna-schema"}


# --------------------------------------------------------------------------
# variables, ports, volumes


def _all_variables() -> list[Any]:
    raw = [load_compose_raw(COMPOSE_FILE)]
    return [v for doc in raw for text in walk_strings(doc) for v in variables_in(text)]


def test_every_variable_has_a_default_or_is_required_and_documented() -> None:
    assigned, commented = parse_env_file(ENV_EXAMPLE)
    used = _all_variables()
    assert used
    for var in used:
        assert var.op in (":-", ":?"), f"${{{var.name}}} needs :-default or :?error"
        assert var.name in assigned or var.name in commented, f"{var.name} is not in docker/env.example"
        if var.default is not None:
            # Copying env.example to .env must change nothing.
            assert assigned.get(var.name) == var.default, f"{var.name}: env.example {assigned.get(var.name)!r} vs compose {var.default!r}"
        if var.required:
            assert var.name in commented and var.name not in assigned, f"{var.name} must not ship a value"
    # The same default everywhere a variable is used, and no stale documentation.
    defaults: dict[str, set[str]] = {}
    for var in used:
        if var.default is not None:
            defaults.setdefault(var.name, set()).add(var.default)
    assert all(len(values) == 1 for values in defaults.values()), defaults
    assert set(assigned) | (commented - set(SECRET_ENV)) == {v.name for v in used}
    # The secrets are documented there without a value (docker/new-env.sh makes them).
    assert set(SECRET_ENV) <= commented and not set(SECRET_ENV) & set(assigned)


def test_passwords_are_secrets_and_in_no_command_or_environment(compose: dict[str, Any]) -> None:
    secrets = compose["secrets"]
    assert {name: spec["environment"] for name, spec in secrets.items()} == {
        "postgres_password": "POSTGRES_PASSWORD", "mlflow_db_password": "MLFLOW_DB_PASSWORD",
        "optuna_db_password": "OPTUNA_DB_PASSWORD", "mlflow_flask_secret_key": "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "mlflow_admin_password": "MLFLOW_AUTH_ADMIN_PASSWORD"}
    for name, service in compose["services"].items():
        text = " ".join(service_command(compose, name) if "command" in service else [])
        assert "://mlflow:" not in text and "://optuna:" not in text, name  # no user:password@ in URLs
        env = service_environment(compose, name)
        assert not set(env) & {"POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "OPTUNA_DB_PASSWORD", "PGPASSWORD",
                               "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"}, name
        # The user the service runs as: RUN_AS (with-secrets.sh drops to it), postgres' own 999, or root.
        user = env.get("RUN_AS", "999:999" if name == "postgres" else "0").split(":")[0]
        assert "user" not in service, name  # Compose hands a secret to a uid only in a root-configured container
        for ref in service.get("secrets", []):
            # Each secret is the service user's, readable by nobody else.
            assert ref["mode"] == 0o400, (name, ref)
            assert ref.get("uid", "0") == user, (name, ref)
        for key, value in env.items():
            if key.endswith("_FILE"):
                assert value.removeprefix("/run/secrets/") in {r["source"] for r in service["secrets"]}, (name, key)
    # The Python services read NAME_FILE through docker/with-secrets.sh.
    for name in ("mlflow", "optuna-schema", "optuna-dashboard", "dask-worker"):
        assert compose["services"][name]["entrypoint"] == ["sh", "/stack/with-secrets.sh"], name
        assert "./docker/with-secrets.sh:/stack/with-secrets.sh:ro" in compose["services"][name]["volumes"]
    script = PG_INIT_SCRIPT.read_text()
    assert 'create_database mlflow "$(read_password MLFLOW_DB_PASSWORD mlflow)"' in script
    assert 'create_database optuna "$(read_password OPTUNA_DB_PASSWORD optuna)"' in script


def test_with_secrets_exports_each_file_variable_and_runs_the_command(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value")
    secret.chmod(0o400)
    env = {"PATH": os.environ["PATH"], "PGPASSWORD_FILE": str(secret)}
    out = subprocess.run(["sh", str(REPO_ROOT / "docker" / "with-secrets.sh"), "sh", "-c",
                          'echo "$PGPASSWORD ${PGPASSWORD_FILE:-unset} $(id -u)"'],
                         env={**env, "RUN_AS": "10001:10001"}, capture_output=True, text=True, check=True).stdout
    # As root (CI) it also drops to RUN_AS.
    assert out.split() == ["s3cret-value", "unset", "10001" if os.geteuid() == 0 else str(os.geteuid())]
    env["PGPASSWORD_FILE"] = str(tmp_path / "missing")
    bad = subprocess.run(["sh", str(REPO_ROOT / "docker" / "with-secrets.sh"), "true"], env=env,
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "cannot read" in bad.stderr and "PGPASSWORD_FILE" in bad.stderr


def test_new_env_writes_a_private_env_file_with_random_secrets_and_never_overwrites(tmp_path: Path) -> None:
    import shutil as sh

    (tmp_path / "docker").mkdir()
    for name in ("new-env.sh", "env.example"):
        sh.copy(REPO_ROOT / "docker" / name, tmp_path / "docker" / name)
    run = subprocess.run(["sh", str(tmp_path / "docker" / "new-env.sh")], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    env_file = tmp_path / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assigned, _ = parse_env_file(env_file)
    for name in SECRET_ENV:
        assert len(assigned[name]) >= 24 and re.fullmatch(r"[A-Za-z0-9_-]+", assigned[name]), name
    assert len({assigned[n] for n in SECRET_ENV}) == len(SECRET_ENV)
    assert assigned["SWEEP_BIND_ADDRESS"] == "127.0.0.1"
    before = env_file.read_text()
    again = subprocess.run(["sh", str(tmp_path / "docker" / "new-env.sh")], capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "not overwriting" in again.stderr
    assert env_file.read_text() == before


def test_only_the_proxy_publishes_ports_on_localhost_unless_told_otherwise() -> None:
    web = ["5000:5000", "8080:8080", "8786:8786"]
    for address in ("127.0.0.1", "0.0.0.0"):
        env = {} if address == "127.0.0.1" else {"SWEEP_BIND_ADDRESS": address}
        compose = load_compose(COMPOSE_FILE, env)
        published = {name: s["ports"] for name, s in compose["services"].items() if "ports" in s}
        # PostgreSQL (not encrypted) stays on loopback unless POSTGRES_BIND_ADDRESS says otherwise.
        assert published == {"proxy": [*(f"{address}:{p}" for p in web), "127.0.0.1:5432:5432"]}
    moved = load_compose(COMPOSE_FILE, {"MLFLOW_PORT": "5050", "POSTGRES_BIND_ADDRESS": "0.0.0.0"})
    assert moved["services"]["proxy"]["ports"][0] == "127.0.0.1:5050:5000"
    assert moved["services"]["proxy"]["ports"][3] == "0.0.0.0:5432:5432"


def test_volumes_are_declared_or_existing_files() -> None:
    compose = load_compose(COMPOSE_FILE)
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/"), volume
            if source == "/dev/null":
                continue  # an optional file not given (the proxy's own certificate)
            if source.startswith((".", "/")):
                # Relative to the project directory, the main file's folder.
                assert (REPO_ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"


def test_init_script_is_executable_bash() -> None:
    # The postgres image executes executable *.sh files and *sources* the others
    # into its entrypoint, where `set -u`/`exit` would leak into it.
    assert os.access(PG_INIT_SCRIPT, os.X_OK)
    staged = subprocess.run(
        ["git", "ls-files", "-s", str(PG_INIT_SCRIPT.relative_to(REPO_ROOT))],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    ).stdout
    if staged:
        assert staged.startswith("100755"), staged
    subprocess.run(["bash", "-n", str(PG_INIT_SCRIPT)], check=True)


# --------------------------------------------------------------------------
# commands, parsed by the real CLIs


def _parse_mlflow(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse `argv` with `mlflow server`'s own click command; `env` is the
    container environment (options such as --allowed-hosts read it)."""
    from mlflow.cli import server

    assert argv[:2] == ["mlflow", "server"]
    for key in list(os.environ):
        if key.startswith("MLFLOW_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return server.make_context("server", argv[2:]).params


def test_mlflow_command_parses_with_the_mlflow_cli(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    service = compose["services"]["mlflow"]
    params = _parse_mlflow(service_command(compose, "mlflow"), service_environment(compose, "mlflow"), monkeypatch)
    assert params["backend_store_uri"] == "postgresql+psycopg2://mlflow@postgres:5432/mlflow"  # PGPASSWORD
    assert params["serve_artifacts"] is True and params["artifacts_only"] is False
    assert params["default_artifact_root"] is None  # so new experiments get mlflow-artifacts:/ URIs
    # Artifacts go to the named volume.
    assert f"mlflow-artifacts:{params['artifacts_destination']}" in service["volumes"]
    # Listens on all container interfaces, on the port published and health-checked.
    assert params["host"] == "0.0.0.0"
    assert "ports" not in service  # only through the proxy
    assert params["port"] == 5000 and "set $mlflow mlflow:5000;" in PROXY_TEMPLATE.read_text()
    assert f"127.0.0.1:{params['port']}/health" in service["healthcheck"]["test"][-1]
    allowed = params["allowed_hosts"].split(",")
    assert {"mlflow", "mlflow:*", "localhost:*", "127.0.0.1:*"} <= set(allowed)
    assert "*" not in allowed
    assert {f"172.{n}.*" for n in range(16, 32)} <= set(allowed)  # Docker's own networks
    assert params["cors_allowed_origins"] is None  # empty variable -> MLflow's localhost default
    # Always MLflow's users and permissions: a plain `up -d` cannot drop the login.
    assert params["app_name"] == "basic-auth"
    env = service_environment(compose, "mlflow")
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/basic_auth.ini"
    mounts = dict(v.split(":")[1::-1] for v in service["volumes"])
    assert mounts["/etc/mlflow/basic_auth.ini"] == "./docker/mlflow/basic_auth.ini"


def test_basic_auth_ini_uses_only_settings_mlflow_knows(compose: dict[str, Any]) -> None:
    import configparser
    import importlib.util

    # The template MLflow ships (read as a file: importing mlflow.server.auth
    # needs Flask-WTF, which only the image installs).
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.origin is not None
    shipped = configparser.ConfigParser()
    assert shipped.read(Path(spec.origin).parent / "server" / "auth" / "basic_auth.ini")
    ours = configparser.ConfigParser()
    ours.read(REPO_ROOT / "docker" / "mlflow" / "basic_auth.ini")
    assert set(ours["mlflow"]) <= set(shipped["mlflow"])
    # The users database sits in the mlflow-auth volume.
    db_path = ours["mlflow"]["database_uri"].removeprefix("sqlite:///")
    auth_volume = next(v for v in compose["services"]["mlflow"]["volumes"] if v.startswith("mlflow-auth:"))
    assert db_path.startswith(auth_volume.split(":")[1] + "/")


def test_dashboard_and_schema_job_use_the_same_optuna_database(compose: dict[str, Any]) -> None:
    dashboard = service_command(compose, "optuna-dashboard")
    schema = service_command(compose, "optuna-schema")
    assert dashboard[0] == "optuna-dashboard" and dashboard[1] == schema[-1]
    port = dashboard[dashboard.index("--port") + 1]
    service = compose["services"]["optuna-dashboard"]
    assert "ports" not in service and port == "8080"  # only through the proxy, behind the login
    assert "set $dashboard optuna-dashboard:8080;" in PROXY_TEMPLATE.read_text()
    assert f"127.0.0.1:{port}/api/meta" in service["healthcheck"]["test"][-1]
    assert dashboard[dashboard.index("--host") + 1] == "0.0.0.0"
    # Same image: the schema job creates tables with the dashboard's Optuna.
    assert compose["services"]["optuna-schema"]["image"] == service["image"]


# --------------------------------------------------------------------------
# docker compose itself, where installed


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if ok.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file_and_shows_no_secret() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose CLI: `docker compose version` fails (plugin not installed) and no docker-compose")
    env = {**os.environ, **SECRET_ENV}
    result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "--env-file", os.devnull, "config"], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not [v for v in SECRET_ENV.values() if v in result.stdout]
