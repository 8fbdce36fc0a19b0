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
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, TrialState


class ScalingJournalStorage(JournalStorage):
    """`JournalStorage` with the prefix of finished trials kept between `get_all_trials` calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (study id, states asked) -> (trials of the study walked, the finished ones among them in `states`)
        self._settled: dict[tuple[int, frozenset[TrialState] | None], tuple[int, list[FrozenTrial]]] = {}
        self._settled_of: object = None  # the replay they were read from (a snapshot restore replaces it)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._settled, self._settled_of = {}, None

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        wanted: frozenset[TrialState] | None = None
        if states is not None and isinstance(states, (tuple, list, set, frozenset)):
            wanted = frozenset(states)
        if deepcopy or (states is not None and wanted is None):  # copies every trial anyway / an odd Container
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        with self._thread_lock:
            self._sync_with_backend()
            replay = self._replay_result
            if study_id not in replay._studies:
                return replay.get_all_trials(study_id, states)  # raises Optuna's KeyError
            if self._settled_of is not replay:
                self._settled, self._settled_of = {}, replay
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
            return kept + rest
