"""Issue 23 (big studies stay fast): fANOVA on a bounded sample of a big study, said in its note,
and importances reused while the study has not changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def test_fanova_on_a_big_study_uses_a_bounded_sample_and_says_so() -> None:
    import optuna

    from sweep.analysis import importance

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

    from sweep.analysis.importance import cached_importance

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
