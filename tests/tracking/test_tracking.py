"""Spool files -> MLflow runs, against a real SQLite tracking store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.tracking import spool
from sweep.tracking.store import child_runs
from sweep.tracking.tracker import ParentSpec, Tracker


def _write_run(spool_dir: Path, name: str, epochs: int, status: str, **end_tags: object) -> Path:
    path = spool_dir / f"{name}.jsonl"
    with spool.RunRecorder(path) as rec:
        rec.start(name, "study", {"keep_prob": 0.5, "hidden_dims": "64-32"}, {"optuna.trial_number": name[-1]})
        for e in range(1, epochs + 1):
            rec.epoch(e, {"val_acc": 0.1 * e, "train_acc": 0.2 * e})
        rec.end(status, end_tags, {"best_val_acc": 0.1 * epochs})
    return path


def test_tracker_mirrors_spool_into_child_runs(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    _write_run(spool_dir, "trial-0000", 3, "FINISHED", state="COMPLETE")
    _write_run(spool_dir, "trial-0001", 1, "FINISHED", state="PRUNED", pruned_at_epoch=1)
    created: list[tuple[str, str]] = []
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp", params={"seed": 3})],
                      on_run_created=lambda ev, rid: created.append((ev["run_name"], rid)), poll_seconds=0.05)
    tracker.start()
    assert tracker.wait_ready(60)
    # A run still going when the tracker starts is followed as it grows.
    live = spool_dir / "trial-0002.jsonl"
    rec = spool.RunRecorder(live)
    rec.start("trial-0002", "study", {"keep_prob": 1.0}, {})
    rec.epoch(1, {"val_acc": 0.5})
    time.sleep(0.5)
    rec.epoch(2, {"val_acc": 0.6})
    rec.end("FAILED", {"failure_reason": "diverged at epoch 2"})
    rec.close()
    tracker.stop(parent_status="FINISHED")

    client = tracker.client
    parent = tracker.parent_run_ids["study"]
    runs = {r.info.run_name: r for r in child_runs(client, tracker.experiment_id, parent)}
    assert sorted(runs) == ["trial-0000", "trial-0001", "trial-0002"]
    assert {name for name, _ in created} == set(runs)
    r0 = runs["trial-0000"]
    assert r0.info.status == "FINISHED"
    assert r0.data.params == {"keep_prob": "0.5", "hidden_dims": "64-32"}
    history = client.get_metric_history(r0.info.run_id, "val_acc")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert runs["trial-0001"].info.status == "FINISHED"
    assert runs["trial-0001"].data.tags["pruned_at_epoch"] == "1"
    assert runs["trial-0002"].info.status == "FAILED"
    assert runs["trial-0002"].data.tags["failure_reason"] == "diverged at epoch 2"
    assert [m.step for m in client.get_metric_history(runs["trial-0002"].info.run_id, "val_acc")] == [1, 2]
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.params["seed"] == "3"


def test_tracker_resumes_without_duplicating(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    path = spool_dir / "trial-0000.jsonl"
    rec = spool.RunRecorder(path)
    rec.start("trial-0000", "study", {"keep_prob": 0.5}, {})
    rec.epoch(1, {"val_acc": 0.1})
    t1 = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.05).start()
    t1.wait_ready(60)
    t1.stop()
    rec.epoch(2, {"val_acc": 0.2})
    rec.end("FINISHED")
    rec.close()
    t2 = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.05).start()
    t2.wait_ready(60)
    t2.stop()
    assert t1.parent_run_ids == t2.parent_run_ids  # the parent run is found again
    runs = child_runs(t2.client, t2.experiment_id, t2.parent_run_ids["study"])
    assert len(runs) == 1
    assert [m.step for m in t2.client.get_metric_history(runs[0].info.run_id, "val_acc")] == [1, 2]


def test_two_trackers_on_one_spool_folder_log_each_run_and_step_once(tmp_path: Path) -> None:
    """Two sweeps in one folder: both trackers mirror the same spool files, taking turns."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    created: list[tuple[str, str]] = []

    def tracker() -> Tracker:
        return Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp", params={"seed": 3})],
                       on_run_created=lambda ev, rid: created.append((ev["run_name"], rid)), poll_seconds=0.005)

    trackers = [tracker(), tracker()]
    for t in trackers:
        t.start()
    for t in trackers:
        assert t.wait_ready(60)
    assert trackers[0].parent_run_ids == trackers[1].parent_run_ids  # one parent run, found by the second
    names = [f"trial-{n:04d}" for n in range(6)]
    recorders = [spool.RunRecorder(spool_dir / f"{name}.jsonl") for name in names]
    epochs = 4
    for rec, name in zip(recorders, names, strict=True):  # new files while both poll: the moment both used to create a run
        rec.start(name, "study", {"keep_prob": 0.5}, {"optuna.trial_number": name[-1]})
        time.sleep(0.01)
    for e in range(1, epochs + 1):
        for rec in recorders:
            rec.epoch(e, {"val_acc": 0.1 * e})
            time.sleep(0.005)
    for rec in recorders:
        rec.end("FINISHED", {"state": "COMPLETE"}, {"best_val_acc": 0.4})
        rec.close()
    for t in trackers:
        t.stop(parent_status="FINISHED")

    client = trackers[0].client
    runs = child_runs(client, trackers[0].experiment_id, trackers[0].parent_run_ids["study"])
    all_runs = client.search_runs([trackers[0].experiment_id], max_results=1000)
    assert len(all_runs) == len(names) + 1  # no stray runs beside the parent and its children
    assert sorted(r.info.run_name for r in runs) == names  # one run per spool file
    assert sorted(created) == sorted((r.info.run_name, r.info.run_id) for r in runs)
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.params == {"keep_prob": "0.5"}
        history = client.get_metric_history(r.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, epochs + 1)), r.info.run_name  # each step once
        assert len(client.get_metric_history(r.info.run_id, "best_val_acc")) == 1


def test_a_poll_skips_a_busy_lock_and_the_final_drain_waits_for_it(tmp_path: Path) -> None:
    import fcntl
    import threading

    from sweep.tracking.tracker import LOCK_NAME

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool_dir = tmp_path / "spool"
    _write_run(spool_dir, "trial-0000", 2, "FINISHED")
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.01)
    with open(spool_dir / LOCK_NAME, "a") as held:  # another tracker, mid-sync
        fcntl.flock(held, fcntl.LOCK_EX)
        tracker.start()
        deadline = time.monotonic() + 60
        while tracker.experiment_id is None and time.monotonic() < deadline:  # connected, experiment made
            time.sleep(0.01)
        time.sleep(0.3)
        assert tracker.experiment_id is not None and not tracker.ready.is_set()  # the parent run waits for the lock
        fcntl.flock(held, fcntl.LOCK_UN)
        assert tracker.wait_ready(60)
        fcntl.flock(held, fcntl.LOCK_EX)
        assert tracker.sync_once(block=False) == 0  # a poll: sends nothing, tries again next time
        stopper = threading.Thread(target=tracker.stop, kwargs={"parent_status": "FINISHED"})
        stopper.start()
        stopper.join(0.3)
        assert stopper.is_alive()  # the final drain waits for the lock instead of being skipped
        fcntl.flock(held, fcntl.LOCK_UN)
        stopper.join(60)
    runs = child_runs(tracker.client, tracker.experiment_id, tracker.parent_run_ids["study"])
    assert [r.info.run_name for r in runs] == ["trial-0000"]
    assert runs[0].info.status == "FINISHED"


def test_liveness_of_a_killed_process(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = spool.process_start_time(child.pid)
        assert spool.is_alive(os.uname().nodename, child.pid, start) is True
        assert spool.is_alive(os.uname().nodename, child.pid, (start or 0) + 1) is False  # recycled pid
        assert spool.is_alive("some-other-host", child.pid, start) is None
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert spool.is_alive(os.uname().nodename, child.pid, start) is False


def test_partial_line_is_left_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"event": "start"}\n{"event": "ep')
    events, offset = spool.read_events(path)
    assert events == [{"event": "start"}]
    with open(path, "a") as f:
        f.write('och", "step": 1}\n')
    more, _ = spool.read_events(path, offset)
    assert more == [{"event": "epoch", "step": 1}]


def test_recorder_rejects_unknown_status(tmp_path: Path) -> None:
    with spool.RunRecorder(tmp_path / "x.jsonl") as rec, pytest.raises(ValueError, match="status"):
        rec.end("DONE")


def test_sqlite_store_from_template_is_a_working_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep.tracking.store import make_client, prepare_sqlite_store

    templates = tmp_path / "templates"
    first = tmp_path / "a" / "mlflow.db"
    assert prepare_sqlite_store(f"sqlite:///{first}", templates)  # builds the template, then copies it
    assert [p.name for p in templates.iterdir()] and first.exists()
    assert not prepare_sqlite_store(f"sqlite:///{first}", templates)  # never touches an existing store
    second = tmp_path / "b" / "mlflow.db"
    assert prepare_sqlite_store(f"sqlite:///{second}", templates)
    monkeypatch.chdir(second.parent)
    client = make_client(f"sqlite:///{second}")
    # MLflow accepts the schema as current and adds the Default experiment for THIS folder.
    assert client.get_experiment("0").artifact_location.endswith(str(second.parent / "mlruns" / "0"))
    exp = client.create_experiment("x")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "val_acc", 0.5, step=1)
    assert client.get_metric_history(run.info.run_id, "val_acc")[0].value == 0.5
    assert not prepare_sqlite_store("http://127.0.0.1:5000", templates)


def test_a_new_or_other_store_gets_every_run_again(tmp_path: Path) -> None:
    """A new store, or the tracking URI changed and changed back: the side files
    say "sent", but not to this store; every run kept in the spool folder is sent to it,
    once, with the parent's summary, and a store that has them gets nothing twice."""
    spool_dir = tmp_path / "spool"
    store_a, store_b = tmp_path / "a.db", tmp_path / "b.db"

    def track(db: Path, *, status: str | None = "FINISHED", summary: str | None = None) -> tuple[Tracker, list[str]]:
        said: list[str] = []
        tracker = Tracker(f"sqlite:///{db}", "exp", spool_dir, [ParentSpec("study", "exp")],
                          poll_seconds=0.05, say=said.append).start()
        assert tracker.wait_ready(60)
        if summary is not None:
            tracker.log_parent("study", tags={"summary/best_test_acc": summary})
        assert tracker.stop(parent_status=status).empty
        return tracker, said

    def runs(tracker: Tracker) -> dict[str, list[int]]:
        client, parent = tracker.client, tracker.parent_run_ids["study"]
        return {r.info.run_name: [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")]
                for r in child_runs(client, tracker.experiment_id, parent)}

    _write_run(spool_dir, "trial-0000", 3, "FINISHED", state="COMPLETE")
    _write_run(spool_dir, "trial-0001", 2, "FINISHED", state="PRUNED")
    a1, said = track(store_a, summary="0.9")
    assert runs(a1) == {"trial-0000": [1, 2, 3], "trial-0001": [1, 2]}
    assert not [line for line in said if "again" in line]

    # A fresh store, the spool folder kept (as `rm mlflow.db`, which one process cannot do
    # here: MLflow keeps its SQLite engine per URI; test_faults deletes it between commands).
    store_a = tmp_path / "fresh.db"
    a2, said = track(store_a)
    assert runs(a2) == {"trial-0000": [1, 2, 3], "trial-0001": [1, 2]}
    assert any("sending the 2 run(s)" in line for line in said), said
    parent = a2.client.get_run(a2.parent_run_ids["study"])
    assert parent.data.tags["summary/best_test_acc"] == "0.9" and parent.info.status == "FINISHED"

    b, _ = track(store_b)  # another server for a while: it gets everything, and one more run
    _write_run(spool_dir, "trial-0002", 1, "FINISHED", state="COMPLETE")
    b, _ = track(store_b)
    assert sorted(runs(b)) == ["trial-0000", "trial-0001", "trial-0002"]

    back, said = track(store_a)  # back to the first: it lacked trial-0002 only, and has each run once
    assert runs(back) == {"trial-0000": [1, 2, 3], "trial-0001": [1, 2], "trial-0002": [1]}
    assert len(child_runs(back.client, back.experiment_id, back.parent_run_ids["study"])) == 3

    again, said = track(store_a)  # the same store again: nothing to resend
    assert not [line for line in said if "again" in line], said
    assert again.events_sent == 0
