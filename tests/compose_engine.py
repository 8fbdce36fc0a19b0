"""A private Docker engine for `pytest -m compose`, and the test-only images it needs.

Nothing here is mocked: `dockerd` (Debian's docker.io, engine 20.10) runs with
its own data root, exec root, pid file and unix socket under a fresh folder in
/tmp, so it never touches (or collides with) another engine or containerd on
the machine: it starts a containerd of its own under its exec root (or, when
a system containerd is running, uses it in namespaces of its own), and it
creates no `docker0` bridge (`--bridge none`; Compose makes its own network).
Only the docker/compose subprocesses get ``DOCKER_HOST`` pointing at it.

Docker Hub is not reachable here, so the two images the compose file and the
Dockerfiles start FROM are test-only stand-ins (tests/compose/stand-ins/),
built on Debian root file systems made by mmdebstrap and tagged with the
official names in this engine only. pip cannot reach the registry from inside
containers either: the images are built with tests/compose/compose.offline.yml,
which points pip at wheels built on the host and served on 127.0.0.1.

Slow, cacheable inputs live in ``~/.cache/dropout-sweep/compose`` (or
``$SWEEP_COMPOSE_CACHE``): the mmdebstrap tarballs and the wheel folder, each
keyed by a hash of what it is built from. A clean machine builds them (about
2 minutes); the engine's own data root is always fresh and always removed.
tests/compose/install-docker.sh installs docker.io, mmdebstrap and the Compose
v2 plugin (`.ci/run` runs it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services import REPO_ROOT, ServerProcess, free_port, unavailable

COMPOSE_TESTS = REPO_ROOT / "tests" / "compose"
STAND_INS = COMPOSE_TESTS / "stand-ins"
OFFLINE_FILE = COMPOSE_TESTS / "compose.offline.yml"
INSTALL_SCRIPT = COMPOSE_TESTS / "install-docker.sh"
CACHE = Path(os.environ.get("SWEEP_COMPOSE_CACHE", Path.home() / ".cache" / "dropout-sweep" / "compose"))

# Stand-in folder -> (official tag it plays, Debian packages of its root file system).
STAND_IN_IMAGES = {
    "python": ("python:3.11-slim-bookworm", ["python3", "python3-venv", "ca-certificates"]),
    "postgres": ("postgres:15-bookworm", ["postgresql-15"]),
}
DEBIAN_SOURCES = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
# What the images pip-install: the wheel folder is built from exactly these
# (plus the build backend the project's own image needs to install itself).
REQUIREMENTS = sorted((REPO_ROOT / "docker").glob("*/requirements.txt"))
BUILD_BACKEND = ["setuptools>=68", "wheel"]


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 900,
         check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], env=None if env is None else dict(env), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
                           f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def check_tools() -> None:
    """Skip (or fail under CI) unless dockerd, the docker CLI, Compose v2 and mmdebstrap are here."""
    hint = f"run {INSTALL_SCRIPT.relative_to(REPO_ROOT)} (as root; .ci/run does)"
    for tool in ("dockerd", "docker", "mmdebstrap"):
        if shutil.which(tool) is None:
            unavailable(f"`{tool}` is not installed; {hint}")
    if os.geteuid() != 0:
        unavailable("the private Docker engine needs root")
    version = _run(["docker", "compose", "version", "--short"], check=False)
    if version.returncode != 0 or not version.stdout.strip().lstrip("v").startswith("2."):
        unavailable(f"the Docker Compose v2 plugin is missing (`docker compose version`: "
                    f"{(version.stdout + version.stderr).strip()[:200]!r}); {hint}")


# --------------------------------------------------------------------------
# the engine


class DockerEngine:
    """`dockerd` on a private socket and data root; `.env` is the environment
    for docker/compose subprocesses (this process's own is left alone)."""

    def __init__(self) -> None:
        # Short path: containerd's sockets live under the exec root (108-byte limit).
        self.root = Path(tempfile.mkdtemp(prefix="dsd-", dir="/tmp"))
        self.tag = re.sub(r"[^a-z0-9]", "", self.root.name.lower())  # valid in containerd names
        self.socket = self.root / "docker.sock"
        self.pidfile = self.root / "dockerd.pid"
        self.log_path = self.root / "dockerd.log"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        for key in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "COMPOSE_FILE",
                    "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"):
            self.env.pop(key, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> DockerEngine:
        argv = [
            "dockerd",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "-H", f"unix://{self.socket}",
            "--pidfile", str(self.pidfile),
            # No default bridge: another engine on this machine may own docker0.
            "--bridge", "none",
            # dockerd 20.10 starts a containerd of its own under the exec root, unless a
            # system containerd answers on /run/containerd/containerd.sock: then it uses
            # that one, and these namespaces keep our containers apart from its others.
            "--containerd-namespace", f"dropout-sweep-{self.tag}",
            "--containerd-plugins-namespace", f"dropout-sweep-{self.tag}-plugins",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with code {self.proc.returncode}:\n{self.log()}")
            if self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"dockerd did not answer on {self.socket} within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no log>"

    def docker(self, *args: str, check: bool = True, timeout: float = 900,
               env: Mapping[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return _run(["docker", *args], env={**self.env, **(env or {})}, timeout=timeout, check=check, cwd=cwd)

    def inspect(self, *names: str) -> list[dict[str, Any]]:
        return json.loads(self.docker("inspect", *names).stdout)

    def stop(self) -> None:
        """Stop dockerd (which stops its containers and containerd) and remove its folders."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # Anything still mounted below the root (after a crash) is unmounted first.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.root) + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        # rm is several times faster than shutil.rmtree on the image layers (GBs of small
        # files), and --one-file-system never follows a mount left behind into the host.
        # It runs on detached at the lowest priority: waiting for it cost about 3 of the
        # marker's minutes, and nothing reads the folder again (the next engine gets a fresh one).
        subprocess.Popen(["nice", "-n", "19", "rm", "-rf", "--one-file-system", str(self.root)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)


# --------------------------------------------------------------------------
# cached inputs: root file systems and wheels


def rootfs_tarball(packages: Sequence[str]) -> Path:
    """A Debian bookworm minbase root file system with `packages`, as a tar (cached)."""
    argv = ["mmdebstrap", "--variant=minbase", "--format=tar", f"--include={','.join(packages)}", "bookworm"]
    out = CACHE / f"rootfs-{_digest(*argv, *DEBIAN_SOURCES)}.tar"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.stem + ".partial.tar")
        _run([*argv, partial, *DEBIAN_SOURCES], timeout=900)
        partial.rename(out)
    return out


def wheel_folder() -> Path:
    """Wheels of every docker/*/requirements.txt, built on the host by pip (cached)."""
    texts = [p.read_bytes() for p in REQUIREMENTS]
    out = CACHE / f"wheels-{_digest(*texts, *BUILD_BACKEND, sys.version.split()[0])}"
    if not (out / ".complete").exists():
        out.mkdir(parents=True, exist_ok=True)
        args = [a for p in REQUIREMENTS for a in ("-r", str(p))]
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", *args,
              *BUILD_BACKEND, "-w", str(out)], timeout=900)
        (out / ".complete").write_text("")
    return out


def serve_wheels(folder: Path, log_dir: Path) -> ServerProcess:
    """`python -m http.server` on 127.0.0.1 serving `folder` (a pip --find-links page)."""
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    return ServerProcess("wheel server", argv, port=port, health_path="/", log_path=log_dir / "wheels.log",
                         cwd=log_dir).start(timeout=30)


def build_stand_ins(engine: DockerEngine) -> dict[str, str]:
    """Import the root file systems and build the stand-ins under their official tags."""
    tags = {}
    for name, (tag, packages) in STAND_IN_IMAGES.items():
        base = f"dropout-sweep-test/{name}-rootfs:bookworm"
        engine.docker("import", str(rootfs_tarball(packages)), base, timeout=600)
        engine.docker("build", "-q", "--build-arg", f"BASE={base}", "-t", tag, str(STAND_INS / name), timeout=600)
        tags[name] = tag
    return tags


def images_used() -> set[str]:
    """Every image docker-compose.yml runs or docker/*/Dockerfile starts FROM that is not built here."""
    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    used = {s["image"] for s in compose["services"].values() if "build" not in s}
    for dockerfile in (REPO_ROOT / "docker").glob("*/Dockerfile"):
        used |= set(re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M))
    return used


# --------------------------------------------------------------------------
# a compose project in the engine


def stack_secrets() -> dict[str, str]:
    """Fresh random values for the stack's secrets (what docker/new-env.sh writes to .env)."""
    import secrets

    return {name: secrets.token_urlsafe(24) for name in SECRET_VARIABLES}


# The variables docker-compose.yml's `secrets:` read (docker/new-env.sh makes them).
SECRET_VARIABLES = ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "OPTUNA_DB_PASSWORD",
                    "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")


class ComposeStack:
    """The real docker-compose.yml (+ the offline build override, + `extra_files`)
    as project `project` in `engine`, with every published port on a free one and
    the secrets in the environment compose reads (`secrets`)."""

    def __init__(self, engine: DockerEngine, project: str, *, wheel_url: str, env_file: Path,
                 extra_files: Sequence[Path] = (), env: Mapping[str, str] | None = None) -> None:
        self.engine = engine
        self.project = project
        self.files = [REPO_ROOT / "docker-compose.yml", *extra_files, OFFLINE_FILE]
        self.env_file = env_file
        self.ports = {
            "POSTGRES_PORT": free_port(), "MLFLOW_PORT": free_port(),
            "OPTUNA_DASHBOARD_PORT": free_port(), "DASK_SCHEDULER_PORT": free_port(),
        }
        self.secrets = stack_secrets()
        self.env = {"SWEEP_TEST_WHEEL_URL": wheel_url, **{k: str(v) for k, v in self.ports.items()},
                    **self.secrets, **(env or {})}

    def with_files(self, *extra: Path, env: Mapping[str, str] | None = None) -> ComposeStack:
        """The same project (ports, volumes) with more override files and variables."""
        other = ComposeStack.__new__(ComposeStack)
        other.__dict__.update(self.__dict__)
        other.files = [REPO_ROOT / "docker-compose.yml", *extra, OFFLINE_FILE]
        other.env = {**self.env, **(env or {})}
        return other

    def compose(self, *args: str, check: bool = True, timeout: float = 900,
                env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        return self.engine.docker("compose", "--env-file", str(self.env_file), "-p", self.project, *files, *args,
                                  check=check, timeout=timeout, env={**self.env, **(env or {})}, cwd=REPO_ROOT)

    def ps(self) -> dict[str, list[dict[str, Any]]]:
        """service -> its containers as `docker compose ps -a --format json` reports them."""
        out = self.compose("ps", "-a", "--format", "json").stdout.strip()
        rows = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
        by_service: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_service.setdefault(row["Service"], []).append(row)
        return by_service

    def containers(self, service: str) -> list[dict[str, Any]]:
        """`docker inspect` of the service's containers."""
        ids = self.compose("ps", "-a", "-q", service).stdout.split()
        return self.engine.inspect(*ids) if ids else []

    def volumes(self) -> set[str]:
        out = self.engine.docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}")
        return set(out.stdout.split())

    def url(self, port_var: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_var]}"

    def storage_url(self) -> str:
        """The Optuna storage as the docs give it: no password (libpq reads it from PGPASSFILE)."""
        return f"postgresql+psycopg2://optuna@127.0.0.1:{self.ports['POSTGRES_PORT']}/optuna"

    def write_pgpass(self, path: Path) -> Path:
        """A libpq password file (mode 0600) for the optuna role on the published port."""
        path.write_text(f"127.0.0.1:{self.ports['POSTGRES_PORT']}:optuna:optuna:{self.secrets['OPTUNA_DB_PASSWORD']}\n")
        path.chmod(0o600)
        return path

    @property
    def admin(self) -> tuple[str, str]:
        """MLflow's admin login (through the proxy, for MLflow and the dashboard)."""
        return "admin", self.secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]
