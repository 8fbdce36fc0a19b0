"""Issue 23 (big studies stay fast): reading a big study's journal from its snapshot, and TPE with a
bounded history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
    from sweep.search import journal_cache

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
    from sweep.search import journal_cache

    monkeypatch.setattr(journal_cache, "REFRESH_RECORDS", 20)
    journal = tmp_path / "optuna.journal"
    _journal_study(journal, 12)
    journal_cache.open_journal_for_reading(journal)
    journal.rename(tmp_path / "old.journal")
    _journal_study(journal, 14)  # longer than the snapshot's length: only its fingerprint tells
    storage = journal_cache.open_journal_for_reading(journal)
    assert [t.params for t in storage.get_all_trials(0)] == [t.params for t in _plain(journal)]
    assert len(storage.get_all_trials(0)) == 14


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

    from sweep.search.sampler_scale import BoundedHistoryMixin
    from sweep.search.study import TrialSeededTPESampler

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

    from sweep.search.sampler_scale import KEEP_BEST, bounded_history

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


def _reference_history(trials: list[Any], maximize: bool, cap: int, rng: np.random.Generator) -> list[Any]:
    """bounded_history as first written: every finished trial read at every ask."""
    import heapq
    import math

    from optuna.trial import TrialState

    finished = [i for i, t in enumerate(trials) if t.state != TrialState.RUNNING]
    if len(finished) <= cap:
        return trials
    sign = 1.0 if maximize else -1.0

    def score(t: Any) -> float:
        v = t.value if t.state == TrialState.COMPLETE else None
        return sign * v if v is not None and math.isfinite(v) else -math.inf

    order = heapq.nlargest(min(100, cap), range(len(finished)), key=lambda k: score(trials[finished[k]]))
    best = {k for k in order if score(trials[finished[k]]) > -math.inf}
    rest = [k for k in range(len(finished)) if k not in best]
    take = cap - len(best)
    keep = best | ({rest[j] for j in rng.choice(len(rest), size=take, replace=False)} if take > 0 else set())
    chosen = {finished[k] for k in keep}
    return [t for i, t in enumerate(trials) if i in chosen or t.state == TrialState.RUNNING]


def test_the_history_kept_between_asks_gives_what_reading_every_trial_gives() -> None:
    """Asks on a growing study (ties, pruned and running trials, a re-queued trial joining the list
    in the middle) with the settled run carried over pick exactly the trials a fresh read picks."""
    import optuna
    from optuna.trial import TrialState

    from sweep.search.sampler_scale import SettledRun, bounded_history

    def trial(number: int, state: TrialState, value: float | None) -> Any:
        t = optuna.trial.create_trial(state=state, value=value) if state == TrialState.COMPLETE \
            else optuna.trial.create_trial(state=state)
        t.number = number
        return t

    rng = np.random.default_rng(4)
    trials: list[Any] = []
    settled, scores = SettledRun(), {}
    for n in range(700):
        roll = rng.random()
        state = TrialState.PRUNED if roll < 0.2 else TrialState.COMPLETE
        trials.append(trial(n, state, float(rng.integers(0, 50)) if state == TrialState.COMPLETE else None))
        if n % 3 == 0:  # a trial still running at the end of the list
            trials[-1] = trial(n, TrialState.RUNNING, None)
            if n > 6:  # ... and an earlier running one ends
                k = next(i for i, t in enumerate(trials[:-1]) if t.state == TrialState.RUNNING)
                trials[k] = trial(trials[k].number, TrialState.COMPLETE, 25.0)
        if n == 600:  # a re-queued trial joins the list before the settled run's end
            trials.insert(300, trial(-1, TrialState.RUNNING, None))
        if n % 7 == 0 or n > 590:
            got = bounded_history(trials, True, 200, np.random.default_rng([n]), scores, settled)
            want = _reference_history(trials, True, 200, np.random.default_rng([n]))
            assert [t.number for t in got] == [t.number for t in want], n


def test_the_grouped_search_space_kept_between_asks_is_optunas(tmp_path: Path) -> None:
    """Trials of changing spaces ending out of order (one RUNNING throughout most of it, pruned ones):
    the incremental grouped space equals Optuna's at each ask. Optuna's object is kept between asks
    too (TPE keeps it), re-adding every trial: its groups' order is the order trials were first seen."""
    import optuna
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from sweep.search.sampler_scale import _IncrementalGroupSearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "j"))))
    for include_pruned in (False, True):
        ours = _IncrementalGroupSearchSpace(include_pruned)
        optunas = _GroupDecomposedSearchSpace(include_pruned)

        def same(ours: Any = ours, optunas: Any = optunas) -> None:
            want = optunas.calculate(study).search_spaces
            assert ours.calculate(study).search_spaces == want
            assert [list(s) for s in ours.calculate(study).search_spaces] == [list(s) for s in want]

        rng = np.random.default_rng(include_pruned)
        held = study.ask()  # ends late, with a space of its own
        held.suggest_float("late", 0, 1)
        open_trials = []
        for n in range(40):
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            if n % 4 == 0:
                trial.suggest_int(f"branch{n % 3}", 0, 3)
            open_trials.append(trial)
            if rng.random() < 0.6:  # a random open trial ends
                ending = open_trials.pop(int(rng.integers(len(open_trials))))
                if rng.random() < 0.3:
                    study.tell(ending, state=TrialState.PRUNED)
                else:
                    study.tell(ending, 1.0)
            same()
        study.tell(held, 0.5)
        same()
        for trial in open_trials:
            study.tell(trial, 0.1)
        same()
