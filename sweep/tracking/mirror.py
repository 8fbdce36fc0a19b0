"""Spool files -> child runs in MLflow: what has been sent of each file, and the sending.

Each `trial-NNNN.jsonl` in a spool folder is mirrored into one child run. Its
`.state` side file ({"run_id", "offset", "closed", "creating"}) says how much
of it MLflow has; a tracker resumes from it, and several trackers of one
folder (holding its lock in turns, see sweep.tracking) share it, so every
event is sent once.

No search per run: a run is created right after its side file says
`creating` (no id yet), and its id is saved right after. Only a file whose
side file says `creating`, or that had no side file when this tracker
started (a tracker that died, or could not write side files, may have made
its run), is looked up in MLflow by its spool-file tag first; many such files
at once are looked up with one listing of the parent's runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.tracking import spool
from sweep.tracking.outage import Health, short_reason
from sweep.tracking.store import log_batch

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Tag naming the spool file a child run mirrors: finds the run again when a
# .state side file was lost after the run was created, so no run is made twice.
SPOOL_FILE_TAG = "sweep.spool_file"


@dataclass
class FileState:
    run_id: str | None = None
    offset: int = 0
    closed: bool = False
    creating: bool = False  # a create_run was (maybe) sent and its id not saved yet


# Above this many files to look up in one sync, one listing of the parent's runs replaces a search per file.
_LIST_LOOKUPS_ABOVE = 10
# A spool folder with this many closed files or more is listed at most every FULL_LISTING_SECONDS (`_names`).
LIST_EVERY_SYNC_BELOW = 1000
FULL_LISTING_SECONDS = 1.0
# A running run's new epochs go to MLflow at most this often (its start and its end go at once).
# Each log_batch costs a SQLite commit and a read of the run's latest metrics whatever its size:
# sent at every 0.5-s poll, the epochs of 6-s trials cost the tracker ~4 % of a core, and the
# workers beside it trained ~4 % slower (bench/overhead_6s.py). The live curves in MLflow's UI
# are then at most this many seconds behind the spool file.
LIVE_SECONDS = 5.0


def _behind(st: FileState, events: list[dict[str, Any]]) -> bool:
    """MLflow is behind on this file's run: it has no run yet, or the run has ended in the spool file."""
    return st.run_id is None or any(e.get("event") == "end" for e in events)


class SpoolMirror:
    """Mirrors the spool files of one folder into child runs (the caller holds the folder's lock).

    on_run_created(start_event, run_id): called once per run created or found again.
    """

    def __init__(self, spool_dir: Path, health: Health,
                 on_run_created: Callable[[dict[str, Any], str], None] | None = None,
                 live_seconds: float = LIVE_SECONDS) -> None:
        self.spool_dir = Path(spool_dir)
        self.health = health
        self.on_run_created = on_run_created
        self.live_seconds = live_seconds
        self._sent_at: dict[str, float] = {}  # spool file -> time.monotonic() of its run's last batch
        # Only closed states are trusted from memory (closed is final); every
        # other state is re-read from its side file under the lock.
        self.states: dict[Path, FileState] = {}
        # Files whose side file could not be written (disk full): their state in
        # memory is the truth for this tracker, and mirroring goes on from it.
        self.unsaved: set[Path] = set()
        self._save_warned = False
        self.runs_created = self.runs_ended = self.events_sent = 0
        # Names of files closed in MLflow: skipped by every sync without touching the disk.
        self.closed_names: set[str] = set()
        # Files with no side file now: their run may exist (made by a tracker that died
        # or could not save), so they are looked up before a run is created for them.
        self.unknown: set[str] = self._files_without_state()
        self.behind = 0  # runs ended or not created, not in MLflow, at the last sync's start
        self._lookups: dict[str, dict[str, str]] = {}  # parent run id -> {spool file: run id}, one sync's
        self._list_lookups = False  # this sync looks files up in such a listing
        # The folder's not-closed files as of the last full listing, plus the ones named since (`hint`).
        self._open: set[str] = set()
        self._hints: list[str] = []  # appended by the sweep's main thread (`hint`), taken by a sync
        self._listed_at: float | None = None  # time.monotonic() of that listing

    def _files_without_state(self) -> set[str]:
        try:
            names = set(os.listdir(self.spool_dir))
        except OSError:
            return set()
        return {n for n in names if n.endswith(".jsonl") and n.removesuffix(".jsonl") + ".state" not in names}

    def hint(self, name: str) -> None:
        """The spool file `name` has new events (its run ended): the next sync reads it even without a listing.
        Called from another thread: a list append is atomic, and a hint lost in a race waits for the next listing."""
        self._hints.append(name)

    def _names(self, full: bool = True) -> list[str]:
        """Spool file names not closed yet, in name order.

        A listing of the folder costs ~10 ms at 10 000 trials (20 000 files), and short
        trials are synced several times a second: that was most of the growth of the
        tracker's time per trial with the study. So a big folder is listed at most every
        `FULL_LISTING_SECONDS` (or when `full`: the final drain, `sweep sync`, an outage);
        in between a sync reads the files not closed at the last listing and those named
        since by `hint`. A run that starts in between is created at the next listing.
        """
        now = time.monotonic()
        if (full or self._listed_at is None or now - self._listed_at >= FULL_LISTING_SECONDS
                or len(self.closed_names) < LIST_EVERY_SYNC_BELOW):
            try:
                names = os.listdir(self.spool_dir)
            except FileNotFoundError:
                return []
            self._open = {n for n in names if n.endswith(".jsonl") and n not in self.closed_names}
            self._listed_at = now
        hints, self._hints = self._hints, []
        self._open.update(n for n in hints if n not in self.closed_names)
        self._open -= self.closed_names & self._open
        return sorted(self._open)

    def known(self) -> dict[Path, dict[str, Any]]:
        """Side states held in memory only (for `outage.backlog`)."""
        return {p: vars(self.states[p]) for p in self.unsaved}

    def sync(self, client: MlflowClient, experiment_id: str, parent_run_ids: dict[str, str],
             on_behind: Callable[[int], None] | None = None, full: bool = True) -> int:
        """Send the new events; returns how many were sent.

        Every new event with `full` (the final drain, `sweep sync`, an outage); otherwise
        a running run's epochs wait until `live_seconds` after its last batch (`_due`).
        on_behind(n) is called before sending with the number of runs that ended,
        or have no MLflow run yet, and are not in MLflow (sweep.tracking.backpressure).
        """
        pending = []
        now = time.monotonic()
        for name in self._names(full):
            path = self.spool_dir / name
            st = self.state(path)
            if st.closed:
                self.closed_names.add(name)
                continue
            if st.run_id is not None:
                self.unknown.discard(name)
            events, offset = spool.read_events(path, st.offset)
            if events and (full or self._due(name, st, events, now)):
                pending.append((path, st, events, offset))
        self.behind = sum(1 for _, st, events, _ in pending if _behind(st, events))
        if on_behind is not None:
            on_behind(self.behind)
        self._lookups = {}
        self._list_lookups = sum(1 for path, st, _, _ in pending
                                 if st.run_id is None and path.name in self.unknown) > _LIST_LOOKUPS_ABOVE
        sent = 0
        for path, st, events, offset in pending:
            self._apply(client, experiment_id, parent_run_ids, path, st, events)
            st.offset = offset
            self.save_state(path, st)
            self._sent_at[path.name] = now
            if st.closed:
                self.closed_names.add(path.name)
                self._sent_at.pop(path.name, None)
            sent += len(events)
        self.events_sent += sent
        return sent

    def _due(self, name: str, st: FileState, events: list[dict[str, Any]], now: float) -> bool:
        """Whether a regular sync sends these new events of `name` now: always a run to create
        or to end, a running run's epochs once `live_seconds` have passed since its last batch."""
        return (_behind(st, events) or st.creating
                or now - self._sent_at.get(name, -float("inf")) >= self.live_seconds)

    def forget(self, parent_keys: Iterable[str]) -> int:
        """Drop the side files of the runs under these parents (they describe another
        store), so that those runs are sent again; returns how many were dropped."""
        keys = set(parent_keys)
        forgotten = 0
        for path in spool.spool_files(self.spool_dir):
            first = spool.first_event(path)
            if first is None or first.get("parent") not in keys:
                continue
            self.states.pop(path, None)
            self.unsaved.discard(path)
            self.closed_names.discard(path.name)
            self.unknown.add(path.name)  # the store may have its run after all: look it up
            with contextlib.suppress(FileNotFoundError):
                path.with_suffix(".state").unlink()
                forgotten += 1
        return forgotten

    def state(self, path: Path) -> FileState:
        """What has been sent of `path`: as its side file says (another tracker may
        have advanced it), except a closed file, which no tracker touches again."""
        st = self.states.get(path)
        if st is not None and (st.closed or path in self.unsaved):
            return st
        try:
            text = path.with_suffix(".state").read_text()
        except FileNotFoundError:
            st = FileState()
        else:
            st = FileState(**json.loads(text))
        self.states[path] = st
        return st

    def save_state(self, path: Path, st: FileState) -> None:
        side = path.with_suffix(".state")
        tmp = side.with_suffix(".state.tmp")
        try:
            tmp.write_text(json.dumps(st.__dict__))
            os.replace(tmp, side)
        except OSError as exc:
            # The side file only tells a later tracker or `sweep sync` where to resume:
            # mirroring goes on from memory. A later sync resends from the saved
            # position, and that is harmless: it finds the run by its spool-file tag
            # (no second run) and MLflow drops metrics identical to ones it has.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.unsaved.add(path)
            if not self._save_warned:
                self._save_warned = True
                self.health.say(f"tracking: cannot save its progress in {self.spool_dir} ({short_reason(exc)}); "
                                "sending to MLflow from memory")
        else:
            self.unsaved.discard(path)

    def _apply(self, client: MlflowClient, experiment_id: str, parent_run_ids: dict[str, str], path: Path,
               st: FileState, events: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        metrics: list[Metric] = []
        params: dict[str, Any] = {}
        tags: dict[str, str] = {}
        end: dict[str, Any] | None = None
        for ev in events:
            kind = ev.get("event")
            if kind == "start":
                if st.run_id is None:
                    self._create_run(client, experiment_id, parent_run_ids, path, st, ev)
                # Also on such a retry (the same values again: accepted by MLflow).
                params.update(ev.get("params", {}))
            elif kind == "epoch":
                ts = int(ev["time"] * 1000)
                metrics += [Metric(k, v, ts, ev["step"]) for k, v in ev["metrics"].items()]
            elif kind == "end":
                end = ev
        if st.run_id is None:  # events without a start record: nothing to attach them to
            log.warning("spool file %s has no start record; skipped", path)
            st.closed = True
            return
        if end is not None:
            tags.update(end.get("tags", {}))
            ts = int(end["time"] * 1000)
            # One-shot figures (summary/...) at step 0: MLflow charts a metric with no later step as a bar.
            metrics += [Metric(k, v, ts, 0) for k, v in end.get("metrics", {}).items()]
        log_batch(client, st.run_id, metrics=metrics, params=params, tags=tags)
        if end is not None:
            client.set_terminated(st.run_id, end["status"], end_time=int(end["time"] * 1000))
            st.closed = True
            self.runs_ended += 1

    def _create_run(self, client: MlflowClient, experiment_id: str, parent_run_ids: dict[str, str], path: Path,
                    st: FileState, ev: dict[str, Any]) -> None:
        """The child run of spool file `path` from its start event `ev`; its id saved in `st` at once."""
        parent = parent_run_ids.get(ev.get("parent", ""))
        run_tags = {**ev.get("tags", {}), SPOOL_FILE_TAG: path.name}
        if parent:
            run_tags["mlflow.parentRunId"] = parent
        # Created before, its id not saved (a crash or a lost answer between the two)?
        existing = None
        if st.creating or path.name in self.unknown:
            existing = self._find_child(client, experiment_id, parent, path.name)
        if existing is not None:
            st.run_id = existing
        else:
            # Said first: a retry, ours or another tracker's, looks the run up.
            st.creating = True
            self.save_state(path, st)
            run = client.create_run(
                experiment_id, run_name=ev["run_name"], tags=run_tags,
                start_time=int(ev["time"] * 1000),
            )
            st.run_id = run.info.run_id
            self.runs_created += 1
        st.creating = False
        self.unknown.discard(path.name)
        # Saved at once (offset still before these events): if logging
        # them fails, the retry, ours or another tracker's, finds this
        # run instead of creating a second one.
        self.save_state(path, st)
        if self.on_run_created is not None:
            try:
                self.on_run_created(ev, st.run_id)
            except Exception as exc:
                log.warning("could not record run id %s: %s", st.run_id, exc)

    def _find_child(self, client: MlflowClient, experiment_id: str, parent: str | None, file_name: str) -> str | None:
        """Run id of the child run already mirroring `file_name` under `parent`, if any.

        With many files to look up (a resume after a crash, a store that lacks the
        runs), one listing of the parent's children answers them all.
        """
        if parent and self._list_lookups:
            if parent not in self._lookups:
                from sweep.tracking.store import child_runs

                self._lookups[parent] = {r.data.tags.get(SPOOL_FILE_TAG, ""): r.info.run_id
                                         for r in sorted(child_runs(client, experiment_id, parent),
                                                         key=lambda r: r.info.start_time or 0)}
            return self._lookups[parent].get(file_name)
        flt = f"tags.`{SPOOL_FILE_TAG}` = '{file_name}'"
        if parent:
            flt += f" and tags.`mlflow.parentRunId` = '{parent}'"
        runs = client.search_runs([experiment_id], filter_string=flt, max_results=1)
        return runs[0].info.run_id if runs else None
