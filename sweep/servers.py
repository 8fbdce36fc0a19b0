"""The web servers `sweep ui` (MLflow's UI) and `sweep dashboard` (optuna-dashboard) start.

Both print the address a person clicks only once the server answers an HTTP
GET: MLflow's UI takes ~20 s to import and start, and an address printed
before that fails when clicked at once. Until then the server's own output is
held back (and shown if it exits without answering).

The server runs as a child in its own process group; `sweep` forwards SIGINT,
SIGTERM and SIGHUP to that group and waits, so a signal meant for `sweep ui`
(Ctrl-C, `kill`, a closed terminal) stops the server and its workers instead of
orphaning them, as when `sweep ui` became the server through exec.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TextIO

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def local_address(host: str) -> str:
    """The host to reach a server listening on `host` from here (0.0.0.0 / :: mean every interface)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on: the probe would get that server's answer.

    Raises:
        ValueError: naming --port and the host.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a port in TIME_WAIT is free
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
                             "give another --port") from None


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when an HTTP GET of `url` gets any HTTP response (an error status too: the server is up)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server: never via a proxy
    try:
        with opener.open(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def serve(cmd: Sequence[str], probe_url: str, ready_lines: Sequence[str], *, what: str,
          out: TextIO = sys.stdout, poll_seconds: float = 0.25) -> int:
    """Run the server `cmd` until it exits; print `ready_lines` once `probe_url` answers.

    Returns:
        The server's exit code (128 + N when signal N ended it).
    """
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            process_group=0)
    held: list[str] = []
    ready = threading.Event()
    lock = threading.Lock()

    def relay() -> None:  # the server's output: held until it answers, then passed on as it comes
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            with lock:
                if ready.is_set():
                    sys.stderr.write(line)
                    sys.stderr.flush()
                else:
                    held.append(line)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    old = {s: signal.signal(s, forward) for s in _FORWARDED}
    reader = threading.Thread(target=relay, name="server-output", daemon=True)
    reader.start()
    try:
        while proc.poll() is None and not answers(probe_url):
            time.sleep(poll_seconds)
        with lock:
            if proc.poll() is None:
                out.write("\n".join(ready_lines) + "\n")
                out.flush()
            ready.set()
            sys.stderr.write("".join(held))
            sys.stderr.flush()
        code = proc.wait()
        reader.join(timeout=5)
        if code != 0 and not _stopped_by_us(code):
            print(f"{what} exited with code {code} (its output is above)", file=sys.stderr)
        return 128 - code if code < 0 else code
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # an error of ours, not a signal: the server must not outlive `sweep`
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _stopped_by_us(code: int) -> bool:
    return -code in _FORWARDED or code - 128 in _FORWARDED


DASHBOARD_MISSING = ("optuna-dashboard is not installed in this environment; install it with "
                     "`pip install 'optuna-dashboard>=0.20,<0.22'` (or this project's test or team extra)")


def dashboard_executable() -> str | None:
    """The `optuna-dashboard` script of this Python's environment, or None when it is not installed."""
    import shutil
    from pathlib import Path

    return shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))


def dashboard_command(storage_url: str | None, journal: str, host: str, port: int) -> list[str]:
    """optuna-dashboard on `storage_url` (None: the journal file `journal`).

    optuna-dashboard 0.20/0.21 takes a journal file as a plain path (told apart
    from a SQLite file by its header; `--storage-class` makes it explicit); a
    ``journal:PATH`` URL of this project is given the same way.
    """
    exe = dashboard_executable()
    if exe is None:
        raise ValueError(DASHBOARD_MISSING)
    if storage_url is None or storage_url.startswith("journal:"):
        target = storage_url.removeprefix("journal:") if storage_url else journal
        storage = ["--storage-class", "JournalFileStorage", target]
    else:
        storage = [storage_url]
    # --server wsgiref: no gunicorn needed; one person's browser.
    return [exe, *storage,
            "--host", host, "--port", str(port), "--server", "wsgiref"]
