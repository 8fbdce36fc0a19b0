"""A sequential ablation's comparisons: which are decided, after how many seeds, and which seeds to add.

A comparison is one treated keep_prob against keep_prob 1.0 at one
(size, factor levels) cell of the grid, paired by seed as the report pairs
them; its values are the per-seed differences of best validation accuracy
(treated − keep 1.0), in points, in seed order 0, 1, 2, ...

The rule (`sweep ablate --until-decided`): every comparison starts with the
first number of seeds at which its anytime-valid interval can be bounded
(`first_look`), then gets one more seed per round while it is open. It stops
at the first look where `sweep.analysis.confseq.decide` says decided (the
interval excludes 0) or precise (the interval is at most `precision` wide), or
when it has `max_seeds` seeds (capped). Each interval is at level alpha/m,
m = the grid's comparisons (Bonferroni): every confidence sequence holds at
all seed counts at once, so the union bound holds at whatever look each
comparison stops, and all m intervals reported cover together with
probability >= 1 - alpha (the reasoning is in `decide`'s docstring).

The same function replays the rule from the recorded cells for the report, so
the report states exactly what the run did: the first look at which each
comparison stopped, not the latest values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from sweep.analysis.confseq import Decision, decide, t_cs_radius

__all__ = ["ComparisonKey", "Rule", "SequentialComparison", "comparison_keys", "comparison_name",
           "first_look", "replay", "seeds_to_add"]

BASELINE = 1.0
# (size, factor levels, treated keep_prob): one comparison of the grid.
ComparisonKey = tuple[int, tuple[tuple[str, str], ...], float]
# (size, keep_prob, seed, factor levels) -> best validation accuracy (a fraction; NaN: the run failed).
CellValues = Mapping[tuple[int, float, int, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Rule:
    """When a comparison stops: its anytime interval at alpha/m excludes 0, or is at most
    `precision` points wide, or it has `max_seeds` seeds."""

    alpha: float = 0.05
    precision: float | None = None
    max_seeds: int = 20


@dataclass(frozen=True)
class SequentialComparison:
    """One comparison after the rule: seeds taken, its differences (points) and the decision at its stop."""

    key: ComparisonKey
    seeds: int  # seed indices it took (0 .. seeds-1)
    diffs: tuple[float, ...]  # per seed, treated − keep 1.0 in points (NaN: a run of that seed failed)
    decision: Decision  # at the look where it stopped (or the latest, while open)

    @property
    def status(self) -> str:
        return self.decision.status


def comparison_name(key: ComparisonKey) -> str:
    """'size 500, keep 0.5' plus ', normalization=batchnorm' for the varied factors."""
    size, levels, keep = key
    return f"size {size}, keep {keep:g}" + "".join(f", {n}={v}" for n, v in levels)


def comparison_keys(sizes: Sequence[int], level_sets: Sequence[tuple[tuple[str, str], ...]],
                    keep_probs: Sequence[float]) -> list[ComparisonKey]:
    """Every comparison of a grid, in the report's order: size, levels, keep_prob (1.0 is the baseline)."""
    return [(n, lv, k) for n in sizes for lv in level_sets for k in keep_probs if k != BASELINE]


def first_look(alpha_each: float, cap: int = 1000) -> int:
    """The fewest seeds (>= 2) at which the anytime interval at level alpha_each can be bounded.

    Fewer seeds give (-inf, inf) whatever the data: looking earlier cannot decide
    anything, so the first round trains this many at once (3 at 0.05, 4 at 0.05/9).
    """
    n = np.arange(2, cap + 1)
    finite = np.isfinite(t_cs_radius(n, 1.0, alpha_each))
    return int(n[finite.argmax()]) if finite.any() else cap


def paired_diffs(values: CellValues, key: ComparisonKey) -> tuple[float, ...]:
    """Differences in points for seeds 0 .. K, K the last seed with both runs recorded.

    A seed below K missing either run (its run failed, or a report reads only
    finished runs) is NaN: dropped from the interval, still counted as taken.
    """
    size, levels, keep = key
    both = [k for (n, kp, k, lv) in values if n == size and lv == levels and kp == keep
            and (size, BASELINE, k, levels) in values]
    if not both:
        return ()
    out = []
    for k in range(max(both) + 1):
        treated, base = values.get((size, keep, k, levels)), values.get((size, BASELINE, k, levels))
        out.append(math.nan if treated is None or base is None else 100.0 * (treated - base))
    return tuple(out)


def _stop(diffs: Sequence[float], rule: Rule, m: int, name: str) -> tuple[Decision, int]:
    """The decision at the first look that is not open (a look after every seed), else at the
    last look; with the number of seed indices that look used."""
    for n in range(1, len(diffs) + 1):
        last = decide({name: list(diffs[:n])}, rule.alpha, m, rule.precision)[name]
        if last.status != "open":
            return last, n
    last = decide({name: list(diffs)}, rule.alpha, m, rule.precision)[name]
    if len(diffs) < rule.max_seeds:
        return last, len(diffs)
    iv = last.anytime
    reason = (f"anytime {100 * (1 - last.alpha_each):.4g} % interval [{iv.low:+.4g}, {iv.high:+.4g}] "
              f"contains 0 at the cap of {rule.max_seeds} seeds"
              + ("" if rule.precision is None else f" and is {iv.width:.4g} wide > precision {rule.precision:g}"))
    return replace(last, status="capped", reason=reason + (f" ({iv.note})" if iv.note else "")), len(diffs)


def replay(values: CellValues, keys: Sequence[ComparisonKey], rule: Rule) -> dict[ComparisonKey, SequentialComparison]:
    """Every comparison's status under the rule, from the cells recorded so far.

    Args:
        values: (size, keep_prob, seed, levels) -> best val acc of each recorded cell.
        keys: the grid's comparisons (m = len(keys) for Bonferroni).
        rule: alpha, precision (points), max_seeds.
    """
    m = max(1, len(keys))
    out = {}
    for key in keys:
        diffs = paired_diffs(values, key)
        decision, taken = _stop(diffs, rule, m, comparison_name(key))
        out[key] = SequentialComparison(key, taken, diffs[:taken], decision)
    return out


def seeds_to_add(comparison: SequentialComparison, rule: Rule, m: int) -> range:
    """Seed indices the next round trains for an open comparison: up to the first look, then one more."""
    if comparison.status != "open":
        return range(0)
    target = max(comparison.seeds + 1, first_look(rule.alpha / m))
    return range(comparison.seeds, min(target, rule.max_seeds))
