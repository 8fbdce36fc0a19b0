"""Which process trains an ablation cell, and into which spool file: exactly-once across reruns and processes.

A sweep gets exactly-once from Optuna (one trial number, one spool file, one
MLflow run); an ablation has no study to hand out cells, so its spool folder
does it. Each cell has a claim file `<run_name>.claim` there; the worker that
trains the cell holds an exclusive flock on it from deciding to train until its
end record is written. flock, because the kernel drops it with its holder: a
SIGKILLed worker's claim is taken over by the next process without a timeout.
The claim file also names its holder (host:pid:start) for the waiting line.

Under the claim the worker reads the cell's spool files (the truth, ahead of
MLflow):
  - an attempt with an end that needs no rerun (COMPLETE, or diverged: it is
    deterministic): the cell is done, by another process or a killed run whose
    tracker never sent it; nothing is trained;
  - an attempt with a start and no end: its writer died holding the claim (a
    SIGKILL): the new attempt appends to that same file, so MLflow keeps ONE run
    for the cell, the same one, which the mirror ends when the cell ends;
  - else a new attempt file `<run_name>-aN.jsonl` (after a FAILED or KILLED
    attempt, whose run stays as the record of that failure).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.tracking import spool

CLAIM_SUFFIX = ".claim"  # not *.jsonl: never read as events


def attempt_files(spool_dir: Path, run_name: str) -> list[Path]:
    """The spool files of one cell, `<run_name>-aN.jsonl`, by attempt number N."""
    pattern = re.compile(re.escape(run_name) + r"-a(\d+)\.jsonl")
    found = [(int(m.group(1)), p) for p in Path(spool_dir).glob(f"{glob_escape(run_name)}-a*.jsonl")
             if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def glob_escape(text: str) -> str:
    """`text` matched literally by Path.glob (cell names hold no '*' or '?', but '[' is escaped anyway)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def needs_no_rerun(end: dict[str, Any]) -> bool:
    """An end record that settles its cell: finished, or failed by divergence (deterministic)."""
    tags = end.get("tags", {})
    return tags.get(spool.STATE_TAG) == "COMPLETE" or (
        tags.get(spool.STATE_TAG) == "FAIL" and tags.get("failure_reason", "").startswith("diverged"))


def settled_end(spool_dir: Path, run_name: str) -> dict[str, Any] | None:
    """The end record of the cell's attempt that settles it, if the spool folder has one."""
    for path in attempt_files(spool_dir, run_name):
        end = spool.read_state(path).end
        if end is not None and needs_no_rerun(end):
            return end
    return None


@dataclass
class Claim:
    """A held claim on one cell: `path` is the spool file to record the attempt in."""

    spool_dir: Path
    run_name: str
    path: Path | None = None
    settled: dict[str, Any] | None = None  # the end record when the cell needs no training


def _holder_text(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    return ""


@contextlib.contextmanager
def _claim_lock(spool_dir: Path, run_name: str) -> Iterator[str | None]:
    """Hold the cell's claim file locked; yields None, or (held by another live process) its
    holder as "host:pid:start" without waiting and without holding anything."""
    claim_path = spool_dir / f"{run_name}{CLAIM_SUFFIX}"
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(claim_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise spool.SpoolWriteError(exc.errno, f"cannot write the spool folder {spool_dir}: "
                                               f"{exc.strerror or exc} (file {claim_path.name})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _holder_text(fd) or "another process"
            return
        except OSError as exc:  # a filesystem without locks: claim unlocked, as a lone process
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        with contextlib.suppress(OSError):  # who holds it: only for the waiting line of another process
            os.ftruncate(fd, 0)
            os.pwrite(fd, spool.this_process().encode() + b"\n", 0)
        yield None
    finally:
        os.close(fd)  # releases the claim


@contextlib.contextmanager
def claim_cell(spool_dir: Path, run_name: str) -> Iterator[Claim | str]:
    """Hold the cell's claim for the duration of the block; yields a Claim, or (claim held by
    another live process) its holder as "host:pid:start" without waiting.

    Raises spool.SpoolWriteError when the spool folder cannot be written.
    """
    with _claim_lock(Path(spool_dir), run_name) as holder:
        yield holder if holder is not None else _take(Path(spool_dir), run_name)


def close_abandoned(spool_dir: Path, status: str, tags: dict[str, Any]) -> None:
    """End the attempts whose writer is gone (dead workers): each under its cell's claim, so an
    attempt another process has just taken over is left to it."""
    for path, st in spool.unfinished(spool_dir):
        if spool.writer_alive(st) is not False:
            continue
        with _claim_lock(Path(spool_dir), path.stem.rsplit("-a", 1)[0]) as holder:
            if holder is None and spool.read_state(path).end is None:
                _drop_partial_line(path)
                spool.append_end(path, status, tags)


def wait_for_claim(spool_dir: Path, run_name: str) -> None:
    """Block until nobody holds the cell's claim (its holder ended the cell, or died)."""
    claim_path = Path(spool_dir) / f"{run_name}{CLAIM_SUFFIX}"
    try:
        fd = os.open(claim_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _take(spool_dir: Path, run_name: str) -> Claim:
    """Under the claim: the cell's settled end, or the spool file its attempt continues or starts."""
    claim = Claim(spool_dir, run_name)
    files = attempt_files(spool_dir, run_name)
    open_files = []
    for path in files:
        st = spool.read_state(path)
        if st.end is not None and needs_no_rerun(st.end):
            claim.settled = st.end
        elif st.start is not None and st.end is None:
            open_files.append(path)  # its writer died holding this claim (we hold it now)
    if claim.settled is None and open_files:
        claim.path = open_files.pop()  # the newest: continued, so its MLflow run is reused
        _drop_partial_line(claim.path)
    # Older dead attempts (left by versions that started a new file each time): ended, so no run stays RUNNING.
    for path in open_files:
        _drop_partial_line(path)
        spool.append_end(path, spool.end_status("FAIL"),
                         {spool.STATE_TAG: "FAIL", "failure_reason": "worker process died (found on resume)"})
    if claim.settled is None and claim.path is None:
        n = int(files[-1].stem.rsplit("-a", 1)[1]) + 1 if files else 0
        claim.path = spool_dir / f"{run_name}-a{n}.jsonl"
    return claim


def _drop_partial_line(path: Path) -> None:
    """Cut a line its killed writer left half-written, so the next event starts on a line of its own."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
