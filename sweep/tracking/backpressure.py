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

A worker is faster than the parent at one thing: it can return a trial's
result and pass the (still open) gate to start its next trial before the
parent's main thread has counted that end. Every worker doing so at once let
MLflow fall 6 runs behind with a limit of 2 x 2 in one 1 000-trial bench. So a
worker marks each trial it ends (`mark_ended`, a `<spool file>.ended` file),
the parent removes the mark once the gate has counted the end (`release_worker`), and
the worker's next trial first waits for that: a worker never passes the gate
with an end of its own that the gate has not seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from sweep.tracking import spool

GATE_NAME = ".mirror-gate"  # not *.jsonl: never read as events
ENDED_SUFFIX = ".ended"  # `<spool file>.ended`: a worker's trial ended, not yet counted by the parent
# How often `watch_start_up` counts new spool files. Tiny trials (~30 ms) start between two
# counts: at 50 ms, beside a tracker thread importing MLflow at the workers' priority, 5
# runs were behind at the first sync of a 10 000-trial sweep (limit 2 x jobs = 4).
START_UP_POLL_SECONDS = 0.01

# This worker process's mark of its last trial's end (a worker runs one trial at a time).
_uncounted: Path | None = None


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
        # Spool files of runs the sweep saw end (`ended`) -> when, until MLflow has their end.
        self._ended: dict[str, float] = {}
        # SWEEP_MIRROR_LOG=FILE: one line per sync that found work, "unix-time behind sent"
        # (bench/big_study.py draws the backlog over time from it).
        self._log = os.environ.get("SWEEP_MIRROR_LOG")

    def ended(self, spool_name: str, closed: Collection[str], live: bool) -> None:
        """The run of `spool_name` ended in its worker: counted until it is in `closed` (MLflow has
        its end, by any tracker of this folder); the gate closed at the limit at once when the
        tracker is `live` (ready and MLflow up: a long sync may be under way)."""
        with self.lock:
            self._ended[spool_name] = time.monotonic()
            if live:
                self.update(self.behind_live(closed))

    def behind_live(self, closed: Collection[str]) -> int:
        """Runs the sweep saw end that are not closed in MLflow yet. One noted longer ago than
        the final drain's wait is no longer counted: a run this folder cannot close (a file lost)
        must not hold every later trial back."""
        from sweep.tracking.outage import tracking_wait_seconds

        oldest = time.monotonic() - tracking_wait_seconds()
        with self.lock:
            for name in [n for n, t in self._ended.items() if n in closed or t < oldest]:
                del self._ended[name]
            return len(self._ended)

    def hold_back(self, behind: int, closed: Collection[str]) -> None:
        """At a sync's start: `behind` runs in the spool folder not in MLflow, or more seen ending."""
        with self.lock:
            self.update(max(behind, self.behind_live(closed)))

    def after_sync(self, closed: Collection[str], down: bool, behind: int, sent: int) -> None:
        """What a sync counted is in MLflow now; trials that ended meanwhile still count. Down: open."""
        with self.lock:
            self.update(0 if down else self.behind_live(closed))
        if sent and self._log:
            with contextlib.suppress(OSError), open(self._log, "a") as f:
                f.write(f"{time.time():.3f} {behind} {sent}\n")

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
                       poll: float = START_UP_POLL_SECONDS) -> None:
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


def mark_ended(spool_file: Path) -> None:
    """Worker side, as its trial ends: mark the end until the parent has counted it (`release_worker`)."""
    global _uncounted
    marker = spool_file.with_name(spool_file.name + ENDED_SUFFIX)
    try:
        marker.touch()
    except OSError:  # a full disk: no mark, no wait (the gate alone, racy by a run or two)
        _uncounted = None
        return
    _uncounted = marker


def release_worker(spool_dir: Path, spool_name: str) -> None:
    """Parent side, after the gate counted the end of `spool_name` (or there is no gate): release its worker."""
    with contextlib.suppress(OSError):
        (Path(spool_dir) / (spool_name + ENDED_SUFFIX)).unlink(missing_ok=True)


def _wait_until_counted(parent: str | None, deadline: float, poll: float) -> None:
    """Wait until the parent counted this worker's last end, while `parent` ("host:pid:start") runs."""
    global _uncounted
    marker, _uncounted = _uncounted, None
    if marker is None or parent is None:
        return
    host, pid, start = parent.rsplit(":", 2)
    proc_start = None if start == "None" else float(start)
    while marker.exists() and time.monotonic() < deadline:
        if spool.is_alive(host, int(pid), proc_start) is not True:
            return  # a dead parent counts nothing
        time.sleep(poll)


def wait_for_mirror(spool_dir: Path, max_seconds: float | None = None, poll: float = 0.01,
                    parent: str | None = None) -> float:
    """Worker side: wait while the spool folder's gate is closed by a live tracker; returns the seconds waited.

    First, with `parent` (the sweep process, "host:pid:start"), until it has counted
    this worker's last end (`mark_ended`). At most `max_seconds` in all (default
    `tracking_wait_seconds()`): a tracker stuck in a slow call holds the sweep back
    that long per trial, never for good.
    """
    path = Path(spool_dir) / GATE_NAME
    start = time.monotonic()
    if _uncounted is not None:
        if max_seconds is None:
            from sweep.tracking.outage import tracking_wait_seconds

            max_seconds = tracking_wait_seconds()
        _wait_until_counted(parent, start + max_seconds, poll)
    deadline = None if max_seconds is None else start + max_seconds
    while True:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # open (absent), or being replaced this instant
            return time.monotonic() - start
        if spool.is_alive(record.get("host", ""), int(record.get("pid", -1)), record.get("proc_start")) is not True:
            return time.monotonic() - start  # a dead tracker's gate, or another host's
        if deadline is None:
            from sweep.tracking.outage import tracking_wait_seconds

            deadline = start + tracking_wait_seconds()
        if time.monotonic() >= deadline:
            return time.monotonic() - start
        time.sleep(poll)
