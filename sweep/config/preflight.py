"""Checks made before anything is trained or recorded: the tracking URI and the storage URL.

A mistyped URI must not train a whole sweep untracked, a missing or wrong
MLflow login must not look like an outage, and a missing database driver
must not end in a SQLAlchemy traceback. Each check raises
`ConfigError` (exit code 2 in the CLI) naming where the value came from (the
flag, the sweep-file key or the environment variable), what was given with
its password masked, and what is allowed. Nothing here leaves a file: a
SQLite path is checked for a writable folder, not opened, and the folders a
command writes are probed with a file deleted at once (`check_writable`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sweep.config.domains import ConfigError
from sweep.redact import mask_url, raw_at_in_password

# Room a command needs to start in a folder: a new mlflow.db (~1 MB, MLflow's empty
# schema), the journal's first records and the spool files of the first trials.
PROBE_BYTES = 2 * 1024 * 1024

# How long a tracking server or database may take to answer at start (stated in the error).
START_RETRY_SECONDS = 5.0

TRACKING_ALLOWED = (
    "sqlite:///PATH, http(s)://HOST:PORT (an `mlflow server`), "
    "postgresql[+driver]://, mysql[+driver]://, mssql[+driver]:// (a database MLflow writes directly)"
)
STORAGE_ALLOWED = (
    "postgresql+psycopg2://USER:PASS@HOST/DB, sqlite:///FILE.db, mysql+pymysql://..., journal:PATH, "
    "or leave it unset for the default journal file"
)
_DB_SCHEMES = ("postgresql", "mysql", "mssql", "sqlite", "oracle")


@dataclass(frozen=True)
class Origin:
    """Where a setting came from, for the error message: '--storage', '[sweep] storage in FILE', ..."""

    label: str


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def check_tracking_uri(uri: str, origin: str, *, retry_seconds: float = START_RETRY_SECONDS,
                       experiment: str | None = None) -> None:
    """Raise ConfigError unless `uri` is a tracking URI MLflow can use and that answers now.

    For a server that asks for a login (MLflow's basic-auth app, or a proxy in
    front of it), the login from MLFLOW_TRACKING_USERNAME/PASSWORD (or
    MLFLOW_TRACKING_TOKEN) must be accepted and, when `experiment` exists, the
    user must be allowed to log runs into it.
    """
    shown = mask_url(uri)
    scheme = _scheme(uri)
    base = scheme.split("+", 1)[0]
    if scheme in ("http", "https"):
        _check_server(uri, origin, retry_seconds)
        _check_login(uri, experiment)
        return
    if base in ("postgresql", "mysql", "mssql", "sqlite"):
        _check_database(uri, origin, TRACKING_ALLOWED, retry_seconds)
        return
    if scheme in ("", "file") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true":
        return  # MLflow's old file store, allowed only when the user opted in
    raise ConfigError(f"unsupported tracking URI {shown!r}; allowed: {TRACKING_ALLOWED}", key=origin)


def check_storage(url: str | None, origin: str, *, retry_seconds: float = START_RETRY_SECONDS) -> None:
    """Raise ConfigError unless `url` is an Optuna storage that can be opened now (None: the journal)."""
    if url is None or url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")) if url else None
        if path is not None and (not str(path) or path.is_dir()):
            raise ConfigError(f"journal:PATH needs a file path, got {mask_url(url)!r}", key=origin)
        return
    if _scheme(url).split("+", 1)[0] not in _DB_SCHEMES:
        raise ConfigError(f"unsupported storage URL {mask_url(url)!r}; allowed: {STORAGE_ALLOWED}", key=origin)
    _check_database(url, origin, STORAGE_ALLOWED, retry_seconds)


def _check_server(uri: str, origin: str, retry_seconds: float) -> None:
    """GET /health until it answers 200 or `retry_seconds` pass (connection refused: retried)."""
    shown = mask_url(uri)
    health = uri.rstrip("/") + "/health"
    deadline = time.monotonic() + retry_seconds
    last = ""
    while True:
        try:
            # MLflow's own auth (user:password in the URI) is not needed for /health.
            req = urllib.request.Request(_strip_userinfo(health))
            with urllib.request.urlopen(req, timeout=max(1.0, min(3.0, retry_seconds)),
                                        context=_tls_context(uri)) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code == 404:
                raise ConfigError(f"{shown!r} answers but is not an MLflow tracking server (no /health); "
                                  f"allowed: {TRACKING_ALLOWED}", key=origin) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"the MLflow tracking server {shown!r} did not answer within {retry_seconds:g} s ({last}); "
                "start it, or give a reachable http(s)://HOST:PORT or sqlite:///PATH",
                key=origin,
            )
        time.sleep(0.5)


LOGIN_VARS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
LOGIN_DOC = 'docs/team.md, "Users and permissions"'


def _tls_context(uri: str) -> ssl.SSLContext | None:
    """The TLS settings MLflow's client uses: a CA bundle or, if asked, no verification."""
    if not uri.lower().startswith("https"):
        return None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def _login_header() -> tuple[dict[str, str], str | None]:
    """(Authorization header, user name) from MLflow's client variables; ({}, None) without any."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}, user
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}, None
    return {}, None


def _get_json(uri: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    """(HTTP status, JSON body or {}) of GET uri/path; status 0 when the server cannot be reached."""
    req = urllib.request.Request(_strip_userinfo(uri.rstrip("/") + path), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=_tls_context(uri)) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}
    try:
        return status, json.loads(body or b"{}")
    except ValueError:
        return status, {}


def _check_login(uri: str, experiment: str | None) -> None:
    """Refuse, naming the variables to set, a login the server does not accept (401) or a
    user who may not log runs into `experiment` (403, or less than EDIT on it)."""
    shown = mask_url(uri)
    headers, user = _login_header()
    name = urllib.parse.quote(experiment or "", safe="")
    path = (f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}" if experiment
            else "/api/2.0/mlflow/experiments/search?max_results=1")
    status, body = _get_json(uri, path, headers)
    if status == 401:
        if not headers:
            raise ConfigError(f"the MLflow server {shown!r} asks for a login (HTTP 401): set {LOGIN_VARS} "
                              f"({LOGIN_DOC})", key="MLFLOW_TRACKING_USERNAME")
        raise ConfigError(f"the MLflow server {shown!r} does not accept the login of user {user!r} (HTTP 401): "
                          f"check {LOGIN_VARS}", key="MLFLOW_TRACKING_PASSWORD")
    if status == 403:
        raise ConfigError(f"MLflow user {user!r} may not read experiment {experiment!r} on {shown!r} (HTTP 403): "
                          f"ask an MLflow admin to grant EDIT on it ({LOGIN_DOC}), or log in as another user "
                          f"({LOGIN_VARS})", key="MLFLOW_TRACKING_USERNAME")
    experiment_id = body.get("experiment", {}).get("experiment_id") if status == 200 and experiment else None
    if not (experiment_id and user):
        return  # no such experiment yet (the sweep creates it), or a server without logins
    status, me = _get_json(uri, f"/api/2.0/mlflow/users/get?username={urllib.parse.quote(user, safe='')}", headers)
    if status != 200 or me.get("user", {}).get("is_admin", True):
        return  # no basic-auth app (nothing to check), or an admin (may do anything)
    query = urllib.parse.urlencode({"username": user, "resource_type": "experiment", "resource_id": experiment_id})
    status, grant = _get_json(uri, f"/api/3.0/mlflow/users/permissions/get?{query}", headers)
    if status == 200 and grant.get("permission") not in ("EDIT", "MANAGE"):
        raise ConfigError(f"MLflow user {user!r} has {grant.get('permission', 'no')} permission on experiment "
                          f"{experiment!r} on {shown!r}; logging runs needs EDIT: ask an MLflow admin to grant it "
                          f"({LOGIN_DOC}), or log in as another user ({LOGIN_VARS})", key="MLFLOW_TRACKING_USERNAME")


def _strip_userinfo(url: str) -> str:
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}/{path}"


def _check_database(url: str, origin: str, allowed: str, retry_seconds: float) -> None:
    """The URL parses, its SQLAlchemy dialect and driver import, and (not SQLite) it connects."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = mask_url(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"cannot parse {shown!r} as a database URL ({exc}); allowed: {allowed}", key=origin) from None
    except NoSuchModuleError:
        raise ConfigError(f"unknown database scheme in {shown!r}; allowed: {allowed}", key=origin) from None
    if raw_at_in_password(url):
        # SQLAlchemy ends the password at its first '@' and takes the rest for the host name,
        # which the driver's error would then print.
        raise ConfigError(f"the password in {shown!r} holds a raw '@', which ends it early for SQLAlchemy; "
                          "write each '@' in it as %40", key=origin)
    try:
        if hasattr(dialect, "import_dbapi"):
            dialect.import_dbapi()
        else:  # SQLAlchemy 1.4, where dbapi() was the classmethod that imports the driver
            dialect.dbapi()  # type: ignore[operator, misc]
    except ImportError as exc:
        driver = parsed.get_driver_name()
        raise ConfigError(
            f"{shown!r} needs the Python driver {driver!r}, which is not installed ({exc.name or exc}); "
            f"install it (e.g. `pip install psycopg2-binary` for postgresql+psycopg2) or name an installed driver; "
            f"allowed: {allowed}",
            key=origin,
        ) from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if db and db != ":memory:" and not Path(db).parent.resolve().is_dir():
            raise ConfigError(f"the folder of the SQLite file in {shown!r} does not exist", key=origin)
        return
    connect_args = {"connect_timeout": max(1, int(retry_seconds))} if parsed.get_backend_name() in (
        "postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    deadline = time.monotonic() + retry_seconds
    try:
        while True:
            try:
                with engine.connect():
                    return
            except sqlalchemy.exc.OperationalError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
                if "password authentication failed" in reason or "does not exist" in reason \
                        or time.monotonic() >= deadline:
                    raise ConfigError(f"cannot connect to the database {shown!r} within {retry_seconds:g} s "
                                      f"({mask_url(reason)})", key=origin) from None
            time.sleep(0.5)
    finally:
        engine.dispose()


def check_writable(folders: dict[Path, str]) -> None:
    """Raise ConfigError unless each folder takes a new file of PROBE_BYTES (removed at once).

    A read-only or full working folder would otherwise fail half-way: a journal
    AssertionError, MLflow's SQLAlchemy tracebacks, a 0-byte mlflow.db.

    Args:
        folders: folder -> what it is for the message ('working folder', '--tracking-uri', ...).
    """
    for folder, label in folders.items():
        probe = folder / f".sweep-probe-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot create a file in {folder} ({exc.strerror}); run the command in a "
                              "writable folder", key=label) from None
        try:
            chunk = b"\0" * 65536
            for _ in range(PROBE_BYTES // len(chunk)):
                os.write(fd, chunk)
            os.fsync(fd)
        except OSError as exc:
            raise ConfigError(f"no room to write in {folder} ({exc.strerror}; a command needs about "
                              f"{PROBE_BYTES // 2**20} MB free to start); free space there", key=label) from None
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
