"""sweep.analysis.sequential: the stopping rule `sweep ablate --until-decided` runs and the report replays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.analysis.confseq import decide, t_cs_radius
from sweep.analysis.sequential import (
    Rule,
    comparison_keys,
    first_look,
    paired_diffs,
    replay,
    seeds_to_add,
)


def values_from(diffs_points: dict[float, list[float]], size: int = 500, base: float = 0.8) -> dict:
    """Cell values with keep 1.0 at `base` and each treated keep at base + diff (points -> fraction)."""
    n = max(len(d) for d in diffs_points.values())
    out = {(size, 1.0, k, ()): base for k in range(n)}
    for keep, diffs in diffs_points.items():
        out.update({(size, keep, k, ()): base + d / 100 for k, d in enumerate(diffs)})
    return out


@pytest.mark.parametrize("alpha_each, expected", [(0.05, 3), (0.025, 4), (0.05 / 9, 4), (0.05 / 36, 5)])
def test_first_look_is_the_first_n_with_a_bounded_interval(alpha_each: float, expected: int) -> None:
    assert first_look(alpha_each) == expected
    assert math.isinf(t_cs_radius(expected - 1, 1.0, alpha_each)) and math.isfinite(t_cs_radius(expected, 1.0, alpha_each))


def test_replay_stops_at_the_first_deciding_look_not_the_latest() -> None:
    # Decided at 3 seeds (a clear, steady effect); the seeds after it would undo it.
    diffs = [2.0, 2.1, 1.9, -5.0, -6.0, -7.0]
    keys = comparison_keys([500], [()], [1.0, 0.5])
    [comp] = replay(values_from({0.5: diffs}), keys, Rule(max_seeds=10)).values()
    assert comp.status == "decided" and comp.seeds == 3 and comp.diffs == pytest.approx(diffs[:3])
    alone = decide({"x": diffs[:3]})["x"].anytime
    assert (comp.decision.anytime.low, comp.decision.anytime.high) == pytest.approx((alone.low, alone.high))
    assert list(seeds_to_add(comp, Rule(max_seeds=10), 1)) == []


def test_bonferroni_over_every_comparison_of_the_grid() -> None:
    keys = comparison_keys([100, 300], [(("normalization", "none"),), (("normalization", "batchnorm"),)],
                           [1.0, 0.75, 0.5])
    assert len(keys) == 8 and all(k[2] != 1.0 for k in keys)
    state = replay({}, keys, Rule())
    assert [c.decision.alpha_each for c in state.values()] == pytest.approx([0.05 / 8] * 8)
    # Nothing recorded: every comparison is open and its first round goes straight to the first look.
    assert {tuple(seeds_to_add(c, Rule(), 8)) for c in state.values()} == {(0, 1, 2, 3)}


def test_open_gets_one_more_seed_then_capped_at_max_seeds() -> None:
    rng = np.random.default_rng(1)
    noise = list(rng.normal(0, 1.0, 6))
    keys = comparison_keys([500], [()], [1.0, 0.9])
    rule = Rule(max_seeds=6)
    [open_comp] = replay(values_from({0.9: noise[:4]}), keys, rule).values()
    assert open_comp.status == "open" and list(seeds_to_add(open_comp, rule, 1)) == [4]
    [capped] = replay(values_from({0.9: noise}), keys, rule).values()
    assert capped.status == "capped" and capped.seeds == 6 and "at the cap of 6 seeds" in capped.decision.reason
    assert list(seeds_to_add(capped, rule, 1)) == []
    [precise] = replay(values_from({0.9: noise}), keys, Rule(max_seeds=6, precision=50.0)).values()
    assert precise.status == "precise" and precise.seeds < 6


def test_a_seed_missing_a_run_counts_as_taken_and_is_left_out_of_the_interval() -> None:
    values = values_from({0.5: [2.0, 2.2, 1.8, 2.1]})
    del values[(500, 0.5, 1, ())]  # its run failed (or, read by the report, did not finish)
    key = (500, (), 0.5)
    diffs = paired_diffs(values, key)
    assert len(diffs) == 4 and math.isnan(diffs[1])
    [comp] = replay(values, [key], Rule()).values()
    assert comp.seeds == 4 and comp.decision.n == 3
