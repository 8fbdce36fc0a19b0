"""Issue 23 (big studies stay fast): the MLflow mirror without a search per run, its backpressure,
and the report/status parts that must not grow with the study. Real SQLite stores and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sweep import spool
from sweep.backpressure import GATE_NAME, Gate, wait_for_mirror
from sweep.mirror import SPOOL_FILE_TAG
from sweep.mlflow_store import child_runs
from sweep.tracking import ParentSpec, Tracker


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
        import sweep.tracking

        self.calls = 0
        real_make = sweep.tracking.make_client

        def make_client(uri: str) -> Any:
            client = real_make(uri)
            real = client.search_runs

            def search_runs(*args: object, **kwargs: object) -> object:
                self.calls += any(k in str(kwargs.get("filter_string")) for k in ("parentRunId", SPOOL_FILE_TAG))
                return real(*args, **kwargs)

            client.search_runs = search_runs
            return client

        monkeypatch.setattr(sweep.tracking, "make_client", make_client)


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
    tracker = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=3600, max_behind=2,
                      on_run_created=lambda ev, rid: seen.append((spool_dir / GATE_NAME).exists())).start()
    assert tracker.wait_ready(60)
    for n in range(5):  # 5 runs ended, none in MLflow: more than max_behind
        _write_run(spool_dir, f"trial-{n:04d}")
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


# -- reading a big study: journal snapshot, bounded fANOVA, cached importances --------------


def _journal_study(path: Path, n: int, name: str = "s") -> None:
    import optuna

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))),
                                sampler=optuna.samplers.RandomSampler(seed=n), load_if_exists=True)
    study.optimize(lambda t: t.suggest_float("keep_prob", 0.2, 1.0), n_trials=n)


def test_a_journal_is_read_from_its_snapshot_and_the_records_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep import journal_cache

    monkeypatch.setattr(journal_cache, "REFRESH_RECORDS", 20)
    journal = tmp_path / "optuna.journal"
    _journal_study(journal, 12)
    storage = journal_cache.open_journal_for_reading(journal)
    assert len(storage.get_all_trials(0)) == 12
    snap = journal_cache.snapshot_path(journal)
    assert snap.is_file()  # over REFRESH_RECORDS records replayed: kept
    _journal_study(journal, 3)  # the study goes on after the snapshot
    backend = journal_cache.CachedJournalBackend(journal)
    from optuna.storages import JournalStorage

    again = JournalStorage(backend)
    assert backend.snapshot_records > 0  # started from the snapshot ...
    trials = again.get_all_trials(0)
    assert [t.number for t in trials] == list(range(15))  # ... and read the 3 trials after it
    assert [t.params for t in trials] == [t.params for t in _plain(journal)]


def _plain(journal: Path) -> list[Any]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(journal))).get_all_trials(0)


def test_a_snapshot_of_another_journal_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal moved aside and a new study started in its place: read from the start."""
    from sweep import journal_cache

    monkeypatch.setattr(journal_cache, "REFRESH_RECORDS", 20)
    journal = tmp_path / "optuna.journal"
    _journal_study(journal, 12)
    journal_cache.open_journal_for_reading(journal)
    journal.rename(tmp_path / "old.journal")
    _journal_study(journal, 14)  # longer than the snapshot's length: only its fingerprint tells
    storage = journal_cache.open_journal_for_reading(journal)
    assert [t.params for t in storage.get_all_trials(0)] == [t.params for t in _plain(journal)]
    assert len(storage.get_all_trials(0)) == 14


def test_fanova_on_a_big_study_uses_a_bounded_sample_and_says_so() -> None:
    import optuna

    from sweep import importance

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=2))

    def objective(trial: optuna.Trial) -> float:
        keep = trial.suggest_float("keep_prob", 0.2, 1.0)
        trial.suggest_float("noise", 0.0, 1.0)
        trial.set_user_attr("gap", 0.5 * keep)
        return keep + 0.01 * np.random.default_rng(trial.number).normal()

    study.optimize(objective, n_trials=importance.FANOVA_MAX_TRIALS + 40)
    res = importance.keep_prob_importance(study, seed=0)
    fanova = res["value"]["fanova"]
    assert f"fANOVA on a random {importance.FANOVA_MAX_TRIALS} of the {importance.FANOVA_MAX_TRIALS + 40} trials" \
        in fanova.note
    assert fanova.rank("keep_prob") == 1
    assert "random" not in res["value"]["ped_anova"].note  # PED-ANOVA sees them all


def test_importances_are_reused_until_the_study_changes(tmp_path: Path) -> None:
    import optuna

    from sweep.importance import cached_importance

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(lambda t: t.suggest_float("keep_prob", 0.2, 1.0) + 0.1 * t.suggest_float("x", 0, 1),
                   n_trials=30)
    cache = tmp_path / "importance.json"
    first = cached_importance(study, cache, seed=0)
    stored = json.loads(cache.read_text())
    stored["results"]["value"]["fanova"]["note"] = "from the cache"
    cache.write_text(json.dumps(stored))
    assert cached_importance(study, cache, seed=0)["value"]["fanova"].note == "from the cache"
    assert cached_importance(study, cache, seed=1)["value"]["fanova"].note != "from the cache"  # other args
    study.optimize(lambda t: t.suggest_float("keep_prob", 0.2, 1.0) + 0.1 * t.suggest_float("x", 0, 1),
                   n_trials=1)
    again = cached_importance(study, cache, seed=0)
    assert again["value"]["fanova"].n_trials == 31 and first["value"]["fanova"].n_trials == 30


# -- TPE with a bounded history ---------------------------------------------------------------


def _tpe_params(sampler_cls: type, n: int) -> list[dict[str, Any]]:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = sampler_cls(seed=5, multivariate=True, group=True, constant_liar=True, n_startup_trials=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        keep = trial.suggest_float("keep_prob", 0.2, 1.0)
        depth = trial.suggest_int("depth", 1, 2)
        widths = [trial.suggest_int(f"hidden_{i + 1}", 8, 64, log=True) for i in range(depth)]
        return keep - 0.001 * sum(widths)

    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


def test_below_the_cap_the_sweeps_tpe_samples_exactly_as_optunas() -> None:
    """The CIFAR-10 hour (149-221 trials) must search as before: below HISTORY_CAP nothing changes."""
    from optuna.samplers import TPESampler

    from sweep.sampler_scale import BoundedHistoryMixin
    from sweep.study import TrialSeededTPESampler

    class Plain(TPESampler):  # the sweep's sampler before: re-seeded per trial, whole history
        def __init__(self, *, seed: int, **kwargs: Any) -> None:
            super().__init__(seed=seed, **kwargs)
            self._base_seed = seed

        def before_trial(self, study: Any, trial: Any) -> None:
            state = int(np.random.SeedSequence([self._base_seed, trial.number]).generate_state(1)[0])
            self._rng.rng.seed(state)
            self._random_sampler._rng.rng.seed(state)
            super().before_trial(study, trial)

    assert BoundedHistoryMixin in TrialSeededTPESampler.__mro__
    assert _tpe_params(TrialSeededTPESampler, 40) == _tpe_params(Plain, 40)


def test_above_the_cap_tpe_sees_the_best_trials_a_seeded_sample_and_every_running_one() -> None:
    import optuna

    from sweep.sampler_scale import KEEP_BEST, bounded_history

    trials = [optuna.trial.create_trial(params={}, distributions={}, value=float(i % 97))
              for i in range(900)]
    for i, t in enumerate(trials):
        t.number = i
    running = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING)
    running.number = 900
    trials.append(running)
    kept = bounded_history(trials, True, 300, np.random.default_rng(1))
    assert len(kept) == 301 and kept[-1] is running
    assert [t.number for t in kept] == sorted(t.number for t in kept)  # trial order kept
    best = sorted(trials[:900], key=lambda t: -t.value)[:KEEP_BEST]
    assert {t.number for t in best} <= {t.number for t in kept}
    again = bounded_history(trials, True, 300, np.random.default_rng(1))
    assert [t.number for t in again] == [t.number for t in kept]  # the same seed, the same sample
    assert bounded_history(trials[:200], True, 300, np.random.default_rng(1)) == trials[:200]


def test_trial_ends_close_the_gate_at_once_while_the_tracker_cannot_sync(tmp_path: Path) -> None:
    """The 1 000-trial bench had up to 10 runs behind: trials ended during a long sync, and
    the gate was only decided at the next one. Ends the sweep sees count at once."""
    import fcntl

    from sweep.tracking import LOCK_NAME

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
