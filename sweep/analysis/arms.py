"""Statistics of a comparison of regularizers (`sweep compare`): every number is on the TEST split.

Input: one record per (arm, seed k) with ``test_acc``, ``train_acc`` (the same
weights on their own training rows), ``gap`` = train_acc - test_acc, ``seconds``
(training wall time) and ``curve``. Seed k of every arm is one pair (same init,
batch order and rows), so arms are compared by paired differences per seed.

Comparisons (numpy/scipy via sweep.analysis.intervals):
    * test accuracy: EVERY pair of arms (each other arm against none included),
      paired t and Wilcoxon, Holm-adjusted over all of them together;
    * train-test gap: every arm against none, Holm over those.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sweep.analysis.intervals import Interval, PairedResult, holm, mean_ci, paired_test

__all__ = ["ArmComparison", "ArmStats", "CompareSummary", "summarize_arms"]


@dataclass(frozen=True)
class ArmStats:
    """One arm over its seeds: test accuracy, train accuracy, gap and training seconds, each mean with CI."""

    name: str
    strengths: dict[str, Any]
    n: int
    failed: int
    test_acc: Interval
    train_acc: Interval
    gap: Interval
    seconds: Interval


@dataclass(frozen=True)
class ArmComparison:
    """``treated - control`` per seed on `metric` (test_acc or gap), with Holm-adjusted p-values filled in."""

    treated: str
    control: str
    metric: str
    result: PairedResult

    @property
    def significant(self) -> bool:
        """The interval excludes 0 and the paired t-test's Holm-adjusted p <= 0.05 (as `sweep report`'s
        verdict counts a difference; Wilcoxon is reported beside it, it cannot reach 0.05 below 6 seeds)."""
        r = self.result
        return r.diff.defined and not r.diff.covers(0.0) and r.p_t_holm <= 0.05


@dataclass(frozen=True)
class CompareSummary:
    """Every arm's statistics and every comparison; `winner` is the arm of highest mean test accuracy."""

    arms: list[ArmStats]
    test_pairs: list[ArmComparison]  # every pair; Holm over all of them
    gap_vs_none: list[ArmComparison]  # each arm - none; Holm over these
    seeds: int
    winner: str
    beaten: list[str]  # arms the winner beats after Holm
    tied: list[str]  # arms it does not (no difference survives Holm)

    def arm(self, name: str) -> ArmStats:
        return next(a for a in self.arms if a.name == name)

    def pair(self, treated: str, control: str) -> ArmComparison | None:
        """The test-accuracy comparison treated - control (or its mirror, negated)."""
        for c in self.test_pairs:
            if (c.treated, c.control) == (treated, control):
                return c
            if (c.treated, c.control) == (control, treated):
                return _mirror(c)
        return None


def _mirror(c: ArmComparison) -> ArmComparison:
    r = c.result
    d = r.diff
    flipped = replace(d, mean=-d.mean, low=-d.high, high=-d.low)
    return ArmComparison(c.control, c.treated, c.metric, replace(r, mean_diff=-r.mean_diff, diff=flipped,
                                                                 t_stat=-r.t_stat, d_z=-r.d_z, g_z=-r.g_z))


def _by_seed(records: Sequence[Mapping[str, Any]], arm: str, metric: str, seeds: list[int]) -> np.ndarray:
    values = {int(r["seed"]): float(r[metric]) for r in records if r["arm"] == arm}
    return np.array([values.get(k, math.nan) for k in seeds])


def _holm_fill(comparisons: list[ArmComparison]) -> list[ArmComparison]:
    p_t = holm([c.result.p_t for c in comparisons])
    p_w = holm([c.result.p_wilcoxon for c in comparisons])
    return [replace(c, result=replace(c.result, p_t_holm=float(a), p_wilcoxon_holm=float(b)))
            for c, a, b in zip(comparisons, p_t, p_w, strict=True)]


def summarize_arms(records: Sequence[Mapping[str, Any]], arms: Sequence[str],
                   strengths: Mapping[str, Mapping[str, Any]], confidence: float = 0.95) -> CompareSummary:
    """Per-arm intervals and the paired comparisons on the test split (see the module docstring).

    Args:
        records: one per (arm, seed) run, as `sweep.ablation.compare.run_arm_task` returns them.
        arms: the arms in report order; 'none' must be one.
        strengths: each arm's chosen (or fixed) knob values.
    """
    seeds = sorted({int(r["seed"]) for r in records})
    stats = []
    for name in arms:
        test = _by_seed(records, name, "test_acc", seeds)
        stats.append(ArmStats(
            name, dict(strengths.get(name, {})), int(np.isfinite(test).sum()), int((~np.isfinite(test)).sum()),
            mean_ci(test, confidence), mean_ci(_by_seed(records, name, "train_acc", seeds), confidence),
            mean_ci(_by_seed(records, name, "gap", seeds), confidence),
            mean_ci(_by_seed(records, name, "seconds", seeds), confidence)))
    pairs = [ArmComparison(a, b, "test_acc", paired_test(_by_seed(records, a, "test_acc", seeds),
                                                         _by_seed(records, b, "test_acc", seeds), confidence))
             for b, a in itertools.combinations(arms, 2)]  # (later - earlier): 'none' first is the control
    gaps = [ArmComparison(a, "none", "gap", paired_test(_by_seed(records, a, "gap", seeds),
                                                        _by_seed(records, "none", "gap", seeds), confidence))
            for a in arms if a != "none"]
    pairs, gaps = _holm_fill(pairs), _holm_fill(gaps)
    winner = max(stats, key=lambda s: s.test_acc.mean if math.isfinite(s.test_acc.mean) else -math.inf).name
    summary = CompareSummary(stats, pairs, gaps, len(seeds), winner, [], [])
    for other in arms:
        if other == winner:
            continue
        c = summary.pair(winner, other)
        (summary.beaten if c is not None and c.significant and c.result.mean_diff > 0 else summary.tied).append(other)
    return summary
