"""What is not in MLflow yet, and the lines that say so (the tracker's health reporting).

The spool folder is the source of truth: every event a worker wrote is in a
`*.jsonl` file, and each file's `.state` side file says how much of it MLflow
has (see sweep.tracking). `backlog` reads both; `Health` turns the tracker's
successes and failures into exactly two lines per outage (when it starts,
when it has caught up) instead of one per retry. `ParentBook` keeps, in the
spool folder, what the parent runs still need (their spec, summary metrics
and tags, their end status), so `sweep sync` can finish what a sweep whose
server never came back could not.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.redact import mask_text
from sweep.tracking import spool

PARENTS_NAME = ".parents.json"  # not *.jsonl: never read as events

# MLflow's HTTP client would retry one call to a dead server for minutes (7
# retries, backoff factor 2, 120 s timeout): the tracker retries on its own
# schedule instead, so one call gives up within ~2 x 10 s. Set only if unset.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 1.0, 15.0
# How long the end of a sweep waits for the tracker to catch up (SWEEP_TRACKING_WAIT overrides).
DEFAULT_WAIT_SECONDS = 30.0


def tracking_wait_seconds() -> float:
    """SWEEP_TRACKING_WAIT (seconds) or DEFAULT_WAIT_SECONDS."""
    try:
        return max(0.0, float(os.environ.get("SWEEP_TRACKING_WAIT", DEFAULT_WAIT_SECONDS)))
    except ValueError:
        return DEFAULT_WAIT_SECONDS


def limit_http_retries() -> None:
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)


@dataclass
class Backlog:
    """What a spool folder holds that MLflow lacks."""

    spool_dir: Path
    runs_missing: int = 0  # spool files with no MLflow run yet
    runs_open: int = 0  # runs whose end (status) MLflow does not have yet
    events: int = 0  # complete event lines not sent yet
    parents: int = 0  # parent runs with updates not sent yet

    @property
    def empty(self) -> bool:
        return not (self.runs_missing or self.runs_open or self.events or self.parents)

    def describe(self) -> str:
        """E.g. '3 run(s) (2 not created yet) and 41 event(s)'."""
        parts = [f"{self.runs_open} run(s)" + (f" ({self.runs_missing} not created yet)" if self.runs_missing else "")]
        parts.append(f"{self.events} event(s)")
        if self.parents:
            parts.append(f"{self.parents} parent-run update(s)")
        return ", ".join(parts[:-1]) + " and " + parts[-1]


def read_side_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.with_suffix(".state").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def backlog(spool_dir: Path, known: Mapping[Path, Mapping[str, Any]] | None = None,
            parents_queued: Collection[str] = (), leave_to_others: bool = False,
            closed: Collection[str] = ()) -> Backlog:
    """Count what `spool_dir` holds beyond its `.state` offsets (no lock needed: read-only).

    known: side states a tracker holds in memory because it could not save them
    (a full disk), used instead of the files; parents_queued: keys of parent runs with updates
    it holds in memory for the same reason; leave_to_others: do not count parent updates
    only other live processes of this host queued (they send them when they end), nor the
    epochs of a run another live process of this host is still training; closed:
    names of spool files a tracker knows are closed in MLflow (not read again: at 10 000
    trials that is most of the folder).
    """
    out = Backlog(Path(spool_dir))
    known = known or {}
    for path in spool.spool_files(spool_dir):
        if path.name in closed and path not in known:
            continue
        st = known.get(path) or read_side_state(path)
        if st.get("closed"):
            continue
        try:
            events, _ = spool.read_events(path, int(st.get("offset", 0)))
        except (OSError, ValueError):
            continue
        if not events:
            continue  # everything sent (its worker may still be writing), or nothing to send
        if leave_to_others and not any(e.get("event") == "end" for e in events) and _trained_by_live_other(path):
            # Another sweep process's trial, still training: its epochs keep coming after any drain
            # of ours, and that sweep's tracker sends them (the same folder, the same lock).
            continue
        out.runs_open += 1
        out.runs_missing += 0 if st.get("run_id") else 1
        out.events += len(events)
    book = ParentBook(spool_dir).read()
    pending = {key for key, entry in book.items()
               if _parent_pending(entry) and not (leave_to_others and _queued_by_others_alive(entry))}
    out.parents = len(pending | set(parents_queued))
    return out


def _trained_by_live_other(path: Path) -> bool:
    """Whether the run of `path` is being written by a live process of this host other than this one."""
    start = spool.first_event(path)
    if not start or start.get("event") != "start":
        return False
    if start.get("host") == socket.gethostname() and start.get("pid") == os.getpid():
        return False
    return spool.is_alive(str(start.get("host", "")), int(start.get("pid", -1)), start.get("proc_start")) is True


def _parent_pending(entry: dict[str, Any]) -> bool:
    return bool(entry.get("metrics") or entry.get("tags") or entry.get("end"))


def _queued_by_others_alive(entry: dict[str, Any]) -> bool:
    """Whether every process that queued the entry's pending updates is another one still
    running on this host (two sweeps of one folder ending at once: the later one's parent
    update is its to send, not missing from the earlier one's point of view)."""
    me, queued_by = spool.this_process(), entry.get("queued_by") or []
    return bool(queued_by) and all(p != me and _process_alive(p) for p in queued_by)


def _process_alive(process: str) -> bool:
    """'host:pid:start' (spool.this_process) still runs here (False when unknown: another host)."""
    host, pid, start = process.rsplit(":", 2)
    return bool(spool.is_alive(host, int(pid), None if start == "None" else float(start)))


class ParentBook:
    """`.parents.json` in a spool folder: {key: {"spec", "run_id", "metrics", "tags", "end"}}.

    Written under the spool folder's lock by whoever holds it (tracker or
    `sweep sync`), atomically (tmp + replace).
    """

    def __init__(self, spool_dir: Path) -> None:
        self.path = Path(spool_dir) / PARENTS_NAME

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def write(self, book: dict[str, dict[str, Any]]) -> None:
        tmp = self.path.with_name(f"{PARENTS_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(book, sort_keys=True))
        os.replace(tmp, self.path)

    def update(self, key: str, **changes: Any) -> None:
        """Queue `changes` for parent `key`, noting this process among those waiting for them to be sent."""
        book = self.read()
        entry = book.setdefault(key, {})
        entry["queued_by"] = sorted({*entry.get("queued_by", []), spool.this_process()})
        for name, value in changes.items():
            if name in ("metrics", "tags"):
                entry[name] = {**entry.get(name, {}), **value}
            else:
                entry[name] = value
        self.write(book)


# SQLite's words for a tracking store on a full or read-only disk (not an outage of a server).
_STORE_FULL = ("database or disk is full", "attempt to write a readonly database")


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """One line naming the failure, password-free: 'ConnectionError: ... Connection refused'."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for marker in ("Connection refused", "Read timed out", "Name or service not known", "Max retries exceeded",
                   *_STORE_FULL):
        if marker in text:
            text = marker.lower()
            break
    text = mask_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t))


class Health:
    """Turns tracker successes/failures into one line at an outage's start and one at its end.

    Args:
        where: the tracking URI as shown (masked).
        spool_dir: where the events wait.
        say: prints one line (the sweep's output).
    """

    def __init__(self, where: str, spool_dir: Path, say: Callable[[str], None]) -> None:
        self.where, self.spool_dir, self.say = where, Path(spool_dir), say
        self.down_since: float | None = None  # wall clock, for the message
        self._down_mono = 0.0
        self.outages: list[dict[str, float]] = []  # measured: detect time, seconds down, events buffered/sent
        self.last_error = ""

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        self.last_error = short_reason(exc)
        if self.down:
            return
        self.down_since, self._down_mono = time.time(), time.monotonic()
        waiting = backlog(self.spool_dir)
        self.outages.append({"events_waiting": waiting.events})
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            what = f"cannot keep its bookkeeping in {self.spool_dir} since {clock(self.down_since)}"
        elif self.last_error in _STORE_FULL:
            what = f"MLflow's store {self.where} cannot be written since {clock(self.down_since)}"
        else:
            what = f"MLflow at {self.where} is unreachable since {clock(self.down_since)}"
        self.say(f"tracking: {what} ({self.last_error}); {waiting.describe()} waiting, kept in {self.spool_dir} "
                 "and sent when it is back (retrying quietly)")

    def succeeded(self, sent: int) -> None:
        """After a sync that sent everything there was (`sent` events)."""
        if not self.down:
            return
        seconds = time.monotonic() - self._down_mono
        self.outages[-1].update(seconds_down=seconds, events_sent=sent)
        self.say(f"tracking: MLflow at {self.where} is back after {seconds:.0f} s "
                 f"(down since {clock(self.down_since or 0)}); caught up, sent {sent} event(s) that were waiting")
        self.down_since = None
