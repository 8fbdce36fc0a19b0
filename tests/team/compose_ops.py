"""What a person does to the live stack in tests/team/test_compose_live.py, as the
docs give it: HTTP with a login, compose commands with binary stdin/stdout
(dumps, tars), backup and restore (docs/team.md), fingerprints of everything
the stack holds, the team's Dask certificate.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

from compose_engine import ComposeStack

# Passed to compose's --wait-timeout: the stack must be healthy within this.
UP_TIMEOUT_S = 600


def http(url: str, *, auth: tuple[str, str] | None = None, timeout: float = 10,
          method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()



def compose_io(stack: ComposeStack, *args: str, stdin: Path | None = None, stdout: Path | None = None) -> None:
    """A compose command with binary stdin/stdout files (dumps, tars), as a person runs it in a shell."""
    files = [a for f in stack.files for a in ("-f", str(f))]
    argv = ["docker", "compose", "--env-file", str(stack.env_file), "-p", stack.project, *files, *args]
    env = {**os.environ, **stack.engine.env, **stack.env}
    with (open(stdin, "rb") if stdin else open(os.devnull, "rb")) as fin, \
            (open(stdout, "wb") if stdout else open(os.devnull, "wb")) as fout:
        proc = subprocess.run(argv, stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=env, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr.decode()[-3000:]}"


def backup(stack: ComposeStack, folder: Path) -> None:
    """docs/team.md, "Back up": both databases, the MLflow files (artifacts, users), the certificates."""
    folder.mkdir()
    for db in ("mlflow", "optuna"):
        compose_io(stack, "exec", "-T", "postgres", "pg_dump", "-U", "postgres", "--clean", "--if-exists", db,
                    stdout=folder / f"{db}.sql")
    compose_io(stack, "exec", "-T", "mlflow", "tar", "-cf", "-", "-C", "/mlflow", "artifacts", "auth",
                stdout=folder / "mlflow-files.tar")
    compose_io(stack, "run", "--rm", "--no-deps", "-T", "--entrypoint", "tar", "certs", "-cf", "-", "-C", "/certs", ".",
                stdout=folder / "certs.tar")


def restore(stack: ComposeStack, folder: Path) -> None:
    """docs/team.md, "Restore": into a stack just started on empty volumes."""
    stack.compose("stop", "proxy", "mlflow", "optuna-dashboard")
    for db in ("mlflow", "optuna"):
        compose_io(stack, "exec", "-T", "postgres", "psql", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
                    "-d", db, stdin=folder / f"{db}.sql")
    compose_io(stack, "run", "--rm", "--no-deps", "-T", "--entrypoint", "tar", "mlflow", "-xf", "-", "-C", "/mlflow",
                stdin=folder / "mlflow-files.tar")
    compose_io(stack, "run", "--rm", "--no-deps", "-T", "--entrypoint", "tar", "certs", "-xpf", "-", "-C", "/certs",
                stdin=folder / "certs.tar")
    stack.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)


def fingerprint(stack: ComposeStack, download: Path) -> dict[str, Any]:
    """Every study and trial, every experiment, run, metric history and artifact byte, the users."""
    import hashlib

    import optuna
    from mlflow.tracking import MlflowClient

    storage = stack.storage_url()
    studies = {}
    for summary in optuna.get_all_study_summaries(storage):
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
        studies[summary.study_name] = [(t.number, t.state.name, t.params, t.values, t.intermediate_values,
                                        t.user_attrs, t.system_attrs) for t in trials]
    client = MlflowClient(tracking_uri=stack.url("MLFLOW_PORT"))
    runs = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            rid = run.info.run_id
            target = download / rid
            target.mkdir(parents=True)
            root = Path(client.download_artifacts(rid, "", str(target)))
            artifacts = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in sorted(root.rglob("*")) if p.is_file()}
            runs[rid] = (exp.name, run.info.status, run.data.params, run.data.tags,
                         {k: [(m.step, m.value) for m in client.get_metric_history(rid, k)] for k in run.data.metrics},
                         artifacts)
    users = stack.compose("exec", "-T", "mlflow", "python", "-c",
                          "import sqlite3; print(sorted(sqlite3.connect('/mlflow/auth/basic_auth.db')"
                          ".execute('select username, password_hash from users')))").stdout
    return {"studies": studies, "runs": runs, "users": users}


def client_certs(stack: ComposeStack, folder: Path) -> dict[str, str]:
    """docs/team.md: the team's Dask certificate, as the Dask config variables `sweep run` reads."""
    import tarfile

    folder.mkdir(exist_ok=True)
    compose_io(stack, "run", "--rm", "--no-deps", "-T", "certs", "client", stdout=folder / "team-certs.tar")
    with tarfile.open(folder / "team-certs.tar") as tar:
        tar.extractall(folder, filter="data")
    certs = folder / "stack-certs"
    assert oct((certs / "dask-client.key").stat().st_mode & 0o777) == "0o600"
    return {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(certs / "ca.crt"),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(certs / "dask-client.crt"),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(certs / "dask-client.key"),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true"}


def endpoints(stack: ComposeStack) -> list[tuple[str, str]]:
    """(method, URL) of what a person can reach on the published web ports."""
    mlflow, dashboard = stack.url("MLFLOW_PORT"), stack.url("OPTUNA_DASHBOARD_PORT")
    return [
        ("GET", f"{mlflow}/"), ("GET", f"{mlflow}/static-files/index.html"), ("GET", f"{mlflow}/version"),
        ("GET", f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"),
        ("GET", f"{mlflow}/ajax-api/2.0/mlflow/experiments/search?max_results=1"),
        ("POST", f"{mlflow}/api/2.0/mlflow/users/create"),
        ("GET", f"{dashboard}/"), ("GET", f"{dashboard}/dashboard"), ("GET", f"{dashboard}/api/meta"),
        ("GET", f"{dashboard}/api/studies"), ("DELETE", f"{dashboard}/api/studies/1"),
    ]


def dashboard_trials(stack: ComposeStack, study: str) -> list[dict[str, Any]]:
    base = stack.url("OPTUNA_DASHBOARD_PORT")
    status, body = http(f"{base}/api/studies", auth=stack.admin)
    assert status == 200, body[:500]
    ids = [s["study_id"] for s in json.loads(body)["study_summaries"] if s["study_name"] == study]
    assert len(ids) == 1, body[:1000]
    status, body = http(f"{base}/api/studies/{ids[0]}?after=0", auth=stack.admin)
    assert status == 200, body[:500]
    return json.loads(body)["trials"]


def report_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_report_downloads(sw: Any, target: Path, study: str) -> None:
    """The report folder comes back, byte for byte, through MLflow's artifact proxy."""
    from mlflow.tracking import MlflowClient

    from sweep_helpers import mlflow_runs

    _, parents, _ = mlflow_runs(None, study, tracking_uri=sw.tracking_uri)
    parent = parents["study"]
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/"), parent.info.artifact_uri  # proxied
    client = MlflowClient(tracking_uri=sw.tracking_uri)
    got = Path(client.download_artifacts(parent.info.run_id, "report", str(target)))
    expected = report_files(sw.report)
    assert "report.md" in expected and any(name.endswith(".png") for name in expected), sorted(expected)
    assert report_files(got) == expected


def assert_login_required(stack: ComposeStack) -> None:
    for method, url in endpoints(stack):
        assert http(url, method=method)[0] == 401, (method, url)
        assert http(url, method=method, auth=("admin", "wrong-password-123"))[0] == 401, (method, url)
    assert http(f"{stack.url('MLFLOW_PORT')}/health")[0] == 200  # liveness needs no login
    assert http(f"{stack.url('MLFLOW_PORT')}/api/2.0/mlflow/experiments/search?max_results=1",
                 auth=stack.admin)[0] == 200
    assert http(f"{stack.url('OPTUNA_DASHBOARD_PORT')}/api/studies", auth=stack.admin)[0] == 200
