"""The MLflow login is checked before anything is trained: a missing or wrong
credential, or a user without EDIT on the study's experiment, is one line
naming the variable to set and exit code 2, never an "unreachable" outage.

Against a real `mlflow server --app-name basic-auth` (the stack's auth app,
with the stack's basic_auth.ini pointed at a local users database).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sweep_helpers import SWEEP, sweep_env

pytest.importorskip("flask_wtf", reason="Flask-WTF (mlflow[auth], installed in the image) is not installed here")

ADMIN_PASSWORD = "preflight-admin-password"
INI = Path(__file__).resolve().parents[2] / "docker" / "mlflow" / "basic_auth.ini"


@dataclass
class AuthServer:
    url: str


@pytest.fixture(scope="module")
def auth_server(mlflow_server_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    folder = tmp_path_factory.mktemp("mlflow-auth")
    ini = folder / "basic_auth.ini"
    ini.write_text(INI.read_text().replace("sqlite:////mlflow/auth/basic_auth.db", f"sqlite:///{folder}/auth.db"))
    env = {"MLFLOW_FLASK_SERVER_SECRET_KEY": "s" * 32, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    server = mlflow_server_factory(f"sqlite:///{folder}/mlflow.db", extra_args=["--app-name", "basic-auth"], env=env)
    yield AuthServer(server.url)


def _run(tmp_path: Path, url: str, study: str, login: dict[str, str]) -> tuple[int, str]:
    import subprocess

    env = {k: v for k, v in sweep_env(tmp_path).items() if not k.startswith("MLFLOW_TRACKING_")}
    proc = subprocess.run([*SWEEP, "run", "--study", study, "--tracking-uri", url, "--trials", "1", "--epochs", "1"],
                          cwd=tmp_path, env={**env, **login}, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _add_user_and_experiment(url: str, admin: tuple[str, str], *, user: str, password: str, experiment: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What docs/team.md tells an admin to run: add a user; here also an experiment someone else made."""
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    AuthServiceClient(url).create_user(user, password)
    MlflowClient(url).create_experiment(experiment)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")


def test_no_login_is_exit_2_naming_the_variables(auth_server: AuthServer, tmp_path: Path) -> None:
    code, out = _run(tmp_path, auth_server.url, "no-login", {})
    assert code == 2, out
    assert "asks for a login (HTTP 401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in out
    assert "unreachable" not in out and "trial" not in out.lower().replace("--trials", "")
    assert not (tmp_path / ".sweep").exists()  # nothing trained or recorded


def test_a_wrong_password_is_exit_2_and_the_password_is_not_shown(auth_server: AuthServer, tmp_path: Path) -> None:
    code, out = _run(tmp_path, auth_server.url, "wrong-login",
                     {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-the-password-123"})
    assert code == 2, out
    assert "does not accept the login of user 'admin' (HTTP 401)" in out and "MLFLOW_TRACKING_PASSWORD" in out
    assert "not-the-password-123" not in out
    assert len(out.strip().splitlines()) == 1, out


def test_read_only_on_the_experiment_is_exit_2_and_a_grant_lets_the_sweep_log(
    auth_server: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = ("admin", ADMIN_PASSWORD)
    bob = {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": "bob-password-1234"}
    _add_user_and_experiment(auth_server.url, admin, user="bob", password=bob["MLFLOW_TRACKING_PASSWORD"],
                             experiment="shared", monkeypatch=monkeypatch)
    (tmp_path / "read").mkdir()
    code, out = _run(tmp_path / "read", auth_server.url, "shared", bob)
    assert code == 2, out
    assert "MLflow user 'bob' has READ permission on experiment 'shared'" in out and "needs EDIT" in out, out
    assert "unreachable" not in out

    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    experiment_id = MlflowClient(auth_server.url).get_experiment_by_name("shared").experiment_id
    AuthServiceClient(auth_server.url).grant_user_permission("bob", "experiment", experiment_id, "EDIT")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    (tmp_path / "edit").mkdir()
    code, out = _run(tmp_path / "edit", auth_server.url, "shared", bob)
    assert code == 0, out
    assert "best trial" in out
