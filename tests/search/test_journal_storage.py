"""sweep.search.journal_storage: the kept prefix of finished trials gives the same lists as Optuna's own walk."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sweep.search.journal_storage import ScalingJournalStorage

STATES = [None, (TrialState.COMPLETE,), (TrialState.WAITING,), (TrialState.RUNNING,),
          (TrialState.COMPLETE, TrialState.PRUNED), [TrialState.FAIL], {TrialState.PRUNED, TrialState.FAIL}]


def _lists(storage: JournalStorage, study_id: int) -> list[list[tuple[int, str, object]]]:
    return [[(t.number, t.state.name, t.value) for t in storage.get_all_trials(study_id, deepcopy=False, states=s)]
            for s in STATES]


def _study_and_plain_view(tmp_path: Path, direction: str) -> tuple[optuna.Study, ScalingJournalStorage, JournalStorage]:
    """A study on our storage, and another process's view of the same file: Optuna's plain storage."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = str(tmp_path / "optuna.journal")
    ours = ScalingJournalStorage(JournalFileBackend(journal))
    study = optuna.create_study(study_name="s", storage=ours, direction=direction)
    return study, ours, JournalStorage(JournalFileBackend(journal))


def test_trial_lists_match_optunas_while_trials_start_finish_and_wait(tmp_path: Path) -> None:
    study, ours, plain = _study_and_plain_view(tmp_path, "maximize")
    # The plain view also writes trials of its own.
    other = optuna.load_study(study_name="s", storage=plain)
    sid = study._study_id

    def same() -> None:
        assert _lists(ours, sid) == _lists(plain, sid)
        if any(t.state == TrialState.COMPLETE for t in plain.get_all_trials(sid, deepcopy=False)):
            assert ours.get_best_trial(sid).number == plain.get_best_trial(sid).number


    long_running = study.ask()  # stays RUNNING while later trials finish: the kept prefix must stop before it
    same()
    with pytest.raises(ValueError, match="No trials are completed"):
        ours.get_best_trial(sid)
    for i in range(12):
        trial = study.ask()
        state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][i % 3]
        # Values rise, then tie the best so far: the best is the FIRST trial of the best value, as Optuna's.
        study.tell(trial, min(i, 6) / 10 if state == TrialState.COMPLETE else None, state=state)
        same()
    study.enqueue_trial({"x": 1.0})  # WAITING
    same()
    popped = study.ask()  # pops the WAITING one
    assert popped.number == 13
    same()
    mine = other.ask()  # written by the other storage: seen by ours at its next read
    same()
    study.tell(long_running, 5.0)  # the prefix may now run past it
    same()
    other.tell(mine, state=TrialState.PRUNED)
    same()
    study.tell(popped, 0.5)
    same()
    assert [t.number for t in ours.get_all_trials(sid, deepcopy=False)] == list(range(15))
    assert study.best_value == 5.0 and study.best_trial.number == long_running.number
    other.tell(other.ask(), 5.0)  # a tie, later, written by the other process: the earlier trial stays best
    same()
    assert ours.get_best_trial(sid).number == long_running.number
    # A deep copy is a copy: changing it changes nothing kept.
    copied = ours.get_all_trials(sid, deepcopy=True)
    copied[1].user_attrs["x"] = 1
    assert "x" not in ours.get_all_trials(sid, deepcopy=False)[1].user_attrs


def test_the_best_trial_of_a_minimizing_study_is_optunas(tmp_path: Path) -> None:
    study, ours, plain = _study_and_plain_view(tmp_path, "minimize")
    for value in [3.0, 1.0, 2.0, 1.0, 0.5, 0.5]:
        study.tell(study.ask(), value)
        assert ours.get_best_trial(study._study_id).number == plain.get_best_trial(study._study_id).number
    assert study.best_trial.number == 4
