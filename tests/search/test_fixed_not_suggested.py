"""Fixed settings are not hyperparameters (optuna-dashboard listed them with importance 0),
and studies whose trials hold them as one-value distributions still resume."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweep.analysis.importance import keep_prob_importance
from sweep.config.sweep_file import load_config
from sweep.search.study import make_storage, open_study

OLD_CONSTANTS = {  # how sweeps before suggested the default space's fixed settings
    "reg": (0.0, FloatDistribution(0.0, 0.0)), "batch_size": (100, IntDistribution(100, 100)),
    "update_rule": ("adam", CategoricalDistribution(["adam"])), "epochs": (15, IntDistribution(15, 15)),
    "lr_decay": (0.95, FloatDistribution(0.95, 0.95)),
}


def test_a_study_with_old_one_value_distributions_resumes_and_new_trials_hold_only_searched_params(
        tmp_path: Path) -> None:
    cfg = load_config(None, {"dataset": "digits"})
    study = open_study(cfg, make_storage(None, tmp_path / "optuna.journal"))
    rng = optuna.samplers.RandomSampler(seed=0)
    scratch = optuna.create_study(sampler=rng)
    for i in range(12):  # old trials: searched params drawn, constants as one-value distributions
        t = scratch.ask()
        cfg.space.suggest(t)
        params = {**t.params, **{k: v for k, (v, _) in OLD_CONSTANTS.items()}}
        dists = {**t.distributions, **{k: d for k, (_, d) in OLD_CONSTANTS.items()}}
        study.add_trial(optuna.create_trial(params=params, distributions=dists, value=0.5 + i / 100))
    study = open_study(cfg, make_storage(None, tmp_path / "optuna.journal"))  # resume: the identity check passes
    for _ in range(4):  # the baseline queued at creation, then TPE (past its 10 start-up trials) on mixed trials
        trial = study.ask()
        p = cfg.space.suggest(trial)
        assert not set(OLD_CONSTANTS) & set(trial.params)
        assert (p.reg, p.batch_size, p.update_rule, p.epochs, p.lr_decay) == (0.0, 100, "adam", 15, 0.95)
        study.tell(trial, 0.6)
    for t in study.get_trials():  # every trial, old or new, loads as its whole configuration
        assert cfg.space.contains(cfg.space.params_from_trial(t.params))
    ranked = keep_prob_importance(study, seed=0)["value"]["fanova"]
    assert "keep_prob" in ranked.importances and not set(OLD_CONSTANTS) & set(ranked.importances)
