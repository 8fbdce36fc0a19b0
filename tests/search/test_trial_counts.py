"""Issue 23: the per-task trial counts read only the unfinished end of the study, and stay right as
trials finish, fail, are re-queued and run again (against a count over every trial each time)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from sweep.search.study import check_target, counted_trials, requeue, retried_numbers
from sweep.search.trial_counts import trial_counts


def _reference(study: optuna.Study) -> tuple[int, int, int]:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    counted = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                  and t.number not in retried)
    return (counted, sum(1 for t in trials if t.state == TrialState.RUNNING),
            sum(1 for t in trials if t.state == TrialState.WAITING))


def _check(study: optuna.Study) -> None:
    got = check_target(study, 10_000)
    assert (got.counted, got.running, got.waiting) == _reference(study)
    assert counted_trials(study) == got.counted


def test_counts_follow_the_study_through_failures_retries_and_long_running_trials() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def finish(state: TrialState, value: float | None = 0.5) -> optuna.Trial:
        trial = study.ask()
        trial.suggest_float("keep_prob", 0.2, 1.0)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        return trial

    for _ in range(5):
        finish(TrialState.COMPLETE)
    failed = finish(TrialState.FAIL)
    finish(TrialState.PRUNED)
    _check(study)  # 7 settled, one of them failed
    slow = study.ask()  # stays RUNNING while later trials end: the settled run stops before it
    slow.suggest_float("keep_prob", 0.2, 1.0)
    for _ in range(3):
        finish(TrialState.COMPLETE)
    _check(study)
    # The failed trial (in the settled run, counted so far) is re-queued: it no longer counts.
    requeue(study, study.get_trials(deepcopy=False)[failed.number])
    _check(study)
    assert counted_trials(study) == 9 and check_target(study, 100).waiting == 1
    retry = study.ask()  # takes the WAITING retry
    assert study._storage.get_trial(retry._trial_id).system_attrs.get("failed_trial") == failed.number
    study.tell(retry, 0.7)
    study.tell(slow, 0.6)
    _check(study)
    counts = trial_counts(study, study.get_trials(deepcopy=False))
    assert counts.counted == 11 and counts.running == 0
    # Only the failed trial of the settled run and nothing after it is handed to the reaper.
    assert [t.number for t in counts.unsettled] == [failed.number]


def test_another_study_in_a_new_storage_is_not_counted_from_the_old_ones_memo() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for n in (6, 3):  # the second, smaller study may get the first storage's id once it is freed
        study = optuna.create_study(direction="maximize")
        for _ in range(n):
            trial = study.ask()
            study.tell(trial, 1.0)
        _check(study)
        assert counted_trials(study) == n
