"""Issue 23 (big studies stay fast): the MLflow mirror without a search per run and its backpressure
(the gate that holds workers back while MLflow is behind). Real SQLite stores, trackers and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sweep.tracking import spool
from sweep.tracking.backpressure import GATE_NAME, Gate, wait_for_mirror
from sweep.tracking.mirror import SPOOL_FILE_TAG
from sweep.tracking.store import child_runs
from sweep.tracking.tracker import ParentSpec, Tracker
from sweep_helpers import wait_for


def _write_run(spool_dir: Path, name: str, epochs: int = 2) -> Path:
    path = spool_dir / f"{name}.jsonl"
    with spool.RunRecorder(path) as rec:
        rec.start(name, "study", {"keep_prob": 0.5}, {"optuna.trial_number": name[-4:]})
        for e in range(1, epochs + 1):
            rec.epoch(e, {"val_acc": 0.1 * e})
        rec.end("FINISHED", {"state": "COMPLETE"}, {"best_val_acc": 0.1 * epochs})
    return path


class _CountingSearches:
    """Counts the searches for child runs by the trackers' real clients (the calls still go to
    MLflow); finding the parent run when connecting is not counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import sweep.tracking.tracker

        self.calls = 0
        real_make = sweep.tracking.tracker.make_client

        def make_client(uri: str) -> Any:
            client = real_make(uri)
            real = client.search_runs

            def search_runs(*args: object, **kwargs: object) -> object:
                self.calls += any(k in str(kwargs.get("filter_string")) for k in ("parentRunId", SPOOL_FILE_TAG))
                return real(*args, **kwargs)

            client.search_runs = search_runs
            return client

        monkeypatch.setattr(sweep.tracking.tracker, "make_client", make_client)


def test_runs_that_appear_after_the_tracker_started_are_created_without_a_search(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run used to cost a search_runs (slower as the experiment grows): a file new to a
    running tracker cannot have a run yet, unless its side file says one is being created."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    searches = _CountingSearches(monkeypatch)
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.05).start()
    assert tracker.wait_ready(60)
    names = [f"trial-{n:04d}" for n in range(8)]
    for name in names:
        _write_run(spool_dir, name)
    left = tracker.stop(parent_status="FINISHED")
    assert left.empty, left.describe()
    assert searches.calls == 0
    runs = child_runs(tracker.client, tracker.experiment_id, tracker.parent_run_ids["study"])
    assert sorted(r.info.run_name for r in runs) == names
    for name in names:  # the marker is cleared once the id is saved
        side = json.loads((spool_dir / f"{name}.state").read_text())
        assert side["closed"] and side["run_id"] and not side["creating"]


def test_a_run_made_by_a_tracker_that_died_before_saving_its_id_is_found_not_made_twice(tmp_path: Path) -> None:
    """The side file says `creating` (a create_run whose id was never saved): the next sync
    looks the run up by its spool-file tag, also in a tracker that was already running."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    earlier = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=3600).start()
    assert earlier.wait_ready(60)
    earlier.stop()
    client, parent = earlier.client, earlier.parent_run_ids["study"]
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=3600)  # running since
    # What the other tracker did before it was killed: marker saved, run created, id not saved.
    path = spool_dir / "trial-0000.jsonl"
    path.with_suffix(".state").write_text(json.dumps({"run_id": None, "offset": 0, "closed": False,
                                                      "creating": True}))
    _write_run(spool_dir, "trial-0000")
    made = client.create_run(earlier.experiment_id, run_name="trial-0000",
                             tags={SPOOL_FILE_TAG: path.name, "mlflow.parentRunId": parent})
    tracker.start()
    assert tracker.wait_ready(60)
    left = tracker.stop(parent_status="FINISHED")
    assert left.empty, left.describe()
    runs = child_runs(client, tracker.experiment_id, parent)
    assert [r.info.run_id for r in runs] == [made.info.run_id]
    assert runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(made.info.run_id, "val_acc")] == [1, 2]


def test_a_resume_with_many_unsent_files_lists_the_parents_runs_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Side files lost for 30 runs MLflow has: one listing finds them all, no run is made twice."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    names = [f"trial-{n:04d}" for n in range(30)]
    for name in names:
        _write_run(spool_dir, name)
    first = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.05).start()
    assert first.wait_ready(60)
    assert first.stop(parent_status="FINISHED").empty
    for side in spool_dir.glob("*.state"):
        side.unlink()
    searches = _CountingSearches(monkeypatch)
    second = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=3600).start()
    assert second.wait_ready(60)
    assert second.stop(parent_status="FINISHED").empty
    assert searches.calls == 1  # one listing (a page of up to 1000 runs), not 30 searches
    runs = child_runs(second.client, second.experiment_id, second.parent_run_ids["study"])
    assert sorted(r.info.run_name for r in runs) == names
    assert second.runs_created == 0


def test_the_tracker_closes_the_gate_while_it_is_behind_and_opens_it_after(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    seen: list[bool] = []
    for n in range(5):  # 5 runs ended, none in MLflow: more than max_behind (written first: one sync sees them all)
        _write_run(spool_dir, f"trial-{n:04d}")
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=3600, max_behind=2,
                      on_run_created=lambda ev, rid: seen.append((spool_dir / GATE_NAME).exists())).start()
    assert tracker.wait_ready(60)
    assert tracker.stop(parent_status="FINISHED").empty
    assert seen == [True] * 5  # closed while those runs were being sent
    assert not (spool_dir / GATE_NAME).exists()
    assert tracker.gate.closed_seconds > 0


def test_one_run_behind_below_the_limit_leaves_the_gate_open(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    seen: list[bool] = []
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=3600, max_behind=2,
                      on_run_created=lambda ev, rid: seen.append((spool_dir / GATE_NAME).exists())).start()
    assert tracker.wait_ready(60)
    _write_run(spool_dir, "trial-0000")
    assert tracker.stop(parent_status="FINISHED").empty
    assert seen == [False]


def test_a_worker_waits_at_a_closed_gate_until_it_opens(tmp_path: Path) -> None:
    gate = Gate(tmp_path, limit=2)
    gate.update(3)
    assert gate.closed
    threading.Timer(0.3, gate.open).start()
    waited = wait_for_mirror(tmp_path, max_seconds=30)
    assert 0.25 < waited < 10
    assert wait_for_mirror(tmp_path, max_seconds=30) < 0.1  # open: no wait


def test_a_gate_left_by_a_dead_tracker_or_past_the_cap_holds_no_one(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / GATE_NAME).write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid,
                                                  "proc_start": 1.0}))
    assert wait_for_mirror(tmp_path, max_seconds=30) < 0.5
    gate = Gate(tmp_path, limit=1)
    gate.update(1)  # ours, alive, never opened: the cap ends the wait
    t0 = time.monotonic()
    wait_for_mirror(tmp_path, max_seconds=0.3)
    assert 0.25 < time.monotonic() - t0 < 10


def test_while_the_tracker_starts_the_gate_closes_once_limit_runs_appeared(tmp_path: Path) -> None:
    """MLflow's import and the store take seconds: the first `limit` trials run meanwhile, the
    next ones wait (the first 300-trial bench had 36 runs behind at its first sync)."""
    (tmp_path / "trial-0000.jsonl").write_text("")  # an earlier sweep's: not counted
    gate = Gate(tmp_path, limit=2)
    ready = threading.Event()
    watch = threading.Thread(target=gate.watch_start_up, args=(ready, lambda: True, {"trial-0000.jsonl"}, 0.01),
                             daemon=True)
    watch.start()
    (tmp_path / "trial-0001.jsonl").write_text("")
    time.sleep(0.2)
    assert not gate.closed
    (tmp_path / "trial-0002.jsonl").write_text("")
    deadline = time.monotonic() + 10
    while not gate.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    ready.set()
    assert gate.closed and (tmp_path / GATE_NAME).exists()
    watch.join(10)
    assert not watch.is_alive()


def test_in_an_outage_at_start_up_the_gate_stays_open(tmp_path: Path) -> None:
    gate = Gate(tmp_path, limit=1)
    ready = threading.Event()
    watch = threading.Thread(target=gate.watch_start_up, args=(ready, lambda: False, set(), 0.01), daemon=True)
    watch.start()
    (tmp_path / "trial-0001.jsonl").write_text("")
    (tmp_path / "trial-0002.jsonl").write_text("")
    watch.join(10)  # returns at once: nothing to hold back for
    assert not watch.is_alive() and not gate.closed


def test_trial_ends_close_the_gate_at_once_while_the_tracker_cannot_sync(tmp_path: Path) -> None:
    """The 1 000-trial bench had up to 10 runs behind: trials ended during a long sync, and
    the gate was only decided at the next one. Ends the sweep sees count at once."""
    import fcntl

    from sweep.tracking.tracker import LOCK_NAME

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.05, max_behind=2).start()
    assert tracker.wait_ready(60)
    fd = os.open(spool_dir / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another sweep's tracker holds the folder: polls send nothing
    try:
        for n in range(2):
            _write_run(spool_dir, f"trial-{n:04d}")
            tracker.trial_ended(f"trial-{n:04d}.jsonl")
        assert tracker.gate.closed and (spool_dir / GATE_NAME).exists()
    finally:
        os.close(fd)
    deadline = time.monotonic() + 30
    while tracker.gate.closed and time.monotonic() < deadline:  # synced: in MLflow, the gate opens
        time.sleep(0.02)
    assert not tracker.gate.closed
    assert tracker.stop(parent_status="FINISHED").empty


def test_a_worker_starts_its_next_trial_only_after_the_parent_counted_its_last_end(tmp_path: Path) -> None:
    """A worker returned a result and passed the still-open gate before the parent's main thread
    counted that end: a 1 000-trial bench had MLflow 6 runs behind with a limit of 2 x 2."""
    from sweep.tracking import backpressure

    run = tmp_path / "trial-0007.jsonl"
    run.write_text("")
    backpressure.mark_ended(run)
    assert (tmp_path / "trial-0007.jsonl.ended").exists()
    threading.Timer(0.3, backpressure.release_worker, (tmp_path, run.name)).start()
    waited = wait_for_mirror(tmp_path, max_seconds=30, parent=spool.this_process())
    assert 0.25 < waited < 10 and not (tmp_path / "trial-0007.jsonl.ended").exists()
    assert wait_for_mirror(tmp_path, max_seconds=30, parent=spool.this_process()) < 0.1  # nothing of its own left

    backpressure.mark_ended(run)  # the parent died before counting it: no one to wait for
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert wait_for_mirror(tmp_path, max_seconds=30, parent=f"{os.uname().nodename}:{dead.pid}:None") < 0.5


def _nice_of(tid: int) -> int:
    return int(Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_tracker_thread_runs_niced_below_the_rest_of_the_sweep(tmp_path: Path) -> None:
    """On trials of ~3 s the tracker's MLflow import and commits came out of the workers' training
    (40 trials: 1.15 x their bare twin, bench/overhead_6s.py); niced, it runs in what they leave."""
    from sweep.tracking.tracker import TRACKER_NICE

    main_nice = _nice_of(threading.get_native_id())
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "spool", [ParentSpec("study", "exp")],
                      poll_seconds=0.05).start()
    try:
        assert tracker.wait_ready(60)
        thread = next(t for t in threading.enumerate() if t.name == "mlflow-tracker")
        assert thread.native_id is not None
        assert _nice_of(thread.native_id) == min(19, main_nice + TRACKER_NICE) > main_nice
        assert _nice_of(threading.get_native_id()) == main_nice  # the rest of the process keeps its priority
    finally:
        assert tracker.stop(parent_status="FINISHED").empty


def test_the_tracker_starts_up_at_the_process_priority_and_is_niced_only_once_connected(tmp_path: Path) -> None:
    """Niced from the start, importing MLflow and creating the store (~2.7 s of CPU) took ~7 s beside
    two training workers: their first trials ended first and waited at the mirror's gate."""
    from services import free_port

    main_nice = _nice_of(threading.get_native_id())
    # Nothing listens there: the thread keeps trying to connect (an outage at start).
    tracker = Tracker(f"http://127.0.0.1:{free_port()}", "exp", tmp_path / "spool", [ParentSpec("study", "exp")],
                      poll_seconds=0.05).start()
    try:
        wait_for(lambda: tracker.health.down, timeout=60)  # it tried to connect, and failed
        thread = next(t for t in threading.enumerate() if t.name == "mlflow-tracker")
        assert thread.native_id is not None
        assert not tracker.ready.is_set()
        assert _nice_of(thread.native_id) == main_nice
    finally:
        tracker.stop(timeout=0)
        assert not tracker._thread.is_alive()


def test_a_big_folder_is_listed_less_often_and_no_run_is_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing 20 000 spool files took ~10 ms a sync at 10 000 trials, most of the tracker's growth per trial.
    Between listings a sync reads the files it knows and those the sweep said ended; the final drain lists all."""
    import sweep.tracking.mirror as mirror

    monkeypatch.setattr(mirror, "LIST_EVERY_SYNC_BELOW", 0)  # as if the folder were big
    monkeypatch.setattr(mirror, "FULL_LISTING_SECONDS", 3600.0)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    _write_run(spool_dir, "trial-0000")
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.02).start()
    assert tracker.wait_ready(60)

    def mirrored() -> set[str]:
        return {r.info.run_name for r in child_runs(tracker.client, tracker.experiment_id,
                                                     tracker.parent_run_ids["study"])}

    def soon(names: set[str]) -> bool:
        deadline = time.monotonic() + 30
        while mirrored() != names and time.monotonic() < deadline:
            time.sleep(0.05)
        return mirrored() == names

    assert soon({"trial-0000"})  # the first listing
    _write_run(spool_dir, "trial-0001")  # not listed again, not said: waits
    time.sleep(0.5)
    assert mirrored() == {"trial-0000"}
    _write_run(spool_dir, "trial-0002")
    tracker.trial_ended("trial-0002.jsonl")  # said by the sweep: read without a listing
    assert soon({"trial-0000", "trial-0002"})
    assert tracker.stop(parent_status="FINISHED").empty  # the final drain lists the folder
    runs = child_runs(tracker.client, tracker.experiment_id, tracker.parent_run_ids["study"])
    assert sorted(r.info.run_name for r in runs) == ["trial-0000", "trial-0001", "trial-0002"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_run_another_live_sweep_still_trains_is_left_to_it_at_the_end(tmp_path: Path) -> None:
    """Two sweeps of one study: the one that ends first drained the folder, but the other's trial wrote
    epochs after that drain, and the first said NOT ALL IN MLFLOW and exited 3 (a CI run)."""
    from sweep.tracking.outage import backlog

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "trial-0000.jsonl"
        with spool.RunRecorder(path) as rec:
            rec.start("trial-0000", "study", {"keep_prob": 0.5}, {})
            rec.epoch(1, {"val_acc": 0.5})
        start = json.loads(path.read_text().splitlines()[0])
        start.update(pid=other.pid, proc_start=spool.process_start_time(other.pid))  # as the other's worker wrote it
        path.write_text("\n".join([json.dumps(start), *path.read_text().splitlines()[1:]]) + "\n")
        assert backlog(tmp_path, leave_to_others=True).empty  # the other sweep's tracker sends it
        assert backlog(tmp_path).runs_open == 1  # `sweep sync` and a sweep's own count still see it
    finally:
        other.kill()
        other.wait()
    assert backlog(tmp_path, leave_to_others=True).runs_open == 1  # its writer is gone: nobody else will send it


@pytest.mark.parametrize("live_seconds", [0.3, 3600])
def test_a_running_runs_epochs_go_every_live_seconds_its_start_and_end_at_once(tmp_path: Path,
                                                                            live_seconds: float) -> None:
    """Each batch costs a commit whatever its size: a running run's epochs go at most every
    `live_seconds` (the live curve then lags by that much), its creation and its end at once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.02,
                      live_seconds=live_seconds).start()
    assert tracker.wait_ready(60)
    client, parent = tracker.client, tracker.parent_run_ids["study"]
    rec = spool.RunRecorder(spool_dir / "trial-0000.jsonl")
    rec.start("trial-0000", "study", {"keep_prob": 0.5}, {})
    rec.epoch(1, {"val_acc": 0.1})
    wait_for(lambda: child_runs(client, tracker.experiment_id, parent), 60)
    run_id = child_runs(client, tracker.experiment_id, parent)[0].info.run_id

    def steps() -> list[int]:
        return [m.step for m in client.get_metric_history(run_id, "val_acc")]

    wait_for(lambda: steps() == [1], 60)  # sent with the run's creation
    rec.epoch(2, {"val_acc": 0.2})
    if live_seconds < 1:  # the live curve follows, the run still running
        wait_for(lambda: steps() == [1, 2], 60)
        assert client.get_run(run_id).info.status == "RUNNING"
    else:  # 50 polls later, still not sent
        time.sleep(1.0)
        assert steps() == [1]
    rec.epoch(3, {"val_acc": 0.3})
    rec.end("FINISHED", {"state": "COMPLETE"})
    rec.close()
    # The end goes at the next poll, with every epoch before it, whatever live_seconds says.
    wait_for(lambda: client.get_run(run_id).info.status == "FINISHED", 30)
    assert steps() == [1, 2, 3]
    assert tracker.stop(parent_status="FINISHED").empty
