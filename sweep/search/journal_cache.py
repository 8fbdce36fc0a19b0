"""Read a big Optuna journal fast: Optuna's own journal snapshot, kept in a file beside the journal.

Opening a journal replays every record: ~22 per trial, so ~220 000 at 10 000
trials, 3-6 s of CPU before `sweep status` or `sweep report` can say
anything. Optuna's JournalStorage can start from a snapshot of its replay (a
pickled `JournalStorageReplayResult`, the same object its Redis backend
snapshots) and then read only the records after it. `CachedJournalBackend`
is the file backend with such a snapshot in `.<journal name>.snapshot`; a
reader saves a new one when it had to replay many records (`refresh`).

The snapshot names the journal it was taken of: its byte length then, and a
hash of its first 64 KiB and of the 4 KiB before that length. A journal moved
aside and started again, cut shorter, or rewritten does not match and is read
from the start, as without a snapshot (and the snapshot is replaced). Only
readers use this (`sweep status`, `sweep report`); the sweep's writers
keep the plain checked backend (sweep.search.journal). A snapshot that cannot be written (a
read-only folder) is simply not kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal._base import BaseJournalSnapshot  # not exported; what its Redis backend subclasses

from sweep.search.journal import CheckedJournalFileBackend

log = logging.getLogger(__name__)

# A new snapshot once a read replayed this many records past the old one (a few ms of pickling per 1 000 trials).
REFRESH_RECORDS = 2000
_HEAD, _TAIL = 65536, 4096


def snapshot_path(journal: Path) -> Path:
    return journal.with_name(f".{journal.name}.snapshot")


def _fingerprint(journal: Path, length: int) -> str:
    """Hash of the journal's first 64 KiB and its 4 KiB before `length` (within the first `length` bytes)."""
    h = hashlib.sha256()
    with open(journal, "rb") as f:
        h.update(f.read(min(_HEAD, length)))
        f.seek(max(0, length - _TAIL))
        h.update(f.read(min(_TAIL, length)))
    return h.hexdigest()


class CachedJournalBackend(CheckedJournalFileBackend, BaseJournalSnapshot):
    """The sweep's checked journal backend whose snapshot (Optuna's BaseJournalSnapshot) is a file beside the journal."""

    def __init__(self, journal: Path) -> None:
        from sweep.search.journal_lock import JournalFlock

        # The sweep's own lock: a note written through this storage (sweep.closing) excludes the workers.
        super().__init__(str(journal), lock_obj=JournalFlock(Path(journal)))
        self.journal = Path(journal)
        self.snapshot_file = snapshot_path(self.journal)
        self.snapshot_records = 0  # log records the loaded snapshot covers (0: none loaded)

    def load_snapshot(self) -> bytes | None:
        try:
            with open(self.snapshot_file, "rb") as f:
                header = json.loads(f.readline())
                body = f.read()
            length, records = int(header["length"]), int(header["records"])
            if (header.get("optuna") != optuna.__version__ or self.journal.stat().st_size < length
                    or header.get("fingerprint") != _fingerprint(self.journal, length)):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        # Optuna's reader seeks to a record whose offset it knows: this one.
        self._log_number_offset[records] = length
        self.snapshot_records = records
        return body

    def save_snapshot(self, snapshot: bytes) -> None:
        """Optuna calls this too (every 100 trials created through this backend): kept only if it can
        say which records it covers, which a reader knows (`refresh`); a writer's call is ignored."""

    def write(self, replay: Any) -> None:
        """Keep `replay` (the storage's replay result) as the snapshot of the records it has read."""
        records = int(replay.log_number_read)
        length = self._log_number_offset.get(records)
        if length is None:
            return
        header = {"length": length, "records": records, "optuna": optuna.__version__,
                  "fingerprint": _fingerprint(self.journal, length)}
        tmp = self.snapshot_file.with_name(f"{self.snapshot_file.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(json.dumps(header).encode() + b"\n")
                f.write(pickle.dumps(replay, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, self.snapshot_file)
        except OSError as exc:  # a read-only or full folder: the next read replays again, nothing else
            log.debug("could not keep a journal snapshot in %s: %s", self.snapshot_file, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def open_journal_for_reading(journal: Path) -> JournalStorage:
    """A JournalStorage of `journal` started from its snapshot, and a new snapshot kept when it is stale.

    For readers (and the odd note written through it: its records go to the journal under the
    sweep's lock like any other; only a reader's replay is ever kept as the snapshot).
    """
    import gc

    backend = CachedJournalBackend(journal)
    # Unpickling 10 000 trials makes ~2M objects, none garbage: with the collector on, its
    # repeated passes over them took 3/4 of the load (1.7 s of 2.4, cProfile).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        storage = JournalStorage(backend)
    finally:
        if was_enabled:
            gc.enable()
    replay = getattr(storage, "_replay_result", None)  # Optuna's own snapshot object; guarded below
    if replay is not None and int(getattr(replay, "log_number_read", 0)) - backend.snapshot_records >= REFRESH_RECORDS:
        backend.write(replay)
    return storage


def open_for_reading(url: str | None, journal: Path) -> Any:
    """The study's storage for `sweep report`/`sweep status`: a journal file from its snapshot,
    a database as `make_storage` opens it."""
    from sweep.paths import journal_file
    from sweep.search.study import make_storage

    path = journal_file(url, journal)
    if path is not None and path.is_file():
        return open_journal_for_reading(path)
    return make_storage(url, journal)
