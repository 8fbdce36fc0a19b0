"""TPE that costs the same at trial 10 000 as at trial 500: it sees a bounded history.

Optuna's TPE builds two Parzen estimators per ask, one over the best trials
("below", at most 25 with its default gamma) and one over ALL the others
("above"): one kernel per trial, evaluated at every candidate. So each ask
costs time linear in the study (measured with the sweep's sampler on the
tiny digits space: 4 ms at 100 trials, 11 ms at 1 000, 31 ms at 3 000, ~100
ms at 10 000: more than a tiny trial itself, and 48 % of a worker's profile
at trial 1 100).

`BoundedHistoryMixin` hands TPE at most `HISTORY_CAP` finished trials: the
best `KEEP_BEST` (so the "below" group, TPE's model of where good trials
are, is exactly the one it would use) and a random sample of the others,
drawn from the trial's own seed (so a study stays reproducible), plus every
RUNNING trial (constant liar). Up to `HISTORY_CAP` finished trials nothing
changes at all: the CIFAR-10 hour of docs/results.md (149-221 trials) samples
exactly as before. Beyond it the "above" estimator is a kernel mixture over a
uniform sample of the same trials: the same density in expectation.

Kept apart from sweep.study's sampler so another sampler setting (e.g. a
reproducible mode) can be combined with it: a TPESampler subclass lists it
first among its bases.
"""

from __future__ import annotations

import copy
import heapq
import math
from typing import Any

import numpy as np
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace  # what TPE(group=True) uses
from optuna.trial import FrozenTrial, TrialState

HISTORY_CAP = 500
KEEP_BEST = 100  # > TPE's 25-trial "below" group, and > what its gamma picks below 1 000 trials


class SettledRun:
    """What the leading run of finished trials of one `_get_trials` list gives `bounded_history`, kept
    between asks: a finished trial never changes, so each ask reads only the list's unfinished end.

    The list may change before that end only when a trial with a lower number joins it (a re-queued
    trial starting); then the first `upto` entries are no longer the ones read, and all is read again.
    """

    def __init__(self) -> None:
        self.upto = 0
        self.last_number = -1  # trials[upto - 1].number when read
        self.top: list[tuple[float, int]] = []  # min-heap of (score, -index): the prefix's best KEEP_BEST

    def advance(self, trials: list[FrozenTrial], score: Any) -> None:
        if self.upto > len(trials) or (self.upto and trials[self.upto - 1].number != self.last_number):
            self.upto, self.last_number, self.top = 0, -1, []  # not the list read before: read it all again
        i = self.upto
        while i < len(trials) and trials[i].state != TrialState.RUNNING:
            item = (score(trials[i]), -i)
            if len(self.top) < KEEP_BEST:
                heapq.heappush(self.top, item)
            elif item > self.top[0]:
                heapq.heapreplace(self.top, item)
            i += 1
        if i > self.upto:
            self.upto, self.last_number = i, trials[i - 1].number


def bounded_history(trials: list[FrozenTrial], maximize: bool, cap: int, rng: np.random.Generator,
                    scores: dict[int, float] | None = None, settled: SettledRun | None = None) -> list[FrozenTrial]:
    """At most `cap` finished trials of `trials` (best KEEP_BEST kept, the rest sampled), RUNNING ones all.

    Returned in trial order, as Optuna gives them. `scores` (trial number -> value, -inf
    for no finite value; a finished trial's never changes) and `settled` (the same list's
    leading finished trials, read at an earlier ask) carry over between calls, so each
    trial is read once; the result is the same without them.
    """
    scores = {} if scores is None else scores
    settled = SettledRun() if settled is None else settled
    sign = 1.0 if maximize else -1.0

    def score(t: FrozenTrial) -> float:
        if t.number not in scores:
            value = t.value if t.state == TrialState.COMPLETE else None
            scores[t.number] = sign * value if value is not None and math.isfinite(value) else -math.inf
        return scores[t.number]

    settled.advance(trials, score)
    tail = range(settled.upto, len(trials))
    running = [i for i in tail if trials[i].state == TrialState.RUNNING]
    tail_finished = [i for i in tail if trials[i].state != TrialState.RUNNING]
    n_finished = settled.upto + len(tail_finished)
    if n_finished <= cap:
        return trials
    # The best min(KEEP_BEST, cap), ties to the lower index (as a stable sort would pick them).
    candidates = [*settled.top, *((score(trials[i]), -i) for i in tail_finished)]
    best = sorted(-neg for s, neg in heapq.nlargest(min(KEEP_BEST, cap), candidates) if s > -math.inf)
    finished = np.concatenate([np.arange(settled.upto), np.asarray(tail_finished, dtype=np.int64)])
    rest = np.delete(finished, np.searchsorted(finished, best))  # finished in order, the best left out
    take = cap - len(best)
    sample: Any = rest[rng.choice(len(rest), size=take, replace=False)] if take > 0 else []
    chosen = sorted({*best, *(int(i) for i in sample), *running})
    return [trials[i] for i in chosen]


class _BoundedStudy:
    """A study as TPE's `_sample` reads it: the same, but `_get_trials` bounded."""

    def __init__(self, study: Any, trial_number: int, seed: int, cap: int, memo: dict[Any, Any],
                 scores: dict[int, float], settled: dict[str, SettledRun]) -> None:
        self._study, self._trial_number, self._seed, self._cap = study, trial_number, seed, cap
        self._memo, self._scores, self._settled = memo, scores, settled

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        trials = self._study._get_trials(*args, **kwargs)
        # TPE(group=True) samples each group of the space in turn: one bounding per ask.
        states = repr(kwargs.get("states"))
        key = (self._trial_number, len(trials), states)
        if key not in self._memo:
            self._memo.clear()
            rng = np.random.default_rng([self._seed, self._trial_number, len(trials)])
            maximize = self._study.direction.name == "MAXIMIZE"
            settled = self._settled.setdefault(states, SettledRun())  # one per kind of list TPE asks for
            self._memo[key] = bounded_history(trials, maximize, self._cap, rng, self._scores, settled)
        return self._memo[key]


class _IncrementalGroupSearchSpace(_GroupDecomposedSearchSpace):
    """Optuna's grouped search space, adding each finished trial once instead of every trial at
    every ask (28 ms an ask at 3 000 trials). Adding one trial's distributions again changes
    nothing (the groups are intersections), so the result is the same. The list's leading
    finished trials are walked once (a finished trial never changes), the rest at each ask:
    walking all of them cost 8 ms a trial at 10 000 trials (py-spy, `bench/big_study.py`)."""

    def __init__(self, include_pruned: bool = False) -> None:
        super().__init__(include_pruned)
        self._added: set[int] = set()
        self._upto, self._last_number = 0, -1  # leading finished trials walked; the number of the last

    def calculate(self, study: Any, use_cache: bool = False) -> Any:
        if self._study_id is None:
            self._study_id = study._study_id
        elif self._study_id != study._study_id:
            raise ValueError("`_GroupDecomposedSearchSpace` cannot handle multiple studies.")
        states = (TrialState.COMPLETE, TrialState.PRUNED) if self._include_pruned else (TrialState.COMPLETE,)
        trials = study._get_trials(deepcopy=False, use_cache=use_cache)
        if self._upto > len(trials) or (self._upto and trials[self._upto - 1].number != self._last_number):
            self._upto, self._last_number = 0, -1  # not the list walked before: walk it all again
        i = self._upto
        while i < len(trials) and trials[i].state.is_finished():
            i += 1
        for trial in trials[self._upto:]:  # the newly finished prefix, then the unfinished end
            if trial.state in states and trial._trial_id not in self._added:
                self._search_space.add_distributions(trial.distributions)
                self._added.add(trial._trial_id)
        if i > self._upto:
            self._upto, self._last_number = i, trials[i - 1].number
        return copy.deepcopy(self._search_space)


class BoundedHistoryMixin:
    """For a TPESampler subclass: its estimators see at most `HISTORY_CAP` finished trials, and its
    grouped search space is kept up to date trial by trial."""

    history_cap = HISTORY_CAP
    _group_decomposed_search_space: _GroupDecomposedSearchSpace | None  # TPESampler's, replaced below

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bounded_memo: dict[Any, Any] = {}
        self._scores: dict[int, float] = {}  # finished trials' values, read once
        self._settled: dict[str, SettledRun] = {}
        self._past_startup: set[Any] = set()  # studies with n_startup_trials finished (a finished trial stays so)
        group = getattr(self, "_group_decomposed_search_space", None)
        if group is not None:
            self._group_decomposed_search_space = _IncrementalGroupSearchSpace(group._include_pruned)

    def _sample(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        seed = int(getattr(self, "_base_seed", 0) or 0)
        bounded = _BoundedStudy(study, trial.number, seed, self.history_cap, self._bounded_memo, self._scores,
                                self._settled)
        return super()._sample(bounded, trial, search_space)  # type: ignore[misc]

    def _sample_relative(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        # Optuna's counts the study's finished trials against n_startup_trials by filtering all of
        # them at every ask (3 ms a trial at 10 000 trials, py-spy of `bench/big_study.py`); once
        # the count is reached it cannot fall again, so the rest of the sweep skips the count.
        key = (study.study_name, study._study_id)
        if key not in self._past_startup:
            finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED),
                                         use_cache=True)
            if len(finished) >= self._n_startup_trials:  # type: ignore[attr-defined]
                self._past_startup.add(key)
        if key not in self._past_startup or not search_space:
            return super()._sample_relative(study, trial, search_space)  # type: ignore[misc]
        return self._sample(study, trial, search_space)
