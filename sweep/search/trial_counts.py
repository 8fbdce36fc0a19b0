"""A study's trial counts per task in time that does not grow with the study.

Every task of a worker counts the study's trials (`check_target`, the reaper)
and the sweep's main thread does so after every result: at 10 000 trials that
is 10 000 state and number reads per count (5 % of a worker's profile at 1 600
trials, growing with the study). A finished trial (COMPLETE, PRUNED, FAIL)
never changes state, and a retry's `retry_history` is written when it is
created, so what the leading run of finished trials contributes is read once
per storage object and kept (`Settled`); each count reads only the trials from
the first unfinished one on: the few running now, in a sweep that keeps up.
(A trial left RUNNING for long, say in another sweep process, makes the counts
read from it on, as they all did before.)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Settled:
    """What the first `upto` trials (all finished) of one study contribute: read once."""

    upto: int = 0
    last_number: int = -1  # trials[upto - 1].number: a check that the list is the one counted
    finished: int = 0
    failed: list[int] = field(default_factory=list)  # indices of its FAIL trials
    retried: set[int] = field(default_factory=set)  # numbers in its trials' retry_history

    def advance(self, trials: Sequence[FrozenTrial]) -> None:
        i = self.upto
        while i < len(trials) and trials[i].state in FINISHED:
            t = trials[i]
            self.finished += 1
            if t.state == TrialState.FAIL:
                self.failed.append(i)
            self.retried.update(t.system_attrs.get("retry_history", ()))
            i += 1
        if i > self.upto:
            self.upto, self.last_number = i, trials[i - 1].number


# storage object -> study id -> Settled (weak: a storage that is gone takes its counts along)
_SETTLED: weakref.WeakKeyDictionary[Any, dict[int, Settled]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TrialCounts:
    """The counts `check_target` and `counted_trials` need, and the trials the reaper must look at."""

    counted: int  # finished, pruned or failed, minus re-queued failures
    running: int
    waiting: int
    retried: set[int]  # numbers of failed trials whose params were queued again
    unsettled: list[FrozenTrial]  # the failed trials of the settled run, and every trial after it


def trial_counts(study: Any, trials: Sequence[FrozenTrial]) -> TrialCounts:
    """Counts of `trials` (`study.get_trials(deepcopy=False)`, in number order) of `study`."""
    settled = _settled(study, trials)
    rest = trials[settled.upto:]
    retried = set(settled.retried)
    for t in rest:
        retried.update(t.system_attrs.get("retry_history", ()))
    failed = [trials[i] for i in settled.failed]
    counted = settled.finished - sum(1 for t in failed if t.number in retried)
    counted += sum(1 for t in rest if t.state in FINISHED and t.number not in retried)
    return TrialCounts(
        counted=counted,
        running=sum(1 for t in rest if t.state == TrialState.RUNNING),
        waiting=sum(1 for t in rest if t.state == TrialState.WAITING),
        retried=retried,
        unsettled=[*failed, *rest],
    )


def _settled(study: Any, trials: Sequence[FrozenTrial]) -> Settled:
    try:
        by_study = _SETTLED.setdefault(study._storage, {})
    except TypeError:  # a storage that takes no weak reference: count from the start each time
        by_study = {}
    settled = by_study.get(study._study_id)
    if settled is None or settled.upto > len(trials) or (
            settled.upto and trials[settled.upto - 1].number != settled.last_number):
        settled = by_study[study._study_id] = Settled()
    settled.advance(trials)
    return settled
