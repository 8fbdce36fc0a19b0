"""The Optuna journal file, written whole or not at all and read with its damage named.

Optuna's `JournalFileBackend` has three silent failure modes this backend closes:

- A write the disk cut short (a full disk stops at a page boundary) leaves
  half a record; the next record is glued to it, the glued line no longer
  parses and, being last, is skipped: Optuna then fails with `AssertionError:
  Should not reach.` (its create_study cannot find the study it just wrote).
  Here a failed append is truncated back to the size before it and raised as
  `JournalWriteError` (an OSError naming the file and the OS reason).
- A line damaged in the middle raised `Expecting ':' delimiter: line 1 column
  77`, naming neither the file nor its line. Here `JournalDamaged` names both.
- A record deleted or duplicated in the middle was accepted: Optuna numbers
  trials by their position, so every later record lands on the wrong trial.
  Here every record carries its own 0-based line number (`LINE_KEY`; Optuna's
  replay reads only the keys it knows, so the journal stays a plain Optuna
  journal), and a record whose number is not its line is refused.

What stays undetectable: records written by plain Optuna (no `LINE_KEY`: a
journal from before this change, or another Optuna client), the deletion of
the last record(s) (nothing after them to disagree), and an edit inside a
record that keeps it valid JSON with the same number (a changed value).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Generator
from typing import Any

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file

# Each record's own 0-based line number in the file (ignored by Optuna's replay).
LINE_KEY = "sweep_line"

_WHAT_TO_DO = "restore it from a copy, or move it aside and start the study again (the same command then starts afresh)"


class JournalDamaged(ValueError):
    """A journal line that is not the record it should be (the message names the file and the line)."""


class JournalWriteError(OSError):
    """A record could not be appended (full disk, read-only file); the journal is as it was before."""

    def __init__(self, path: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), path)

    def __str__(self) -> str:
        return f"cannot write the Optuna journal {self.filename}: {self.strerror}"


class CheckedJournalFileBackend(JournalFileBackend):
    """`JournalFileBackend` with whole-or-nothing appends, numbered records and named damage."""

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Optuna's read, but a complete line (ending in a newline) that does not parse, or
        whose record says another line number, raises `JournalDamaged`; a last line without
        its newline is a write under way (or cut: `sweep.search.study.repair_journal`) and waits."""
        with open(self._file_path, "rb") as f:
            remaining = os.stat(self._file_path).st_size  # another process may append meanwhile
            start = 0
            if log_number_from in self._log_number_offset:
                f.seek(self._log_number_offset[log_number_from])
                start = log_number_from
                remaining -= self._log_number_offset[log_number_from]
            for log_number, line in enumerate(f, start=start):
                remaining -= len(line)
                if remaining < 0 or not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise self._damaged(log_number, f"is not a whole record ({err.msg}, column {err.colno})") from None
                if not isinstance(record, dict) or "op_code" not in record:
                    raise self._damaged(log_number, "is not an Optuna journal record")
                said = record.get(LINE_KEY, log_number)
                if said != log_number:
                    what = "deleted" if isinstance(said, int) and said > log_number else "duplicated or moved"
                    raise self._damaged(log_number, f"holds the record written as line {_line(said)}: "
                                                    f"a record before it was {what}")
                end = self._log_number_offset[log_number] + len(line)
                self._log_number_offset.setdefault(log_number + 1, end)
                self._last_line = (log_number + 1, end)
                if log_number >= log_number_from:
                    yield record

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append `logs`, each with its line number; on any OS error the file is cut back to its
        size before, so no half record stays, and `JournalWriteError` is raised."""
        with get_lock_file(self._lock):
            try:
                fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
            except OSError as exc:
                raise JournalWriteError(self._file_path, exc) from None
            try:
                size = os.fstat(fd).st_size
                first = self._lines_before(size)
                data = "".join(json.dumps({**log, LINE_KEY: first + i}, separators=(",", ":")) + "\n"
                               for i, log in enumerate(logs)).encode("utf-8")
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as exc:
                    with contextlib.suppress(OSError):  # nothing more can be done; repair_journal drops a cut last record
                        os.ftruncate(fd, size)
                    raise JournalWriteError(self._file_path, exc) from None
            finally:
                os.close(fd)

    def _lines_before(self, size: int) -> int:
        """Lines in the first `size` bytes: those read already, plus the newlines after them."""
        known, offset = getattr(self, "_last_line", (0, 0))
        if offset > size:  # the file was cut back since (never while a storage is open): count it all
            known, offset = 0, 0
        with open(self._file_path, "rb") as f:
            f.seek(offset)
            tail = f.read(size - offset)
        return known + tail.count(b"\n")

    def _damaged(self, log_number: int, what: str) -> JournalDamaged:
        return JournalDamaged(f"{self._file_path}: line {log_number + 1} {what}; the journal is damaged there: "
                              + _WHAT_TO_DO)


def _line(said: object) -> str:
    return str(said + 1) if isinstance(said, int) else repr(said)
