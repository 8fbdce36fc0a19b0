"""Real services for the tests: PostgreSQL clusters, HTTP servers in subprocesses,
and docker-compose.yml's commands turned into native ones.

Nothing here is mocked. Each helper starts the real program on 127.0.0.1 and
stops it (its whole process group) when done; conftest.py wraps them in fixtures.
Services that cannot run here skip the test with the reason, unless
SWEEP_REQUIRE_SERVICES=1 (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
BASIC_AUTH_INI = REPO_ROOT / "docker" / "mlflow" / "basic_auth.ini"
# The secrets natively: the roles' passwords are the init script's defaults
# (no *_PASSWORD given to it here); the others are test values.
NATIVE_SECRETS = {
    "postgres_password": "postgres", "mlflow_db_password": "mlflow", "optuna_db_password": "optuna",
    "mlflow_flask_secret_key": "s" * 32, "mlflow_admin_password": "native-admin-password",
}
NATIVE_ADMIN = ("admin", NATIVE_SECRETS["mlflow_admin_password"])
ENV_EXAMPLE = REPO_ROOT / "docker" / "env.example"
PG_INIT_SCRIPT = REPO_ROOT / "docker" / "postgres" / "init-databases.sh"

REQUIRE_ENV = "SWEEP_REQUIRE_SERVICES"
PG_BIN_ENV = "SWEEP_PG_BIN"
# Console scripts (mlflow, optuna-dashboard, dask) live next to the interpreter.
VENV_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------
# skipping


def services_required() -> bool:
    """True when SWEEP_REQUIRE_SERVICES=1: a missing service is then a failure."""
    return os.environ.get(REQUIRE_ENV, "").strip() == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the current test because a service cannot run here, or fail under CI.

    Args:
        reason: what is missing and how to get it.
    """
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so the services must run here)", pytrace=False)
    pytest.skip(reason)


def import_or_unavailable(module: str, hint: str) -> Any:
    """Import `module`, or skip/fail like `unavailable` with `hint` as the fix."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        unavailable(f"{module} is not importable ({exc}); {hint}")


# --------------------------------------------------------------------------
# processes


_LIVE: set[ServerProcess] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ServerProcess:
    """An HTTP server run as a subprocess in its own session (process group).

    Stopping signals the whole group, because `mlflow server` and gunicorn fork
    workers that would otherwise outlive their parent.

    Args:
        name: label for messages.
        argv: the command line.
        port: the port the command listens on (127.0.0.1).
        health_path: a path that answers 200 once the server is ready; None
            to wait only for the port to accept TCP connections.
        log_path: file receiving stdout and stderr.
        env: the full environment (default: this process's).
        cwd: working directory (default: the log file's folder).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        health_path: str | None,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.port = port
        self.health_path = health_path
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = Path(cwd) if cwd is not None else self.log_path.parent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """The end of the server's output, for error messages."""
        return _tail(self.log_path)

    def start(self, timeout: float = 180.0) -> ServerProcess:
        """Launch the process and wait until it is ready (see `wait_ready`)."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> ServerProcess:
        """Start the process without waiting, so slow starts can overlap other work."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _LIVE.add(self)
        return self

    def wait_ready(self, timeout: float = 180.0) -> ServerProcess:
        """Wait until `health_path` answers 200 or, without one, `port` accepts
        TCP connections.

        Raises:
            RuntimeError: the process exited or was not ready within `timeout`
                seconds (it is stopped first); the message ends with its log.
        """
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not launched")
        deadline = time.monotonic() + timeout
        target = self.url + self.health_path if self.health_path else f"127.0.0.1:{self.port}"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise RuntimeError(
                    f"{self.name} exited with code {code} before {target} answered;"
                    f" command: {self.argv}\n--- log ---\n{self.log()}"
                )
            ready = http_status(target, timeout=2.0) == 200 if self.health_path else port_open(self.port)
            if ready:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer {target} within {timeout:.0f} s;"
            f" command: {self.argv}\n--- log ---\n{self.log()}"
        )

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace` s."""
        _LIVE.discard(self)
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
        # Workers that ignored SIGTERM or were orphaned by their parent.
        _signal_group(proc.pid, signal.SIGKILL)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int | None, bytes]:
    """Send one HTTP request; return (status, body), status None if nothing answers.

    A ``Host`` entry in `headers` replaces the one taken from `url`.
    """
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None, b""


def http_status(url: str, *, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> int | None:
    """GET `url` and return the status code, or None when nothing answers."""
    return http_request(url, headers=headers, timeout=timeout)[0]


# --------------------------------------------------------------------------
# PostgreSQL


def find_pg_bin() -> Path | None:
    """The folder with initdb, pg_ctl, postgres and psql: $SWEEP_PG_BIN, PATH, or the newest
    /usr/lib/postgresql/<version>/bin (Debian/Ubuntu keep them off PATH)."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        # An explicit choice is the only one tried: no silent fallback.
        candidates = [Path(os.environ[PG_BIN_ENV])]
        return _first_pg_bin(candidates)
    on_path = shutil.which("pg_ctl")
    if on_path:
        # Resolved: a symlink in /usr/local/bin points at the real bin folder.
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(debian)
    return _first_pg_bin(candidates)


def _first_pg_bin(candidates: Sequence[Path]) -> Path | None:
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "psql")):
            return folder
    return None


@dataclass(eq=False)
class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1.

    Host connections use scram-sha-256 passwords, as in the postgres image; the
    unix socket in `root` trusts local users. URLs look like
    ``postgresql+psycopg2://ROLE:PASSWORD@127.0.0.1:PORT/DBNAME``.

    Attributes:
        bin_dir: folder with the PostgreSQL programs.
        root: temporary folder holding data/, the socket and postgres.log.
        port: TCP port on 127.0.0.1.
        superuser: the superuser role (``postgres``).
        password: the superuser's password.
        role_passwords: login roles created by the init script -> password.
    """

    bin_dir: Path
    root: Path
    port: int
    superuser: str = "postgres"
    password: str = "postgres"
    role_passwords: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    options: str = ""  # the postgres command-line options it was started with (for `restart`)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def base_url(self) -> str:
        """Superuser URL without a database: append ``/DBNAME``."""
        return f"postgresql+psycopg2://{self.superuser}:{self.password}@{self.host}:{self.port}"

    def url(self, dbname: str = "postgres", *, role: str | None = None, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of `dbname` for `role` (default: the superuser).

        Args:
            dbname: database name, e.g. ``optuna`` or ``mlflow``.
            role: a role from `role_passwords` (``optuna``, ``mlflow``) or None.
            driver: URL scheme; ``postgresql`` gives a libpq/psycopg2 DSN-style URL.
        """
        if role is None or role == self.superuser:
            user, password = self.superuser, self.password
        elif role in self.role_passwords:
            user, password = role, self.role_passwords[role]
        else:
            raise ValueError(f"role must be None, {self.superuser!r} or one of {sorted(self.role_passwords)}; got {role!r}")
        return f"{driver}://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def client_env(self) -> dict[str, str]:
        """Environment for psql and friends: socket, port, superuser, PATH."""
        env = dict(os.environ)
        env.update(
            PGHOST=str(self.root),
            PGPORT=str(self.port),
            PGUSER=self.superuser,
            PATH=f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def query(self, sql: str, dbname: str = "postgres", *, role: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement over TCP (autocommit) and return its rows ([] if none)."""
        import psycopg2

        dsn = self.url(dbname, role=role, driver="postgresql")
        conn = psycopg2.connect(dsn, connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str, *, owner: str | None = None) -> str:
        """Create an empty database and return its URL for `owner` (default superuser)."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name must match [a-z_][a-z0-9_]*, got {name!r}")
        owner_sql = f' OWNER "{owner}"' if owner else ""
        self.query(f'CREATE DATABASE "{name}"{owner_sql}')
        return self.url(name, role=owner)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions (PostgreSQL >= 13)."""
        self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, *args: str) -> None:
        _run([*_as_postgres(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], f"pg_ctl {args[-1]}",
             log=self.log_file)

    def restart(self, down_seconds: float) -> None:
        """Stop the server (fast: open sessions are cut), keep it down `down_seconds`, start it again."""
        self.down()
        time.sleep(down_seconds)
        self.up()

    def down(self) -> None:
        """Stop the server (fast: open sessions are cut), keeping its data; `up` starts it again."""
        self.pg_ctl("-m", "fast", "-w", "-t", "30", "stop")

    def up(self) -> None:
        self.pg_ctl("-l", str(self.log_file), "-w", "-t", "60", "-o", self.options, "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder."""
        _LIVE_PG.discard(self)
        if (self.data_dir / "postmaster.pid").exists():
            result = subprocess.run(
                [*_as_postgres(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                _kill_postmaster(self.data_dir)
        shutil.rmtree(self.root, ignore_errors=True)


_LIVE_PG: set[PostgresServer] = set()


def _as_postgres() -> list[str]:
    """Prefix that runs a command as the postgres OS user when we are root
    (initdb and postgres refuse to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"]
    return []


def _kill_postmaster(data_dir: Path) -> None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown; children follow


def start_postgres(
    bin_dir: Path,
    *,
    init_script: Path | None = None,
    init_env: Mapping[str, str] | None = None,
    role_passwords: Mapping[str, str] | None = None,
) -> PostgresServer:
    """initdb a fresh cluster in a temp folder, start it, run `init_script`.

    Args:
        bin_dir: folder with initdb, pg_ctl, psql.
        init_script: a docker-entrypoint-initdb.d style shell script, run with
            PGHOST/PGPORT pointing at the new cluster and `init_env` added.
        init_env: extra environment for the script (e.g. POSTGRES_USER, passwords).
        role_passwords: roles the script creates -> their passwords (for `url`).

    Raises:
        RuntimeError: initdb, pg_ctl or the init script failed (output included).
    """
    as_pg = _as_postgres()
    if as_pg:
        try:
            import pwd

            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root but there is no 'postgres' OS user to own the cluster")
    # /tmp itself, not pytest's tmp_path: that one is private to root (0700)
    # and the postgres user could not reach the data folder inside it.
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    server = PostgresServer(bin_dir=bin_dir, root=root, port=free_port(), role_passwords=dict(role_passwords or {}))
    try:
        _LIVE_PG.add(server)
        pwfile = root / "pwfile"
        pwfile.write_text(server.password + "\n")
        if as_pg:
            os.chown(root, pg_user.pw_uid, pg_user.pw_gid)
            os.chown(pwfile, pg_user.pw_uid, pg_user.pw_gid)
        _run(
            [
                *as_pg, str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", server.superuser,
                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ],
            "initdb",
        )
        pwfile.unlink()
        # Durability settings off: a test cluster never survives a crash anyway.
        options = (
            f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        server.options = options
        _run(
            [*as_pg, str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log_file),
             "-w", "-t", "60", "-o", options, "start"],
            "pg_ctl start",
            log=server.log_file,
        )
        if init_script is not None:
            env = server.client_env()
            env.update(init_env or {})
            _run(["bash", str(init_script)], f"init script {init_script.name}", env=env)
    except BaseException:
        server.stop()
        raise
    return server


def _run(argv: Sequence[str], what: str, *, env: Mapping[str, str] | None = None, log: Path | None = None) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, env=dict(env) if env else None, check=False)
    if result.returncode != 0:
        extra = f"\n--- {log} ---\n{_tail(log)}" if log else ""
        raise RuntimeError(f"{what} failed with code {result.returncode}:\n{result.stdout}\n{result.stderr}{extra}")


@atexit.register
def _stop_leftovers() -> None:
    # Safety net for an interpreter exit that skipped fixture teardown.
    for server in list(_LIVE):
        server.stop(grace=5.0)
    for pg in list(_LIVE_PG):
        pg.stop()


# --------------------------------------------------------------------------
# docker-compose.yml


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class ComposeVariable:
    """One ``${NAME...}`` use: `op` is '', '-', ':-', '?', ':?', '+' or ':+'."""

    name: str
    op: str
    arg: str

    @property
    def default(self) -> str | None:
        """The value used when NAME is unset, or None if there is none."""
        return self.arg if self.op in ("-", ":-") else None

    @property
    def required(self) -> bool:
        return self.op in ("?", ":?")


def interpolate(text: str, env: Mapping[str, str] | None = None) -> str:
    """Compose-style interpolation of one string.

    Supports ``$$``, ``$NAME``, ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``,
    ``${NAME:?error}``, ``${NAME?error}``, ``${NAME:+alt}``, ``${NAME+alt}``.

    Args:
        text: the raw value from the YAML file.
        env: variable values; unset names take their defaults (or "").

    Raises:
        ValueError: a required variable is unset/empty, or a ``${`` is malformed.
    """
    env = env or {}

    def replace(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("bare"):
            return env.get(m.group("bare"), "")
        name, op, arg = m.group("name"), m.group("op") or "", m.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and not value):
                raise ValueError(f"compose variable {name} is required: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    result = _VAR.sub(replace, text)
    leftover = _VAR.sub("", text)
    if "${" in leftover:
        raise ValueError(f"malformed ${{...}} in compose value {text!r}")
    return result


def variables_in(text: str) -> list[ComposeVariable]:
    """Every variable used in one string (``$$`` escapes excluded)."""
    found = []
    for m in _VAR.finditer(text):
        if m.group("escaped"):
            continue
        if m.group("bare"):
            found.append(ComposeVariable(m.group("bare"), "", ""))
        else:
            found.append(ComposeVariable(m.group("name"), m.group("op") or "", m.group("arg") or ""))
    return found


def walk_strings(node: Any) -> list[str]:
    """All string values (not keys) in a parsed YAML tree, where compose interpolates."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, Mapping):
        return [s for value in node.values() for s in walk_strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in walk_strings(item)]
    return []


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, Mapping):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    return node


def load_compose_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as YAML, before interpolation."""
    with open(path) as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_compose(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file with variables interpolated from `env` (default: none
    set, so every documented default applies; os.environ is not read, to keep
    tests independent of the caller's shell)."""
    return _interpolate_tree(load_compose_raw(path), env or {})


def service_command(compose: Mapping[str, Any], service: str) -> list[str]:
    """The service's `command` as an argv list."""
    command = compose["services"][service]["command"]
    if isinstance(command, str):
        raise ValueError(f"service {service}: write `command` as a list (exec form)")
    return [str(part) for part in command]


def service_environment(compose: Mapping[str, Any], service: str) -> dict[str, str]:
    """The service's `environment` (mapping or KEY=VALUE list) as a dict."""
    env = compose["services"][service].get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def native_environment(compose: Mapping[str, Any], service: str, *, auth_dir: Path | None = None) -> dict[str, str]:
    """The service's environment as docker/with-secrets.sh leaves it: each NAME_FILE naming
    /run/secrets/S becomes NAME=NATIVE_SECRETS[S]; RUN_AS and HOME (container-only) are dropped.
    With `auth_dir`, MLflow's basic-auth settings point at a users database there."""
    env = {}
    for key, value in service_environment(compose, service).items():
        if key in ("RUN_AS", "HOME"):
            continue
        if key.endswith("_FILE") and value.startswith("/run/secrets/"):
            env[key.removesuffix("_FILE")] = NATIVE_SECRETS[value.removeprefix("/run/secrets/")]
        else:
            env[key] = value
    if auth_dir is not None:
        ini = auth_dir / "basic_auth.ini"
        ini.write_text(BASIC_AUTH_INI.read_text().replace("sqlite:////mlflow/auth/basic_auth.db",
                                                          f"sqlite:///{auth_dir}/basic_auth.db"))
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
    return env


def set_option(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """Copy of `argv` with the value after `flag` replaced.

    Raises:
        ValueError: `flag` is not in `argv` (the compose command lost it).
    """
    out = list(argv)
    try:
        index = out.index(flag)
    except ValueError:
        raise ValueError(f"option {flag} not found in command {out}") from None
    if index + 1 >= len(out):
        raise ValueError(f"option {flag} has no value in command {out}")
    out[index + 1] = value
    return out


def native_argv(argv: Sequence[str], *, options: Mapping[str, str] | None = None,
                hosts: Mapping[str, str] | None = None) -> list[str]:
    """Turn a container command into one that runs here.

    Args:
        argv: the command from the compose file.
        options: flag -> new value (e.g. ``{"--port": "5123"}``).
        hosts: ``host:port`` as seen in the container network -> the native
            ``host:port``, replaced inside every argument (database URLs).

    Returns:
        argv with the program resolved in this venv (``python`` -> this interpreter).
    """
    out = list(argv)
    for flag, value in (options or {}).items():
        out = set_option(out, flag, value)
    for old, new in (hosts or {}).items():
        out = [part.replace(f"@{old}/", f"@{new}/") for part in out]
    program = out[0]
    if program in ("python", "python3"):
        out[0] = sys.executable
    elif (VENV_BIN / program).exists():
        out[0] = str(VENV_BIN / program)
    elif shutil.which(program):
        out[0] = str(shutil.which(program))
    else:
        unavailable(f"{program} is not installed in {VENV_BIN} or on PATH")
    return out


def parse_env_file(path: Path = ENV_EXAMPLE) -> tuple[dict[str, str], set[str]]:
    """Read an env file: (assigned NAME -> value, names only mentioned in
    ``# NAME=...`` comments)."""
    assigned: dict[str, str] = {}
    commented: set[str] = set()
    for line in path.read_text().splitlines():
        stripped = line.strip()
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", stripped)
        if m:
            assigned[m.group(1)] = m.group(2)
            continue
        m = re.fullmatch(r"#\s*([A-Z_][A-Z0-9_]*)=.*", stripped)
        if m:
            commented.add(m.group(1))
    return assigned, commented


def healthcheck_argv(compose: Mapping[str, Any], service: str, *, container_port: int, native_port: int) -> list[str]:
    """The service's healthcheck as a native command aimed at `native_port`.

    ``CMD`` checks run as given (``python`` -> this interpreter); ``CMD-SHELL``
    ones run under ``sh -c``. Every ``127.0.0.1:PORT`` and ``-p PORT`` naming
    the container port is rewritten.

    Raises:
        ValueError: no healthcheck, or it never names `container_port` (so a
            rewrite could not aim it at the native service).
    """
    test = compose["services"][service].get("healthcheck", {}).get("test")
    if not test or not isinstance(test, list):
        raise ValueError(f"service {service}: healthcheck.test must be a list")

    def aim(part: str) -> str:
        return part.replace(f"127.0.0.1:{container_port}", f"127.0.0.1:{native_port}").replace(
            f"-p {container_port}", f"-p {native_port}"
        )

    kind, rest = test[0], [str(p) for p in test[1:]]
    aimed = [aim(p) for p in rest]
    if aimed == rest:
        raise ValueError(f"service {service}: healthcheck {test} does not name port {container_port}")
    if kind == "CMD":
        return native_argv(aimed)
    if kind == "CMD-SHELL" and len(aimed) == 1:
        return ["sh", "-c", aimed[0]]
    raise ValueError(f"service {service}: unsupported healthcheck form {test}")
