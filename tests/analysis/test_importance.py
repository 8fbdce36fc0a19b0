"""sweep.importance on real in-memory Optuna studies with a known dependence."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from sweep.analysis.importance import ImportanceResult, keep_prob_importance, trend_vs_keep_prob

optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective(trial: optuna.Trial) -> float:
    """Accuracy and gap driven by keep_prob; ``noise`` and the widths do nothing.

    The hidden widths are conditional on depth, as in the real search space.
    """
    keep = trial.suggest_float("keep_prob", 0.2, 1.0)
    trial.suggest_float("noise", 0.0, 1.0)
    trial.suggest_categorical("normalization", ["none", "batchnorm"])
    trial.suggest_float("reg", 1e-4, 1e-4, log=True)  # fixed, as the sweep suggests fixed values
    depth = trial.suggest_int("depth", 1, 3)
    for i in range(depth):
        trial.suggest_int(f"hidden_{i + 1}", 32, 1024, log=True)
    rng = np.random.default_rng(trial.number)
    trial.set_user_attr("gap", 0.5 * keep + 0.005 * rng.normal())
    return 0.4 + 0.3 * keep + 0.005 * rng.normal()


def make_study(n_trials: int, fn=objective) -> optuna.Study:  # type: ignore[no-untyped-def]
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1)
    )
    study.optimize(fn, n_trials=n_trials)
    return study


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return make_study(40)


@pytest.fixture(scope="module")
def result(study: optuna.Study) -> dict[str, dict[str, ImportanceResult]]:
    return keep_prob_importance(study, seed=0)


def test_keep_prob_ranks_first_for_both_targets_and_evaluators(
    result: dict[str, dict[str, ImportanceResult]],
) -> None:
    assert set(result) == {"value", "gap"}
    for target, by_evaluator in result.items():
        assert set(by_evaluator) == {"ped_anova", "fanova"}
        for name, res in by_evaluator.items():
            assert res.target == target and res.evaluator == name and res.n_trials == 40
            assert res.rank("keep_prob") == 1, (target, name, res.importances)
            assert sum(res.importances.values()) == pytest.approx(1.0)
            assert all(type(v) is float for v in res.importances.values())  # plain, for JSON
            values = list(res.importances.values())
            assert values == sorted(values, reverse=True)
            # conditional widths (hidden_2, hidden_3) and the fixed reg are left out
            assert res.params == ("depth", "hidden_1", "keep_prob", "noise", "normalization")
            assert res.note == ""
        assert by_evaluator["fanova"].importances["keep_prob"] > 0.5


def test_fanova_is_reproducible_with_its_seed(
    study: optuna.Study, result: dict[str, dict[str, ImportanceResult]]
) -> None:
    again = keep_prob_importance(study, seed=0)
    for target in ("value", "gap"):
        assert again[target]["fanova"].importances == result[target]["fanova"].importances


def test_few_trials_give_a_note_not_an_error() -> None:
    one = keep_prob_importance(make_study(1))
    for by_evaluator in one.values():
        for res in by_evaluator.values():
            assert res.importances == {} and "needs at least" in res.note
    four = keep_prob_importance(make_study(4))
    assert four["value"]["ped_anova"].importances == {}
    assert four["value"]["fanova"].importances and "rough hint" in four["value"]["fanova"].note
    empty = optuna.create_study(direction="maximize")
    assert keep_prob_importance(empty)["gap"]["fanova"].n_trials == 0


def test_flat_objective_reports_no_effect_instead_of_equal_shares() -> None:
    def flat(trial: optuna.Trial) -> float:
        trial.suggest_float("keep_prob", 0.2, 1.0)
        trial.suggest_float("noise", 0.0, 1.0)
        trial.set_user_attr("gap", 0.1)
        return 0.5

    for by_evaluator in keep_prob_importance(make_study(12, flat)).values():
        for res in by_evaluator.values():
            assert res.importances == {} and "same" in res.note


def test_all_zero_importances_are_not_turned_into_equal_shares() -> None:
    def flat_in_x(trial: optuna.Trial) -> float:
        trial.suggest_float("keep_prob", 0.2, 1.0)
        trial.set_user_attr("gap", 0.01 * trial.number)
        return 0.5 + 0.01 * trial.number  # depends on nothing the sampler chose

    # With a 100 % "top" group PED-ANOVA sees no difference: all zeros, and
    # Optuna's normalize=True would report {"keep_prob": 1.0}.
    res = keep_prob_importance(make_study(12, flat_in_x), top_quantile=0.999)
    assert res["value"]["ped_anova"].importances == {}
    assert "all importances are zero" in res["value"]["ped_anova"].note
    with pytest.raises(ValueError, match="top_quantile"):
        keep_prob_importance(make_study(1), top_quantile=1.0)


def test_fixed_keep_prob_is_reported_not_ranked() -> None:
    def fixed(trial: optuna.Trial) -> float:
        trial.suggest_float("keep_prob", 0.5, 0.5)
        trial.suggest_float("noise", 0.0, 1.0)
        trial.set_user_attr("gap", 0.01 * trial.number)
        return 0.5 + 0.01 * trial.number

    res = keep_prob_importance(make_study(12, fixed))["value"]["fanova"]
    assert res.params == ("noise",) and res.rank("keep_prob") is None
    assert "'keep_prob' is not a parameter of every completed trial" in res.note


def test_pruned_failed_and_gapless_trials_are_left_out() -> None:
    study = make_study(12)

    def odd(trial: optuna.Trial) -> float:
        trial.suggest_float("keep_prob", 0.2, 1.0)
        trial.suggest_int("depth", 1, 3)
        if trial.number == 12:
            raise optuna.TrialPruned()
        if trial.number == 13:
            raise RuntimeError("diverged")
        return 0.5  # completed, but no gap attr and no noise/normalization params

    study.optimize(odd, n_trials=3, catch=(RuntimeError,))
    result = keep_prob_importance(study)
    assert result["value"]["fanova"].n_trials == 13
    assert result["value"]["fanova"].params == ("depth", "keep_prob")
    assert result["gap"]["fanova"].n_trials == 12
    assert "noise" in result["gap"]["fanova"].params

    points = trend_vs_keep_prob(study)
    assert [p.number for p in points] == [*range(12), 14]
    assert math.isnan(points[-1].gap) and not math.isnan(points[0].gap)
    frozen = study.trials[0]
    assert points[0].keep_prob == frozen.params["keep_prob"]
    assert points[0].value == frozen.value and points[0].gap == frozen.user_attrs["gap"]


def test_conditional_keep_prob_is_reported() -> None:
    def conditional(trial: optuna.Trial) -> float:
        use = trial.suggest_categorical("use_dropout", [True, False])
        keep = trial.suggest_float("keep_prob", 0.2, 0.9) if use else 1.0
        trial.set_user_attr("gap", 0.5 * keep)
        return keep

    res = keep_prob_importance(make_study(10, conditional))["gap"]["ped_anova"]
    assert "'keep_prob' is not a parameter of every completed trial" in res.note


def test_multi_objective_study_is_rejected() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="single-objective"):
        keep_prob_importance(study)
