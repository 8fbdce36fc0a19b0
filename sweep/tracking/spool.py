"""Per-run event files written by workers and read by the parent's tracker.

Workers never import MLflow: importing it costs ~1.8 s and creating a fresh
SQLite store ~3 s of CPU, which on a 2-core machine would sit in front of the
first trial of every worker. Instead each training run appends JSON lines to
its own file in a spool folder, one flushed line per event:

    {"event": "start", "run_name": "trial-0007", "parent": "study", "params": {...},
     "tags": {...}, "pid": 123, "host": "...", "proc_start": 456.0, "time": ...}
    {"event": "epoch", "step": 1, "metrics": {"val_acc": 0.9, ...}, "time": ...}
    {"event": "end", "status": "FINISHED"|"FAILED"|"KILLED", "tags": {"state": ..., ...},
     "metrics": {...}, "time": ...}

The parent's tracker (sweep.tracking) tails these files and mirrors them into
MLflow with batched calls, so a worker pays one small `write` per epoch. The
start record doubles as the worker's liveness record: (host, pid, proc_start)
tells the parent whether the process that owns a RUNNING trial still exists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
log = logging.getLogger(__name__)
# Tag with how a trial or cell ended, in Optuna's words (COMPLETE, PRUNED, FAIL): the
# MLflow status alone cannot say it, since a pruned trial ends FINISHED (end_status).
STATE_TAG = "state"


def end_status(state: str, *, interrupted: bool = False) -> str:
    """MLflow status of a run that ended in Optuna state `state`.

    As Optuna's own MLflow integration does: a pruned trial is a FINISHED run
    tagged state=PRUNED (pruning is the search working; MLflow draws KILLED
    with the same red icon as a crash); a failure (divergence, a dead worker)
    is FAILED; KILLED only for a run an interrupt (Ctrl-C, SIGTERM) cut off.
    """
    if state in ("COMPLETE", "PRUNED"):
        return "FINISHED"
    return "KILLED" if interrupted else "FAILED"


def process_start_time(pid: int) -> float | None:
    """Start time of `pid` in clock ticks since boot (Linux), None if it is gone.

    Used with the pid to tell a live worker from a recycled pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Fields after the command name (field 2, which may hold spaces): state
    # (field 3) and starttime (field 22). A zombie has exited: count it gone.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return float(fields[19])


def this_process() -> str:
    """This process as "host:pid:start", unique on a host across pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start_time(os.getpid())}"


def is_alive(host: str, pid: int, proc_start: float | None) -> bool | None:
    """Whether the process that wrote a start record still runs.

    Returns None when that cannot be known from here (another host).
    """
    if host != socket.gethostname():
        return None
    start = process_start_time(pid)
    return start is not None and (proc_start is None or start == proc_start)


class SpoolWriteError(OSError):
    """An event could not be written to its spool file (e.g. the disk is full); names the folder."""


class RunRecorder:
    """Append-only event writer for one run (used inside worker processes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One os.write per event, no buffer: every event reaches the OS at once
            # (a SIGKILLed worker loses nothing it reported), and a failed write
            # leaves no half line for a later one to glue onto.
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> SpoolWriteError:
        return SpoolWriteError(exc.errno, f"cannot write the spool folder {self.path.parent}: "
                                          f"{exc.strerror or exc} (file {self.path.name})")

    def _write(self, event: dict[str, Any]) -> None:
        event["time"] = time.time()
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8")
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # a short write: the disk filled up mid-line
                raise OSError(28, os.strerror(28))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # drop the partial line: what was recorded stays valid
            raise self._error(exc) from None

    def start(self, run_name: str, parent: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> None:
        pid = os.getpid()
        self._write(
            {
                "event": "start",
                "run_name": run_name,
                "parent": parent,
                "params": dict(params),
                "tags": {k: str(v) for k, v in tags.items()},
                "host": socket.gethostname(),
                "pid": pid,
                "proc_start": process_start_time(pid),
            }
        )

    def epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        self._write({"event": "epoch", "step": int(step), "metrics": {k: float(v) for k, v in metrics.items()}})

    def end(self, status: str, tags: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        self._write(
            {
                "event": "end",
                "status": status,
                "tags": {k: str(v) for k, v in (tags or {}).items()},
                "metrics": {k: float(v) for k, v in (metrics or {}).items()},
            }
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SpoolState:
    """What a reader knows about one spool file after reading it."""

    path: Path
    start: dict[str, Any] | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of `path` from byte `offset`; returns (events, new offset).

    A trailing partial line (a worker mid-write) is left for the next read.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError:  # a line damaged by a crash mid-write: skip it, keep the rest
            log.warning("%s: skipped a damaged event line (%d bytes)", path, len(line))
    return events, offset + end


def first_event(path: Path) -> dict[str, Any] | None:
    """The first event of `path` (its start record), or None when it has no whole first line."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return json.loads(line) if line.endswith(b"\n") else None
    except (OSError, ValueError):
        return None


def read_state(path: Path) -> SpoolState:
    """Whole-file view of one run's events."""
    state = SpoolState(Path(path))
    events, _ = read_events(path)
    for event in events:
        kind = event.get("event")
        if kind == "start":
            state.start = event
        elif kind == "epoch":
            state.epochs.append(event)
        elif kind == "end":
            state.end = event
    return state


def spool_files(spool_dir: Path) -> Iterator[Path]:
    """Event files in `spool_dir`, in name order."""
    if spool_dir.is_dir():
        yield from sorted(spool_dir.glob("*.jsonl"))


def unfinished(spool_dir: Path) -> list[tuple[Path, SpoolState]]:
    """Runs in `spool_dir` that started and have no end record yet."""
    out = []
    for path in spool_files(spool_dir):
        st = read_state(path)
        if st.start is not None and st.end is None:
            out.append((path, st))
    return out


def writer_alive(st: SpoolState) -> bool | None:
    """Whether the process that started this run still exists (None: another host)."""
    assert st.start is not None
    return is_alive(st.start["host"], st.start["pid"], st.start.get("proc_start"))


def wait_writers_gone(spool_dir: Path, timeout: float = 10.0) -> None:
    """Give terminated workers a moment to exit, so liveness checks see them gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(writer_alive(st) for _, st in unfinished(spool_dir)):
        time.sleep(0.1)


def append_end(path: Path, status: str, tags: Mapping[str, Any]) -> None:
    """Close a run on behalf of a worker that died (parent side)."""
    with RunRecorder(path) as rec:
        rec.end(status, tags)


def adopt(path: Path, text: str) -> None:
    """Make `path` hold a worker's copy of its events, `text`, if it lacks them.

    Only when the file is missing or a strict prefix of `text` (the worker ran on
    another machine's disk); a complete or different file here is left alone, so
    on a shared disk nothing is written twice.
    """
    have = path.read_text(encoding="utf-8") if path.exists() else ""
    partial = bool(have) and not have.endswith("\n")  # a line still on its way (shared disk)
    if partial or len(have) >= len(text) or not text.startswith(have):
        return
    if not have:
        # Atomic: the tracker may read the spool folder at any moment.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    else:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text[len(have):])
