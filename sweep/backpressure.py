"""Backpressure from the MLflow mirror to the workers: no new trial while MLflow is behind.

On trials of a fraction of a second the workers end runs faster than the
parent's tracker thread can send them (create_run + log_batch +
set_terminated, ~40-60 ms on a local SQLite store, in a parent that shares
the cores with the workers). Left alone the backlog grows with the study and
a sweep ends with runs not in MLflow. So the tracker closes a gate, a small
file in the spool folder, while it holds `limit` or more runs that ended (or
were never created) and are not in MLflow yet, and every worker waits at the
gate before it starts a trial. The `limit` trials already running may still
end meanwhile, so MLflow is never more than about 2 x limit runs behind.

The gate only slows a sweep whose tracker is alive and reaching MLflow: in an
outage the tracker opens it (the events wait in the spool folder, as
docs/reliability.md says), a gate left by a dead process is ignored, a worker
on another host (Dask) cannot see it, and no worker waits longer than
`tracking_wait_seconds()` for one trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sweep import spool

GATE_NAME = ".mirror-gate"  # not *.jsonl: never read as events


class Gate:
    """The tracker's side: closes and opens the gate file of one spool folder."""

    def __init__(self, spool_dir: Path, limit: int | None) -> None:
        self.path = Path(spool_dir) / GATE_NAME
        self.limit = limit  # None: never close (no workers to hold back)
        self.closed = False
        self.closed_seconds = 0.0  # how long workers were held back in all
        self._since = 0.0
        # Held by whoever decides: the tracker thread, and `watch_start_up` before it is ready.
        self.lock = threading.RLock()

    def update(self, behind: int) -> None:
        """Close the gate when `behind` runs reach the limit, open it below."""
        if self.limit is None:
            return
        if behind >= self.limit:
            self.close()
        else:
            self.open()

    def close(self) -> None:
        if self.closed:
            return
        pid = os.getpid()
        record = {"host": socket.gethostname(), "pid": pid, "proc_start": spool.process_start_time(pid)}
        tmp = self.path.with_name(f"{GATE_NAME}.{pid}.tmp")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)
        except OSError:  # a full disk: no backpressure, the spool folder still keeps everything
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        self.closed, self._since = True, time.monotonic()

    def open(self) -> None:
        if not self.closed:
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        self.closed = False
        self.closed_seconds += time.monotonic() - self._since

    def watch_start_up(self, done: threading.Event, hold: Callable[[], bool], before: set[str],
                       poll: float = 0.05) -> None:
        """Until `done` is set, count the spool files that appear (none is in MLflow yet: the
        tracker is still importing MLflow and opening the store) and close the gate at the limit.

        So the first `limit` trials run while the tracker starts (its ~2 s of start-up do not
        delay them), and the next ones wait for it. `hold()` False (an outage): leave it open.
        `before`: the spool files there were before (`spool_names`), not counted.
        """
        if self.limit is None:
            return
        while not done.wait(poll):
            with self.lock:
                if done.is_set() or not hold():
                    return
                self.update(len(spool_names(self.path.parent) - before))


def spool_names(spool_dir: Path) -> set[str]:
    try:
        return {n for n in os.listdir(spool_dir) if n.endswith(".jsonl")}
    except OSError:
        return set()


def wait_for_mirror(spool_dir: Path, max_seconds: float | None = None, poll: float = 0.01) -> float:
    """Worker side: wait while the spool folder's gate is closed by a live tracker; returns the seconds waited.

    At most `max_seconds` (default `tracking_wait_seconds()`): a tracker stuck in
    a slow call holds the sweep back that long per trial, never for good.
    """
    path = Path(spool_dir) / GATE_NAME
    start = time.monotonic()
    deadline = None
    while True:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # open (absent), or being replaced this instant
            return time.monotonic() - start
        if spool.is_alive(record.get("host", ""), int(record.get("pid", -1)), record.get("proc_start")) is not True:
            return time.monotonic() - start  # a dead tracker's gate, or another host's
        if deadline is None:
            if max_seconds is None:
                from sweep.outage import tracking_wait_seconds

                max_seconds = tracking_wait_seconds()
            deadline = start + max_seconds
        if time.monotonic() >= deadline:
            return time.monotonic() - start
        time.sleep(poll)
