"""Optuna's JournalStorage whose trial lists cost what changed since the last call, not the study's size.

Optuna's `JournalStorage.get_all_trials` walks every trial of the study in
Python to build its list, and one trial of a sweep asks for that list about
seven times (ask pops WAITING trials, TPE reads finished ones, the best value,
the target check, the reaper): at 10 000 trials about 3 ms a call, 20 ms of
CPU per trial that was not there at trial 100 (cProfile of a 10 000-trial
study, `bench/big_study.py`). A finished trial never changes in a journal
(the replay refuses updates to it, and replaces a trial's object on every
update it applies), so the list of the leading finished trials is kept, per
`states` asked, and each call adds the trials that finished since and walks
only the rest: the few running now, in a sweep that keeps up. A trial left
RUNNING for long (another sweep process) makes calls walk from it on, as all
of them did before.

`get_best_trial` (the objective asks `study.best_value` at every trial's end)
keeps the best of that prefix in the same way: Optuna's walks every complete
trial (10 ms a trial at 10 000 trials, py-spy of `bench/big_study.py`).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from optuna.storages import JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

COMPLETE = frozenset({TrialState.COMPLETE})


class ScalingJournalStorage(JournalStorage):
    """`JournalStorage` with the prefix of finished trials kept between `get_all_trials` calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (study id, states asked) -> (trials of the study walked, the finished ones among them in `states`)
        self._settled: dict[tuple[int, frozenset[TrialState] | None], tuple[int, list[FrozenTrial]]] = {}
        self._settled_of: object = None  # the replay they were read from (a snapshot restore replaces it)
        self._best: dict[int, tuple[int, FrozenTrial | None]] = {}  # study id -> (complete trials kept read, best)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._settled, self._settled_of, self._best = {}, None, {}

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        wanted: frozenset[TrialState] | None = None
        if states is not None and isinstance(states, (tuple, list, set, frozenset)):
            wanted = frozenset(states)
        if deepcopy or (states is not None and wanted is None):  # copies every trial anyway / an odd Container
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        with self._thread_lock:
            kept, rest = self._kept_and_rest(study_id, wanted)
            return kept + rest

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """Optuna's best trial (the first of the best values, in trial order), the kept prefix read once."""
        directions = self.get_study_directions(study_id)  # raises Optuna's KeyError for an unknown study
        if len(directions) > 1:
            raise RuntimeError("Best trial can be obtained only for single-objective optimization.")
        maximize = directions[0] == StudyDirection.MAXIMIZE

        def better(t: FrozenTrial, than: FrozenTrial | None) -> bool:  # strictly: ties keep the earlier trial
            return than is None or (t.value > than.value if maximize else t.value < than.value)  # type: ignore[operator]

        with self._thread_lock:
            kept, rest = self._kept_and_rest(study_id, COMPLETE)
            read, best = self._best.get(study_id, (0, None))  # reset with the kept lists (a new replay)
            for trial in kept[read:]:
                if better(trial, best):
                    best = trial
            self._best[study_id] = (len(kept), best)
            for trial in rest:
                if better(trial, best):
                    best = trial
        if best is None:
            raise ValueError("No trials are completed yet.")
        return best

    def _kept_and_rest(self, study_id: int, wanted: frozenset[TrialState] | None
                       ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
        """The study's leading finished trials in `wanted` (the kept list itself: do not change it), and
        those in `wanted` after them. Called with the thread lock held."""
        self._sync_with_backend()
        replay = self._replay_result
        if study_id not in replay._studies:
            return [], replay.get_all_trials(study_id, wanted)  # raises Optuna's KeyError
        if self._settled_of is not replay:
            self._settled, self._settled_of, self._best = {}, replay, {}
        ids = replay._study_id_to_trial_ids[study_id]
        trials = replay._trials
        key = (study_id, wanted)
        upto, kept = self._settled.get(key, (0, []))
        while upto < len(ids) and trials[ids[upto]].state.is_finished():
            trial = trials[ids[upto]]
            if wanted is None or trial.state in wanted:
                kept.append(trial)
            upto += 1
        self._settled[key] = (upto, kept)
        rest = [trials[i] for i in ids[upto:]]
        if wanted is not None:
            rest = [t for t in rest if t.state in wanted]
        return kept, rest
