"""sweep.analysis.arms against hand computations: paired differences per seed, Holm over every pair."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from sweep.analysis.arms import summarize_arms
from sweep.reporting.compare_report import headline


def _records(test: dict[str, list[float]]) -> list[dict[str, object]]:
    return [{"arm": arm, "seed": k, "test_acc": v, "train_acc": 1.0, "gap": 1.0 - v, "seconds": 1.0 + k, "curve": []}
            for arm, values in test.items() for k, v in enumerate(values)]


def test_every_pair_is_compared_paired_by_seed_and_holm_counts_them_all() -> None:
    test = {"none": [0.80, 0.82, 0.79, 0.81, 0.80, 0.83],
            "dropout": [0.85, 0.86, 0.84, 0.86, 0.85, 0.88],
            "l2": [0.80, 0.83, 0.79, 0.80, 0.81, 0.83]}
    s = summarize_arms(_records(test), ["none", "dropout", "l2"], {"dropout": {"keep_prob": 0.5}})
    assert len(s.test_pairs) == 3 and len(s.gap_vs_none) == 2
    c = s.pair("dropout", "none")
    assert c is not None
    d = np.subtract(test["dropout"], test["none"])
    assert c.result.mean_diff == pytest.approx(d.mean())
    keys = [("dropout", "none"), ("l2", "none"), ("l2", "dropout")]
    p = np.array([scipy.stats.ttest_rel(test[a], test[b]).pvalue for a, b in keys])
    order = np.argsort(p)  # Holm by hand: sorted p times (m - rank), running maximum, capped at 1
    adjusted = np.empty(3)
    adjusted[order] = np.maximum.accumulate(np.minimum(1.0, (3 - np.arange(3)) * p[order]))
    got = {(x.treated, x.control): x.result.p_t_holm for x in s.test_pairs}
    assert [got[k] for k in keys] == pytest.approx(adjusted.tolist())
    mirrored = s.pair("none", "dropout")
    assert mirrored is not None and mirrored.result.mean_diff == pytest.approx(-d.mean())
    assert s.winner == "dropout" and set(s.beaten) == {"none", "l2"} and s.tied == []
    assert "beat every other arm after Holm over 3 comparisons" in headline(s)
    gap = next(g for g in s.gap_vs_none if g.treated == "dropout")
    assert gap.result.mean_diff == pytest.approx(-d.mean())  # gap = 1 - test here


def test_no_clear_winner_is_said_as_such() -> None:
    s = summarize_arms(_records({"none": [0.80, 0.82, 0.79], "l2": [0.81, 0.81, 0.80]}), ["none", "l2"], {})
    assert s.winner == "l2" and s.beaten == [] and s.tied == ["none"]
    assert "no arm clearly won" in headline(s)
