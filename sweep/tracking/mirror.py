"""Spool files -> child runs in MLflow: what has been sent of each file, and the sending.

Each `trial-NNNN.jsonl` in a spool folder is mirrored into one child run. Its
`.state` side file ({"run_id", "offset", "closed"}) says how much of it MLflow
has; a tracker resumes from it, and several trackers of one folder (holding
its lock in turns, see sweep.tracking) share it, so every event is sent once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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


class SpoolMirror:
    """Mirrors the spool files of one folder into child runs (the caller holds the folder's lock).

    on_run_created(start_event, run_id): called once per run created or found again.
    """

    def __init__(self, spool_dir: Path, health: Health,
                 on_run_created: Callable[[dict[str, Any], str], None] | None = None) -> None:
        self.spool_dir = Path(spool_dir)
        self.health = health
        self.on_run_created = on_run_created
        # Only closed states are trusted from memory (closed is final); every
        # other state is re-read from its side file under the lock.
        self.states: dict[Path, FileState] = {}
        # Files whose side file could not be written (disk full): their state in
        # memory is the truth for this tracker, and mirroring goes on from it.
        self.unsaved: set[Path] = set()
        self._save_warned = False
        self.runs_created = self.runs_ended = self.events_sent = 0

    def known(self) -> dict[Path, dict[str, Any]]:
        """Side states held in memory only (for `outage.backlog`)."""
        return {p: vars(self.states[p]) for p in self.unsaved}

    def sync(self, client: MlflowClient, experiment_id: str, parent_run_ids: dict[str, str]) -> int:
        """Send every new event; returns how many were sent."""
        sent = 0
        for path in spool.spool_files(self.spool_dir):
            st = self.state(path)
            if st.closed:
                continue
            events, offset = spool.read_events(path, st.offset)
            if not events:
                continue
            self._apply(client, experiment_id, parent_run_ids, path, st, events)
            st.offset = offset
            self.save_state(path, st)
            sent += len(events)
        self.events_sent += sent
        return sent

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

    def _apply(self, client: MlflowClient, experiment_id: str, parent_run_ids: dict[str, str], path: Path,  # noqa: C901 - one branch per spool event kind (start/epoch/end), applied in file order
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
                    parent = parent_run_ids.get(ev.get("parent", ""))
                    run_tags = {**ev.get("tags", {}), SPOOL_FILE_TAG: path.name}
                    if parent:
                        run_tags["mlflow.parentRunId"] = parent
                    # Created before, and its side file lost (a crash between the two)?
                    existing = self._find_child(client, experiment_id, parent, path.name)
                    if existing is not None:
                        st.run_id = existing
                    else:
                        run = client.create_run(
                            experiment_id, run_name=ev["run_name"], tags=run_tags,
                            start_time=int(ev["time"] * 1000),
                        )
                        st.run_id = run.info.run_id
                        self.runs_created += 1
                    # Saved at once (offset still before these events): if logging
                    # them fails, the retry, ours or another tracker's, finds this
                    # run instead of creating a second one.
                    self.save_state(path, st)
                    if self.on_run_created is not None:
                        try:
                            self.on_run_created(ev, st.run_id)
                        except Exception as exc:
                            log.warning("could not record run id %s: %s", st.run_id, exc)
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

    def _find_child(self, client: MlflowClient, experiment_id: str, parent: str | None, file_name: str) -> str | None:
        """Run id of the child run already mirroring `file_name` under `parent`, if any."""
        flt = f"tags.`{SPOOL_FILE_TAG}` = '{file_name}'"
        if parent:
            flt += f" and tags.`mlflow.parentRunId` = '{parent}'"
        runs = client.search_runs([experiment_id], filter_string=flt, max_results=1)
        return runs[0].info.run_id if runs else None
