"""The sweep section's line on no dropout, against hand-built trials."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from sweep.reporting.sweep_baseline import no_dropout_line
from sweep.search.baseline import BASELINE_ATTR

KEEP = FloatDistribution(0.2, 1.0, step=0.05)


def _trial(number: int, keep: float, value: float, state: TrialState = TrialState.COMPLETE,
           **attrs: object) -> FrozenTrial:
    t = optuna.create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                            params={"keep_prob": keep}, distributions={"keep_prob": KEEP},
                            user_attrs=attrs, intermediate_values={1: value - 0.1, 2: value})
    t.number = number
    return t


def test_the_best_keep_1_trial_against_the_best_overall_in_percent() -> None:
    trials = [_trial(0, 1.0, 0.9611, TrialState.PRUNED, pruned_at_epoch=2, **{BASELINE_ATTR: "keep 1.0"}),
              _trial(1, 0.85, 0.9833), _trial(2, 1.0, 0.95), _trial(3, 0.5, 0.40, TrialState.FAIL)]
    line = no_dropout_line(trials)
    assert line.startswith("No dropout (keep_prob 1.0) in 2 of the 3 finished trials: the best reached 96.1 %")
    assert "(trial 0, the baseline queued first, pruned at epoch 2)" in line  # a pruned trial's best, not its last
    assert "the best trial overall 98.3 % (trial 1, keep_prob 0.85), 2.2 points higher" in line
    assert "not dropout's effect alone" in line


def test_keep_1_as_good_as_any_and_a_sweep_that_never_tried_it() -> None:
    assert no_dropout_line([_trial(0, 1.0, 0.98), _trial(1, 0.5, 0.97)]).endswith("as high as any trial of the sweep.")
    never = no_dropout_line([_trial(0, 0.5, 0.9), _trial(1, 0.65, 0.95, TrialState.PRUNED)])  # e.g. an old study
    assert never.startswith("No trial of this sweep ran keep_prob 1.0") and "keep 0.5 to 0.65" in never
    assert no_dropout_line([]) == ""
