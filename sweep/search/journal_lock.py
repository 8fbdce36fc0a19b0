"""The journal file's write lock: flock on a side file, released by the kernel when its holder dies.

Optuna's JournalFileSymlinkLock is a symlink that a dead holder leaves behind; a
waiter breaks it once the journal has not changed for `grace_period` seconds
("Forcibly releasing the lock file"). That also breaks the lock of a holder that
is alive but slow (an fsync on a loaded disk, a descheduled process): its own
release then fails with RuntimeError("did not possess lock") after its record
was written, so that storage call fails (a trial or the sweep with it), and it
removes whatever lock a third process has taken meanwhile. Optuna's acquire
also "releases" on any exception while waiting (a Ctrl-C, the sweep's SIGTERM
or --timeout-kill alarm), removing a lock another process holds.

flock has none of this: a killed holder's lock goes with its open files, a slow
one is waited for, an interrupted wait holds and removes nothing. Each acquire
opens its own descriptor, so threads of one process exclude each other too.
On a file system without flock, Optuna's symlink lock is used as before.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileSymlinkLock
from optuna.storages.journal._file import BaseJournalFileLock  # Optuna does not re-export it

LOCK_SUFFIX = ".flock"  # not Optuna's ".lock": an old symlink lock left there is not mistaken for this file
# Optuna's symlink lock, only where flock is not supported: how long the journal may stand
# still under someone else's lock before it is taken to be a dead holder's.
SYMLINK_GRACE_SECONDS = 30
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class JournalFlock(BaseJournalFileLock):
    """Exclusive lock of the journal at `journal_path` (its side file `<journal>.flock`)."""

    def __init__(self, journal_path: str | Path) -> None:
        self.journal_path = str(journal_path)
        self._local = threading.local()  # this thread's descriptor (or fallback lock) while held

    def __getstate__(self) -> dict[str, Any]:  # a storage sent to another process: only the path travels
        return {"journal_path": self.journal_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["journal_path"])  # type: ignore[misc]

    def acquire(self) -> bool:
        fd = os.open(self.journal_path + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits; a signal handler that raises leaves it untaken
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_FLOCK:
                raise
            fallback = JournalFileSymlinkLock(self.journal_path, grace_period=SYMLINK_GRACE_SECONDS)
            self._local.held = fallback
            return fallback.acquire()
        except BaseException:
            os.close(fd)
            raise
        self._local.held = fd
        return True

    def release(self) -> None:
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is None:
            raise RuntimeError("Error: did not possess lock")
        if isinstance(held, JournalFileSymlinkLock):
            held.release()
        else:
            os.close(held)  # closing the only descriptor of this open file drops its flock
