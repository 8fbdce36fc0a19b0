"""The no-dropout baseline: every new sweep runs keep_prob 1.0 once, queued first, never twice."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep.config.space import Range, SearchSpace
from sweep.config.sweep_file import load_config
from sweep.search.baseline import BASELINE_ATTR, baseline_params
from sweep.search.study import make_storage, open_study
from tests.sweep_helpers import load_study, mlflow_runs, run_cli


def test_the_baseline_is_keep_1_at_the_centre_of_the_space() -> None:
    space = SearchSpace()
    params = baseline_params(space)
    # depth 1..4 -> 3 (1 + 1.5 steps, to the even step), width 32..512 log -> 128, lr 1e-4..1e-2 log -> 1e-3.
    assert params == {"keep_prob": 1.0, "depth": 3, "hidden_1": 128, "hidden_2": 128, "hidden_3": 128,
                      "learning_rate": 1e-3, "normalization": "none", "weight_scale": 0.03162}
    assert space.contains(space.params_from_trial(params))
    assert baseline_params(space) == params  # the space alone decides it: the same for every seed
    # A sweep file that fixes keep_prob, or keeps it below 1.0, chose no baseline.
    assert baseline_params(SearchSpace(keep_prob=0.5)) is None
    assert baseline_params(SearchSpace(keep_prob=Range(0.2, 0.9, step=0.05))) is None
    assert baseline_params(SearchSpace(keep_prob=[0.5, 1.0], depth=2, width=64)) == {
        "keep_prob": 1.0, "learning_rate": 1e-3, "normalization": "none", "weight_scale": 0.03162}


def test_a_new_study_queues_one_baseline_and_reopening_it_queues_none(tmp_path: Path) -> None:
    cfg = load_config(None, {"dataset": "digits"})
    storage = make_storage(None, tmp_path / "optuna.journal")
    study = open_study(cfg, storage)
    [waiting] = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.number == 0 and waiting.user_attrs[BASELINE_ATTR]
    for _ in range(2):  # a resumed sweep, a second `sweep run` joining it
        study = open_study(cfg, make_storage(None, tmp_path / "optuna.journal"))
    assert len(study.get_trials()) == 1
    trial = study.ask()  # Optuna pops the queued trial first
    assert trial.number == 0 and cfg.space.suggest(trial).keep_prob == 1.0


def test_a_study_made_before_baselines_gets_none_on_resume(tmp_path: Path) -> None:
    cfg = load_config(None, {"dataset": "digits"})
    storage = make_storage(None, tmp_path / "optuna.journal")
    optuna.create_study(storage=storage, study_name=cfg.study_name, direction="maximize")  # an old study
    study = open_study(cfg, storage)
    assert study.get_trials() == []


@pytest.mark.parametrize("jobs", ["1"])
def test_a_sweep_runs_its_baseline_first_once_and_records_it(tmp_path: Path, jobs: str) -> None:
    run_cli(tmp_path, "run", "--jobs", jobs, "--trials", "2", "--epochs", "2")
    run_cli(tmp_path, "run", "--jobs", jobs, "--trials", "3", "--epochs", "2")  # resumed: no second baseline
    trials = load_study(tmp_path).get_trials()
    assert [t.number for t in trials if BASELINE_ATTR in t.user_attrs] == [0]
    assert trials[0].params["keep_prob"] == 1.0 and trials[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    _, _, children = mlflow_runs(tmp_path)
    tagged = [r for r in children if "sweep.baseline" in r.data.tags]
    assert [r.info.run_name for r in tagged] == ["trial-0000"] and tagged[0].data.params["keep_prob"] == "1.0"
