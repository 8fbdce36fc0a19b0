"""The journal's write lock (sweep.search.journal_lock) with a holder that is slow or killed, across real processes.

Optuna's symlink lock (what make_storage used before) broke a lock held longer than its
grace period: the slow holder's release then failed ("did not possess lock") after its
record was written, failing that storage call; a holder killed while holding it stalled
every writer for the grace period and left "Forcibly releasing the lock file" in the log.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import optuna

from sweep.search.study import make_storage

HOLDER = """
import os, signal, sys, time
from pathlib import Path
from sweep.search.study import make_storage
lock = make_storage(None, Path(sys.argv[1]))._backend._lock
lock.acquire()
print("held", flush=True)
if sys.argv[2] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(float(sys.argv[2]))  # longer than Optuna's grace period the sweep used (5 s)
lock.release()
print("released", flush=True)
"""


def _hold(journal: Path, how: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(journal), how], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n", proc.communicate()
    return proc


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _create_study(journal: Path) -> list[str]:
    """Write to the journal from this process (a study's creation); returns Optuna's log lines meanwhile."""
    lines = _Lines()
    logger = logging.getLogger("optuna")
    logger.addHandler(lines)
    try:
        optuna.create_study(study_name="s", storage=make_storage(None, journal))
    finally:
        logger.removeHandler(lines)
    return lines.lines


def test_a_slow_holder_of_the_journal_lock_is_waited_for_not_broken(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    holder = _hold(journal, "6")
    log = _create_study(journal)  # waits for the holder
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0 and out == "released\n", err  # its release found its own lock
    assert not [line for line in log if "Forcibly" in line], log
    assert optuna.load_study(study_name="s", storage=make_storage(None, journal)).study_name == "s"


def test_a_holder_killed_holding_the_journal_lock_stalls_no_one(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    holder = _hold(journal, "killed")
    holder.wait(timeout=60)
    log = _create_study(journal)  # the kernel dropped the dead holder's lock: nothing to break
    assert not [line for line in log if "Forcibly" in line or "taking longer" in line], log
    assert optuna.load_study(study_name="s", storage=make_storage(None, journal)).study_name == "s"
