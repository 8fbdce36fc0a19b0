"""An ablation over more factors than size: dropout's effect at every level, and how it changes between levels.

Cells carry their factor levels (``Cell.levels``, e.g. ``(("normalization",
"batchnorm"),)``). :func:`summarize_factorial` gives

* per level (one combination of the varied factors) the usual
  :class:`~sweep.analysis.stats.AblationSummary`: every keep_prob against keep 1.0 at
  every size, paired by seed, with Holm now over the comparisons of the WHOLE
  grid (all levels), per metric;
* per factor the **interaction**: for levels A and B of the factor, the other
  factors (and the size) held at one combination, and one keep_prob, the
  per-seed difference of paired effects
  ``(treated - baseline at A) - (treated - baseline at B)``, with its t-interval,
  a paired t and a Wilcoxon test (:func:`sweep.analysis.intervals.paired_test` on the two
  effect vectors), Holm-adjusted over all interaction comparisons, per metric.
  Seed k is paired across levels as across keep_probs: the same init seed,
  batch order and training subset.

The training-set size is one more factor here (level text = the size), when
there are two sizes or more. Levels of a factor are compared in the order they
were given: B is the earlier level (the reference), A the later one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sweep.analysis.intervals import PairedResult, holm, paired_test
from sweep.analysis.stats import DEFAULT_METRICS, AblationSummary, Cell, summarize

__all__ = ["INTERACTION_METRICS", "FactorialSummary", "Interaction", "interactions", "summarize_factorial"]

Levels = tuple[tuple[str, str], ...]
#: Metrics whose interaction is tested (the verdict speaks of validation accuracy and the gap).
INTERACTION_METRICS: tuple[str, ...] = ("best_val_acc", "gap")
SIZE = "size"


@dataclass(frozen=True)
class Interaction:
    """How dropout's paired effect (keep_prob vs baseline) changes from level `reference` to `level` of `factor`.

    ``context`` holds the other factors' levels (with ``("size", "500")`` unless
    the factor is the size itself). ``results[metric].diff`` is the interval of
    effect(level) - effect(reference) over ``seeds``; Holm fields are over every
    interaction of the grid.
    """

    factor: str
    level: str
    reference: str
    context: Levels
    keep_prob: float
    baseline_keep: float
    seeds: tuple[int, ...]
    results: dict[str, PairedResult]


@dataclass(frozen=True)
class FactorialSummary:
    """Per-level summaries (Holm over the grid) and the interactions.

    ``factors``: varied factors with their level texts in the given order
    (size last when it has two levels or more); ``per_level`` is keyed by the
    cells' ``levels`` in the order of ``levels``.
    """

    factors: tuple[tuple[str, tuple[str, ...]], ...]
    levels: tuple[Levels, ...]
    per_level: dict[Levels, AblationSummary]
    interactions: tuple[Interaction, ...]
    n_comparisons: int
    n_interactions: int
    confidence: float
    baseline_keep: float


def _factor_order(cells: Sequence[Cell], given: Sequence[tuple[str, Sequence[str]]] | None) -> list[tuple[str, tuple[str, ...]]]:
    """Factors and their level order: as given (the parent run's ``vary``), else sorted; unseen levels dropped."""
    seen: dict[str, set[str]] = {}
    for c in cells:
        for name, text in c.levels:
            seen.setdefault(name, set()).add(text)
    order = {name: tuple(levels) for name, levels in (given or ())}
    out = []
    for name in [n for n in order if n in seen] + sorted(n for n in seen if n not in order):
        known = [lv for lv in order.get(name, ()) if lv in seen[name]]
        out.append((name, tuple(known + sorted(seen[name] - set(known)))))
    return out


def interactions(  # noqa: C901 - factor x level pair x context x keep_prob: the nesting is the design being tested
    cells: Sequence[Cell],
    factors: Sequence[tuple[str, Sequence[str]]] | None = None,
    metrics: Sequence[str] = INTERACTION_METRICS,
    baseline_keep: float = 1.0,
    confidence: float = 0.95,
) -> list[Interaction]:
    """Every interaction comparison of the grid, Holm-adjusted per metric over all of them.

    Args:
        cells: every run; (levels, size, keep_prob, seed) unique.
        factors: level order per factor (``(name, (text, ...))``); None: sorted.
        metrics: scalar Cell fields to test.
        baseline_keep: the keep_prob every effect is taken against (matched within 1e-9).
        confidence: level of the intervals.

    Returns:
        Interactions ordered by factor, level pair, context, keep_prob (descending).
    """
    runs: dict[tuple[Levels, float], dict[int, Cell]] = {}
    for c in cells:
        full = tuple(sorted((*c.levels, (SIZE, str(c.size)))))
        by_seed = runs.setdefault((full, float(c.keep_prob)), {})
        if c.seed in by_seed:
            raise ValueError(f"cells: duplicate run for {dict(full)}, keep_prob={c.keep_prob}, seed={c.seed}")
        by_seed[c.seed] = c
    keeps = sorted({k for _, k in runs}, reverse=True)
    base = next((k for k in keeps if abs(k - baseline_keep) <= 1e-9), None)
    if base is None:
        return []
    order = _factor_order(cells, factors)
    sizes = tuple(str(s) for s in sorted({int(c.size) for c in cells}))
    order.append((SIZE, sizes))
    contexts_of = {full for full, _ in runs}

    found: list[Interaction] = []
    for name, levels in order:
        if len(levels) < 2:
            continue
        contexts = sorted({tuple(p for p in full if p[0] != name) for full in contexts_of})
        for ref, lev in itertools.combinations(levels, 2):  # ref is the earlier level
            for ctx in contexts:
                side = {lv: tuple(sorted((*ctx, (name, lv)))) for lv in (ref, lev)}
                for keep in (k for k in keeps if k != base):
                    wanted = [runs.get((side[lv], k)) for lv in (lev, ref) for k in (keep, base)]
                    parts = [p for p in wanted if p is not None]
                    if len(parts) < len(wanted):  # a cell of the 2x2 was not run
                        continue
                    seeds = tuple(sorted(set.intersection(*(set(p) for p in parts))))
                    t_a, b_a, t_b, b_b = parts
                    results = {}
                    for m in metrics:
                        eff_a = [getattr(t_a[s], m) - getattr(b_a[s], m) for s in seeds]
                        eff_b = [getattr(t_b[s], m) - getattr(b_b[s], m) for s in seeds]
                        results[m] = paired_test(eff_a, eff_b, confidence)
                    found.append(Interaction(name, lev, ref, ctx, keep, base, seeds, results))
    for m in metrics:
        adj_t = holm([i.results[m].p_t for i in found])
        adj_w = holm([i.results[m].p_wilcoxon for i in found])
        for i, pt, pw in zip(found, adj_t, adj_w, strict=True):
            i.results[m] = replace(i.results[m], p_t_holm=float(pt), p_wilcoxon_holm=float(pw))
    return found


def _holm_over_grid(per_level: dict[Levels, AblationSummary]) -> tuple[dict[Levels, AblationSummary], int]:
    """Re-do each summary's Holm adjustment over the comparisons of all levels together."""
    keys = [(lv, k) for lv, s in per_level.items() for k in sorted(s.comparisons)]
    if not keys:
        return per_level, 0
    out = dict(per_level)
    metrics = next(iter(per_level.values())).metrics
    new = {lv: {k: dict(c.results) for k, c in s.comparisons.items()} for lv, s in per_level.items()}
    for m in metrics:
        adj_t = holm([per_level[lv].comparisons[k].results[m].p_t for lv, k in keys])
        adj_w = holm([per_level[lv].comparisons[k].results[m].p_wilcoxon for lv, k in keys])
        for (lv, k), pt, pw in zip(keys, adj_t, adj_w, strict=True):
            new[lv][k][m] = replace(new[lv][k][m], p_t_holm=float(pt), p_wilcoxon_holm=float(pw))
    for lv, s in per_level.items():
        comps = {k: replace(c, results=new[lv][k]) for k, c in s.comparisons.items()}
        out[lv] = replace(s, comparisons=comps, n_comparisons=len(keys))
    return out, len(keys)


def summarize_factorial(
    cells: Sequence[Cell],
    factors: Sequence[tuple[str, Sequence[str]]] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    baseline_keep: float = 1.0,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 9999,
) -> FactorialSummary:
    """Summaries per level and interactions per factor (see the module docstring).

    Args:
        cells: every run of the grid.
        factors: level order per factor, e.g. the parent run's ``vary``; None: sorted.
        metrics: as :func:`sweep.analysis.stats.summarize`.
        baseline_keep: the "no dropout" keep_prob.
        rng: randomness for the bootstrap checks (levels in order, then as summarize).
        confidence: level of every interval.
        n_resamples: bootstrap resamples per cell.
    """
    if len(cells) == 0:
        raise ValueError("cells must contain at least one Cell, got none")
    order = _factor_order(cells, factors)
    by_level: dict[Levels, list[Cell]] = {}
    for c in cells:
        by_level.setdefault(tuple(sorted(c.levels)), []).append(c)
    rank = {name: {lv: i for i, lv in enumerate(levels)} for name, levels in order}
    names = [n for n, _ in order]
    levels = tuple(sorted(by_level, key=lambda lv: [rank[n][dict(lv)[n]] for n in names if n in dict(lv)]))
    per_level = {lv: summarize(by_level[lv], metrics, baseline_keep, rng=rng, confidence=confidence,
                               n_resamples=n_resamples) for lv in levels}
    per_level, n_comp = _holm_over_grid(per_level)
    inter = interactions(cells, order, [m for m in INTERACTION_METRICS if m in metrics], baseline_keep, confidence)
    sizes = tuple(str(s) for s in sorted({int(c.size) for c in cells}))
    shown = tuple((n, lv) for n, lv in order) + (((SIZE, sizes),) if len(sizes) > 1 else ())
    return FactorialSummary(shown, levels, per_level, tuple(inter), n_comp, len(inter), confidence, baseline_keep)
