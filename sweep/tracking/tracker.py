"""MLflow bookkeeping: spool files -> runs, through MlflowClient with explicit run ids.

Why not `mlflow.start_run` or optuna-integration's MLflowCallback: the fluent
API keeps one active run per process and the callback (deprecated since
Optuna 4.9) loses parent links under parallel workers. Here only the parent
process talks to MLflow, from one background thread (`Tracker`), addressing
every run by id; workers write spool files (sweep.tracking.spool).

Layout in MLflow: one experiment per study (named after it); one parent run
per study (tag `sweep.parent_key=study`) and one per ablation
(`sweep.parent_key=ablation:<name>`); one child run per trial or ablation
cell, named `trial-NNNN` / `cell-...`, tagged `mlflow.parentRunId`.

Several trackers may mirror one spool folder (two `sweep run` processes on
one study in one working folder): an exclusive flock on `LOCK_NAME` in the
spool folder makes each sync, and the find-or-create of parent runs, one
tracker's at a time, and each sync starts from the `.state` side files the
other trackers left, so every spool file gets one run and every event is sent
once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.paths import STUDY_KEY_TAG
from sweep.redact import mask_url
from sweep.tracking.backpressure import Gate, spool_names
from sweep.tracking.mirror import LIVE_SECONDS, SpoolMirror
from sweep.tracking.outage import (
    RETRY_MAX_SECONDS,
    RETRY_MIN_SECONDS,
    Backlog,
    Health,
    ParentBook,
    backlog,
    limit_http_retries,
    tracking_wait_seconds,
)
from sweep.tracking.store import (
    PARENT_KEY_TAG,
    find_parent_run,
    get_or_create_experiment,
    log_batch,
    make_client,
)

if TYPE_CHECKING:  # importing mlflow costs ~1.8 s: only the tracker thread does it
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Lock file in a spool folder, held by the tracker syncing it (not a *.jsonl: never read as events).
LOCK_NAME = ".tracker.lock"
# Seconds to the next poll after one that created or ended runs (more are likely on their way).
BUSY_POLL_SECONDS = 0.02
# Added to the nice value of the tracker thread (Linux: per thread). It shares the cores with the workers it mirrors;
# at an equal priority its MLflow import and SQLite commits (~8 % of a core on trials of 3 s) came out
# of their training: 40 trials took 1.15 x their bare twin. Niced, it runs in what they leave, and on
# short trials the mirror's gate leaves it the time it needs (the workers wait for it there).
# Only once connected: see _nice_this_thread.
TRACKER_NICE = 10


@dataclass
class ParentSpec:
    """A parent run to find (by key) or create."""

    key: str
    run_name: str
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class Tracker:
    """Background thread that mirrors a spool folder into MLflow.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment_name: experiment to log into (created if missing).
        spool_dir: folder of `*.jsonl` event files (see sweep.tracking.spool).
        parents: parent runs that child runs may name in their `parent` field.
        on_run_created: called (in the tracker thread) with (start event, run id)
            after a child run is created, e.g. to record the id on the Optuna trial;
            once per run, by the tracker that creates it (when several mirror
            one folder, maybe another process's).
        poll_seconds: how often to look for new events.
        live_seconds: a running run's epochs are sent at most this often (its start and
            end at once, everything in the final drain); see sweep.tracking.mirror.LIVE_SECONDS.
        say: prints one line to the person running the sweep (the outage and
            catch-up lines, see sweep.tracking.outage.Health); default: a log warning.
        max_behind: hold the workers back (sweep.tracking.backpressure) while this many
            runs have ended, or have no run yet, and are not in MLflow; None:
            never (nothing waits on this folder's workers).

    A poll that created or ended runs is followed by the next one after
    `BUSY_POLL_SECONDS`, not `poll_seconds`: on short trials runs end every few
    tens of milliseconds, and the backlog must not wait half a second. The
    thread runs at nice `TRACKER_NICE`, below the workers whose CPU it shares,
    once it is connected (its start-up is over sooner at their priority).

    Trackers in other processes (or threads) may mirror the same spool folder:
    they take turns through the folder's lock file, and a poll that finds the
    lock taken sends nothing and waits for the next one (the holder is
    mirroring the same files meanwhile). The final drain in `stop()` waits for
    the lock.

    MLflow unreachable (at start or later): nothing is lost, the events wait in
    the spool folder; the thread retries with backoff (RETRY_MIN..MAX_SECONDS)
    and says so once when the outage starts and once when it has caught up.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        spool_dir: Path,
        parents: list[ParentSpec],
        on_run_created: Callable[[dict[str, Any], str], None] | None = None,
        poll_seconds: float = 0.5,
        say: Callable[[str], None] | None = None,
        max_behind: int | None = None,
        live_seconds: float = LIVE_SECONDS,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.spool_dir = Path(spool_dir)
        self.parents = {p.key: p for p in parents}
        self.on_run_created = on_run_created
        self.poll_seconds = poll_seconds
        self.experiment_id: str | None = None
        self.parent_run_ids: dict[str, str] = {}
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._deadline: float | None = None  # monotonic end of the final drain's retries
        # Parent summaries that could not be queued in `.parents.json` (disk full).
        self._parent_queue: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock_warned = False
        self._client: MlflowClient | None = None
        self.health = Health(mask_url(tracking_uri) or "", self.spool_dir, say or (lambda line: log.warning("%s", line)))
        self.mirror = SpoolMirror(self.spool_dir, self.health, on_run_created, live_seconds)
        self.gate = Gate(self.spool_dir, max_behind)
        self.drained = False  # the final drain sent everything (parents included)
        self._reopen = True  # False in sync_now: complete what a sweep left, re-open nothing
        self._end_status: str | None = None  # the parents' end, once stop() gave it
        self._end_recorded = False  # that end is in `.parents.json` (for `sweep sync`)
        self._thread = threading.Thread(target=self._main, name="mlflow-tracker", daemon=True)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Tracker:
        # An end left by an earlier sweep that could not send it: this sweep re-opens
        # the parent run and writes its own end when it stops. (Lock busy: another
        # sweep of this folder is running, and the end is its business.)
        with contextlib.suppress(OSError), self._locked(block=False) as locked:
            book = ParentBook(self.spool_dir)
            entries = book.read()
            if locked and any(entries.get(k, {}).pop("end", None) is not None for k in list(self.parents)):
                book.write(entries)
        before = spool_names(self.spool_dir)
        self._thread.start()
        if self.gate.limit is not None:
            threading.Thread(target=self.gate.watch_start_up, args=(self.ready, lambda: not self.health.down, before),
                             name="mlflow-gate", daemon=True).start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        self.ready.wait(timeout)
        if self.error is not None:
            raise RuntimeError(f"MLflow tracking at {mask_url(self.tracking_uri)} failed: {self.error}") from self.error
        return self.ready.is_set()

    def stop(self, parent_status: str | None = None, timeout: float | None = None) -> Backlog:
        """Drain every spool file and end the parent runs with `parent_status`, retrying
        for at most `timeout` seconds (default `tracking_wait_seconds()`) while MLflow is
        unreachable; returns what is still not in MLflow (empty when all was sent).

        What could not be sent stays in the spool folder (parent ends and summary
        included, in its `.parents.json`) for `sweep sync`.
        """
        timeout = tracking_wait_seconds() if timeout is None else timeout
        if parent_status is not None:
            self._end_status = parent_status  # sent by the final drain even if the book cannot be written
            try:
                with self._locked(block=True):
                    for key in self.parents:
                        ParentBook(self.spool_dir).update(key, end=parent_status)
                    self._end_recorded = True
            except OSError as exc:  # disk full: `sweep sync` will not know the end, the drain still sends it
                log.warning("could not record the parent runs' end in %s: %s", self.spool_dir, exc)
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        # One HTTP call may still be under way when the deadline passes: it ends within
        # MLflow's (limited) timeout and retries.
        self._thread.join(timeout + 2 * float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")) + 5)
        with self.gate.lock:
            self.gate.open()
        # Parent updates another sweep of this folder queued after this drain are its to send.
        return self.backlog(leave_to_others=True)

    def abandon(self, parent_status: str | None, lock_seconds: float = 1.0) -> Backlog:
        """Stop waiting for MLflow at once (a signal stopped the sweep's end): no final drain.

        Records `parent_status` as the parents' end in `.parents.json` for `sweep sync`,
        unless `stop()` already recorded one or the folder's lock stays taken `lock_seconds`
        (another tracker sending meanwhile). Returns what is not in MLflow at this moment;
        the thread may still send some of it before the process exits.
        """
        if parent_status is not None and not self._end_recorded:
            deadline = time.monotonic() + lock_seconds
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), self._locked(block=False) as locked:
                    if locked:
                        for key in self.parents:
                            ParentBook(self.spool_dir).update(key, end=parent_status)
                        self._end_status, self._end_recorded = parent_status, True
                        break
                time.sleep(0.05)
        self._deadline = time.monotonic()
        self._stop.set()
        self._wake.set()
        return self.backlog()

    def backlog(self, leave_to_others: bool = False) -> Backlog:
        """What is not in MLflow yet: the spool folder as its side files say, corrected
        by what this tracker knows but could not save there (see outage.backlog)."""
        return backlog(self.spool_dir, known=self.mirror.known(),
                       parents_queued=set(self._parent_queue), leave_to_others=leave_to_others,
                       closed=self.mirror.closed_names)

    def log_parent(
        self, key: str, metrics: Mapping[str, float] | None = None, tags: Mapping[str, Any] | None = None
    ) -> bool:
        """Queue summary metrics and tags for the parent run `key`; sent in one batch by the
        tracker's next sync (and kept for `sweep sync` if MLflow is down). False if `key` is unknown.

        Held under the spool folder's lock: another sweep process of this study
        may write the same parent run at the same moment, and MLflow's SQLite
        tag write is read-then-insert (two at once: IntegrityError).
        """
        if key not in self.parents:
            return False
        try:
            with self._locked(block=True):
                ParentBook(self.spool_dir).update(key, metrics={k: float(v) for k, v in (metrics or {}).items()},
                                                  tags={k: str(v) for k, v in (tags or {}).items()})
        except OSError as exc:  # the spool folder's disk is full: this tracker sends it from memory
            log.warning("could not queue %s for the parent run in %s (%s): sending it from memory",
                        {**(metrics or {}), **(tags or {})}, self.spool_dir, exc)
            queued = self._parent_queue.setdefault(key, {"metrics": {}, "tags": {}})
            queued["metrics"].update({k: float(v) for k, v in (metrics or {}).items()})
            queued["tags"].update({k: str(v) for k, v in (tags or {}).items()})
        self.poke()
        return True

    def poke(self) -> None:
        """Sync now instead of at the next poll."""
        self._wake.set()

    def trial_ended(self, spool_name: str) -> None:
        """The run of spool file `spool_name` ended in its worker: counted by the gate until MLflow
        has its end (sweep.tracking.backpressure), and a sync made soon."""
        self.gate.ended(spool_name, self.mirror.closed_names, self.ready.is_set() and not self.health.down)
        self.mirror.hint(spool_name)
        self._wake.set()

    @property
    def client(self) -> MlflowClient:
        self.wait_ready()
        assert self._client is not None
        return self._client

    def sync_now(self) -> Backlog:
        """Connect, send everything, end the parents as recorded, in this thread (`sweep sync`).

        Raises whatever MLflow raises; returns what is still missing (normally nothing).
        """
        limit_http_retries()
        self._reopen = False
        self._record_parent_specs()
        self._connect()
        self.ready.set()
        self.sync_once(block=True)
        self._flush_parents()
        return self.backlog()

    # -- thread body -------------------------------------------------------
    def _main(self) -> None:
        limit_http_retries()
        delay = RETRY_MIN_SECONDS
        while True:
            stopping = self._stop.is_set()
            try:
                if self._client is None:
                    self._record_parent_specs(block=False)  # also in _connect, under its lock
                    self._connect()
                    _nice_this_thread()
                    self.ready.set()
                # Regular polls skip a busy lock; the final drain waits for it.
                block = stopping or self.health.down
                runs_before = self.mirror.runs_created + self.mirror.runs_ended
                sent = self.sync_once(block=block)
                # Runs created or ended (short trials): look again soon. Otherwise the usual pace
                # (a running run's epochs go every `live_seconds` anyway, see SpoolMirror).
                busy = self.mirror.runs_created + self.mirror.runs_ended != runs_before
                self._flush_parents(block=block)
                self.health.succeeded(sent)
                delay = RETRY_MIN_SECONDS
                if stopping:
                    self.drained = True
                    return
                wait = min(self.poll_seconds, BUSY_POLL_SECONDS) if busy else self.poll_seconds
            except Exception as exc:  # a flaky or dead server must not kill the sweep: retry later
                self.health.failed(exc)
                with self.gate.lock:  # after `down` is set: the start-up watch then leaves it open
                    self.gate.open()  # an outage must not hold the sweep back: the spool folder keeps all
                log.debug("MLflow sync failed, will retry in %.0f s: %s", delay, exc)
                if stopping and (self._deadline is None or time.monotonic() + delay > self._deadline):
                    return
                wait, delay = delay, min(RETRY_MAX_SECONDS, delay * 2)
                if self._deadline is not None:
                    wait = min(wait, max(0.0, self._deadline - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def _record_parent_specs(self, block: bool = True) -> None:
        """Write the parent specs into the spool folder's `.parents.json` (for `sweep sync`);
        with `block` False, not if another tracker holds the lock."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with self._locked(block=block) as locked:
            if locked:
                self._write_parent_specs()

    def _write_parent_specs(self) -> None:
        book = ParentBook(self.spool_dir)
        entries = book.read()
        changed = False
        for spec in self.parents.values():
            want = {"run_name": spec.run_name, "params": {k: str(v) for k, v in spec.params.items()},
                    "tags": dict(spec.tags), "experiment": self.experiment_name}
            if entries.get(spec.key, {}).get("spec") != want:
                entries.setdefault(spec.key, {})["spec"] = want
                changed = True
        if changed:
            book.write(entries)

    def _connect(self) -> None:
        client = make_client(self.tracking_uri)
        self.experiment_id = get_or_create_experiment(client, self.experiment_name)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # Under the lock: another tracker of this folder would otherwise find no
        # parent run either, and both would create one.
        with self._locked(block=True):
            self._write_parent_specs()
            book = ParentBook(self.spool_dir)
            entries = book.read()  # written back once, below (this lock keeps it ours meanwhile)
            recorded = {k: e["run_id"] for k, e in entries.items() if e.get("run_id")}
            created: set[str] = set()
            stale: set[str] = set()  # parents whose runs' side files describe another store
            for spec in self.parents.values():
                run_id = find_parent_run(client, self.experiment_id, spec.key, spec.tags.get(STUDY_KEY_TAG))
                tags = {PARENT_KEY_TAG: spec.key, **spec.tags}
                if run_id is None:
                    run = client.create_run(self.experiment_id, run_name=spec.run_name, tags=tags)
                    run_id = run.info.run_id
                    created.add(run_id)
                    # Params only on a new run: an existing run keeps its own (MLflow params are immutable).
                    self._log_batch(client, run_id, params=spec.params)
                else:
                    if self._reopen:  # a sweep runs under it again (`sweep sync` only completes it)
                        client.update_run(run_id, status="RUNNING")
                    self._log_batch(client, run_id, tags=tags)
                self.parent_run_ids[spec.key] = run_id
                if run_id in created or recorded.get(spec.key, run_id) != run_id:
                    stale.add(spec.key)
            self._reconcile_book(book, entries, recorded, stale)
        self._client = client

    def _reconcile_book(self, book: ParentBook, entries: dict[str, dict[str, Any]], recorded: dict[str, str],
                        stale: set[str]) -> None:
        """After connecting: note in `.parents.json` which parent runs the side files refer
        to, and forget what was sent under the `stale` parents.

        A parent is stale when this store did not have it, or it is not the one the side
        files were sent under (the store was deleted or replaced, or the tracking URI
        changed): the side files of its runs are dropped so every run the spool folder kept
        is sent here, and its summary (and, for `sweep sync`, its end) is queued again.
        Runs this store has are found again by their spool-file tag, and the points it has
        are dropped by MLflow.
        """
        changed = any(recorded.get(k) != rid for k, rid in self.parent_run_ids.items())
        for key, run_id in self.parent_run_ids.items():
            entry = entries.setdefault(key, {})
            entry["run_id"] = run_id
            if key not in stale:
                continue
            sent = entry.pop("sent", {})
            for part in ("metrics", "tags"):
                entry[part] = {**sent.get(part, {}), **entry.get(part, {})}
            if sent.get("end") and not self._reopen:  # a sweep that runs now writes its own end
                entry.setdefault("end", sent["end"])
            changed = True
        if changed:
            with contextlib.suppress(OSError):  # a full disk: the next tracker checks again
                book.write(entries)
        forgotten = self.mirror.forget(stale) if stale else 0
        if forgotten:
            self.health.say(f"tracking: MLflow at {self.health.where} does not have the runs this folder sent "
                            f"before (a new or another store); sending the {forgotten} run(s) kept in "
                            f"{self.spool_dir} again")

    def _flush_parents(self, block: bool = True) -> None:
        """Send queued parent summaries and ends (from `.parents.json`), then clear them there
        (a regular poll skips a busy lock, as `sync_once` does)."""
        from mlflow.entities import Metric

        client = self._client
        assert client is not None
        with self._locked(block=block) as locked:
            if not locked:
                return
            book = ParentBook(self.spool_dir)
            entries = book.read()
            queued, self._parent_queue = self._parent_queue, {}
            for key, q in queued.items():
                entry = entries.setdefault(key, {})
                entry["metrics"] = {**entry.get("metrics", {}), **q["metrics"]}
                entry["tags"] = {**entry.get("tags", {}), **q["tags"]}
            if self._end_status is not None and self._stop.is_set():
                for key in self.parents:
                    entries.setdefault(key, {}).setdefault("end", self._end_status)
            for key, entry in entries.items():
                run_id = self.parent_run_ids.get(key)
                if run_id is None or not (entry.get("metrics") or entry.get("tags") or entry.get("end")):
                    continue
                now = int(time.time() * 1000)
                self._log_batch(client, run_id, metrics=[Metric(k, float(v), now, 0) for k, v in entry.get("metrics", {}).items()],
                                tags=entry.get("tags"))
                if entry.get("end"):
                    client.set_terminated(run_id, entry["end"])
                # Kept as sent: a store that turns out not to have this parent gets it again.
                sent = entry.setdefault("sent", {})
                for part in ("metrics", "tags"):
                    sent[part] = {**sent.get(part, {}), **entry.pop(part, {})}
                if entry.get("end"):
                    sent["end"] = entry.pop("end")
                entry.pop("queued_by", None)  # nobody waits for anything of it now
                with contextlib.suppress(OSError):  # sent; a stale entry would only be sent again
                    book.write(entries)

    @contextlib.contextmanager
    def _locked(self, block: bool) -> Iterator[bool]:
        """Hold the spool folder's lock; yields False (holding nothing) when `block`
        is False and another tracker holds it.

        flock, not lockf: it is per open file, so two trackers in one process
        exclude each other too, and a killed process's lock goes with its files.
        """
        fd = os.open(self.spool_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            except OSError as exc:  # a filesystem without locks: mirror unlocked, as when alone
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                self._warn_unlocked(exc)
            yield True
        finally:
            os.close(fd)  # releases the lock

    def _warn_unlocked(self, exc: OSError) -> None:
        if not self._lock_warned:
            self._lock_warned = True
            log.warning("cannot lock %s (%s): another tracker of this folder could log runs twice",
                        self.spool_dir / LOCK_NAME, exc)

    # -- syncing -----------------------------------------------------------
    def sync_once(self, block: bool = True) -> int:
        """Mirror every new event into MLflow; returns how many events were sent.

        Holds the spool folder's lock meanwhile. With `block=False` a lock held by
        another tracker makes this return 0 at once.
        """
        assert self._client is not None and self.experiment_id is not None
        if not self.spool_dir.is_dir():
            return 0
        with self._locked(block) as locked:
            if not locked:
                return 0
            # Not while the outage lasts: the gate is for a tracker that is merely slow.
            closed = self.mirror.closed_names
            on_behind = None if self.health.down else (lambda n: self.gate.hold_back(n, closed))
            # A blocking sync (final drain, `sweep sync`, an outage) lists the whole folder.
            sent = self.mirror.sync(self._client, self.experiment_id, self.parent_run_ids, on_behind, full=block)
        self.gate.after_sync(self.mirror.closed_names, self.health.down, self.mirror.behind, sent)
        return sent

    runs_created = property(lambda self: self.mirror.runs_created)
    runs_ended = property(lambda self: self.mirror.runs_ended)
    events_sent = property(lambda self: self.mirror.events_sent)

    _log_batch = staticmethod(log_batch)


def _nice_this_thread() -> None:
    """Set the calling thread's nice value to the process's + TRACKER_NICE (Linux: per thread; idempotent).

    The tracker calls it once MLflow is connected, not before: niced from the start, its
    start-up (importing MLflow and creating the store, ~2.7 s of CPU) stretched to ~7 s
    beside two training workers, past the end of their first trials, which then waited
    at the mirror's gate (sweep.tracking.backpressure). At their priority it is over in ~3 s.
    """
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the same priority as the rest
        niced = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + TRACKER_NICE)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niced)
