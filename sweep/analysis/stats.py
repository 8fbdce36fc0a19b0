"""The ablation summary: per-cell intervals, paired differences against no dropout, curves.

The ablation re-trains one configuration over keep_prob x training-set size x
seeds. One run is a :class:`Cell`; runs with the same ``(size, seed)`` share
init, batch order and training subset, so they are *paired* across keep_prob.
:func:`summarize` turns a list of cells into an :class:`AblationSummary`:
per-(size, keep_prob) means with 95 % t-intervals (plus a bootstrap check),
paired differences against the baseline keep_prob (t-test, Wilcoxon, effect
sizes, Holm-corrected across the grid) and mean +- CI learning curves.

The intervals and tests themselves are `sweep.analysis.intervals` (re-exported here);
an ablation over more factors than size is `sweep.analysis.factorial`. Non-finite values
are dropped and noted, undefined quantities are NaN with a note (see
`sweep.analysis.intervals`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.stats

from sweep.analysis.intervals import Interval, PairedResult, _check_confidence, bootstrap_ci, holm, mean_ci, paired_test

__all__ = [
    "DEFAULT_METRICS",
    "AblationSummary",
    "Cell",
    "CellSummary",
    "Comparison",
    "CurveBand",
    "Interval",
    "PairedResult",
    "bootstrap_ci",
    "holm",
    "mean_ci",
    "paired_test",
    "summarize",
]

# final_val_acc next to final_train_acc so a reader can recompute the gap (final train − final val).
DEFAULT_METRICS: tuple[str, ...] = ("best_val_acc", "final_train_acc", "final_val_acc", "gap", "val_loss")
_SCALAR_FIELDS = ("best_val_acc", "final_train_acc", "final_val_acc", "gap", "val_loss")
_BOOTSTRAP_METRICS = ("best_val_acc",)


@dataclass(frozen=True)
class Cell:
    """One ablation run: a configuration trained at one (size, keep_prob, seed).

    Accuracies are fractions in [0, 1]; ``gap`` = final train acc - final val acc.
    ``epochs``, ``train_acc`` and ``val_acc`` are per-epoch curves of equal length E,
    epochs strictly increasing (a pruned or diverged run simply has fewer).
    """

    size: int
    keep_prob: float
    seed: int
    best_val_acc: float
    final_train_acc: float
    final_val_acc: float
    gap: float
    val_loss: float
    epochs: list[int] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    levels: tuple[tuple[str, str], ...] = ()  # varied factors: ((name, level text), ...); see sweep.analysis.factorial

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"Cell.size must be a positive number of examples, got {self.size}")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ValueError(f"Cell.keep_prob must be in (0, 1], got {self.keep_prob}")
        lengths = {len(self.epochs), len(self.train_acc), len(self.val_acc)}
        if len(lengths) != 1:
            raise ValueError(
                "Cell.epochs, Cell.train_acc and Cell.val_acc must have equal lengths, got "
                f"{len(self.epochs)}, {len(self.train_acc)}, {len(self.val_acc)} "
                f"(size={self.size}, keep_prob={self.keep_prob}, seed={self.seed})"
            )
        if any(b <= a for a, b in itertools.pairwise(self.epochs)):
            raise ValueError(f"Cell.epochs must be strictly increasing, got {self.epochs}")


@dataclass(frozen=True)
class CurveBand:
    """Mean and pointwise t-interval of a per-epoch curve over n runs.

    ``epochs``, ``mean``, ``low``, ``high`` have shape (E,); E = 0 when the runs
    share no epoch. ``low``/``high`` are NaN when n < 2.
    """

    epochs: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


@dataclass(frozen=True)
class CellSummary:
    """All runs of one (size, keep_prob): t-interval per metric, bootstrap check, curves."""

    size: int
    keep_prob: float
    seeds: tuple[int, ...]
    intervals: dict[str, Interval]
    bootstrap: dict[str, Interval]
    train_curve: CurveBand
    val_curve: CurveBand


@dataclass(frozen=True)
class Comparison:
    """Paired results of (size, keep_prob) against (size, baseline_keep) on shared seeds."""

    size: int
    keep_prob: float
    baseline_keep: float
    seeds: tuple[int, ...]
    results: dict[str, PairedResult]


@dataclass(frozen=True)
class AblationSummary:
    """Everything the report needs, keyed by (size, keep_prob).

    ``sizes`` ascending; ``keep_probs`` descending (baseline usually first).
    ``comparisons`` has a key for every non-baseline cell whose size has a
    baseline cell. ``n_comparisons`` is the Holm family size per metric.
    """

    metrics: tuple[str, ...]
    baseline_keep: float
    confidence: float
    sizes: tuple[int, ...]
    keep_probs: tuple[float, ...]
    cells: dict[tuple[int, float], CellSummary]
    comparisons: dict[tuple[int, float], Comparison]
    n_comparisons: int
    notes: tuple[str, ...] = ()


def _curve_band(cells: Sequence[Cell], which: str, confidence: float) -> CurveBand:
    """Mean +- t-interval per epoch over epochs present in *every* run of ``cells``.

    Averaging only over shared epochs keeps n constant along the curve: a
    pointwise mean over "runs still alive" would silently drop the short
    (pruned/diverged, usually worse) runs late in training.
    """
    shared = set(cells[0].epochs)
    for c in cells[1:]:
        shared &= set(c.epochs)
    epochs = np.array(sorted(shared), dtype=int)
    n = len(cells)
    if epochs.size == 0:
        empty = np.empty(0)
        return CurveBand(epochs, empty, empty, empty, n)
    rows = []
    for c in cells:
        pos = {e: i for i, e in enumerate(c.epochs)}
        values = getattr(c, which)
        rows.append([values[pos[int(e)]] for e in epochs])
    y = np.asarray(rows, dtype=float)  # (n, E)
    mean = y.mean(axis=0)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return CurveBand(epochs, mean, nan, nan.copy(), n)
    t_crit = scipy.stats.t.ppf((1.0 + confidence) / 2.0, n - 1)
    half = t_crit * y.std(axis=0, ddof=1) / math.sqrt(n)
    return CurveBand(epochs, mean, mean - half, mean + half, n)


def _group(cells: Sequence[Cell]) -> dict[tuple[int, float], dict[int, Cell]]:
    groups: dict[tuple[int, float], dict[int, Cell]] = {}
    for c in cells:
        by_seed = groups.setdefault((int(c.size), float(c.keep_prob)), {})
        if c.seed in by_seed:
            raise ValueError(
                f"cells: duplicate run for size={c.size}, keep_prob={c.keep_prob}, seed={c.seed}"
            )
        by_seed[c.seed] = c
    return groups


def summarize(
    cells: Sequence[Cell],
    metrics: Sequence[str] = DEFAULT_METRICS,
    baseline_keep: float = 1.0,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 9999,
) -> AblationSummary:
    """Summarize an ablation grid.

    Per (size, keep_prob): t-interval per metric, bootstrap interval of
    best_val_acc, mean +- CI train/val curves (over epochs shared by all of the
    cell's runs). Per (size, keep_prob != baseline): paired tests of every
    metric against the baseline keep_prob on the seeds both cells have; Holm
    adjusts each metric's p-values (t and Wilcoxon separately) over the grid.
    keep_prob values are grouped by exact float value (1.0 and 1.0 from
    MLflow's "1.0" are equal); the baseline is matched within 1e-9.

    Args:
        cells: every run, any order; (size, keep_prob, seed) must be unique.
        metrics: scalar :class:`Cell` fields to summarize.
        baseline_keep: the "no dropout" keep_prob compared against.
        rng: randomness for the bootstrap (consumed in sorted cell order).
        confidence: level of every interval.
        n_resamples: bootstrap resamples per cell.

    Returns:
        An :class:`AblationSummary`.
    """
    if len(cells) == 0:
        raise ValueError("cells must contain at least one Cell, got none")
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in _SCALAR_FIELDS]
    if unknown or not metrics:
        raise ValueError(f"metrics {unknown or '()'} not allowed; choose from {_SCALAR_FIELDS}")
    if not 0.0 < baseline_keep <= 1.0:
        raise ValueError(f"baseline_keep must be in (0, 1], got {baseline_keep}")
    _check_confidence(confidence)

    groups = _group(cells)
    sizes = tuple(sorted({s for s, _ in groups}))
    keeps = tuple(sorted({k for _, k in groups}, reverse=True))
    notes: list[str] = []

    cell_summaries: dict[tuple[int, float], CellSummary] = {}
    for key in sorted(groups):
        runs = [groups[key][s] for s in sorted(groups[key])]
        intervals = {m: mean_ci([getattr(c, m) for c in runs], confidence) for m in metrics}
        boot = {
            m: bootstrap_ci([getattr(c, m) for c in runs], rng, confidence, n_resamples)
            for m in metrics
            if m in _BOOTSTRAP_METRICS
        }
        cell_summaries[key] = CellSummary(
            size=key[0],
            keep_prob=key[1],
            seeds=tuple(sorted(groups[key])),
            intervals=intervals,
            bootstrap=boot,
            train_curve=_curve_band(runs, "train_acc", confidence),
            val_curve=_curve_band(runs, "val_acc", confidence),
        )

    raw: dict[tuple[int, float], tuple[tuple[int, ...], dict[str, PairedResult]]] = {}
    for size in sizes:
        base_key = next(
            (k for k in groups if k[0] == size and abs(k[1] - baseline_keep) <= 1e-9), None
        )
        if base_key is None:
            notes.append(f"size {size}: no keep_prob={baseline_keep} runs, no paired comparisons")
            continue
        base = groups[base_key]
        for key in sorted(k for k in groups if k[0] == size and k != base_key):
            treated = groups[key]
            seeds = tuple(sorted(set(treated) & set(base)))
            unpaired = sorted(set(treated) ^ set(base))
            if unpaired:
                notes.append(
                    f"size {size}, keep {key[1]:g}: seeds {unpaired} lack a partner; left out"
                )
            results = {
                m: paired_test(
                    [getattr(treated[s], m) for s in seeds],
                    [getattr(base[s], m) for s in seeds],
                    confidence,
                )
                for m in metrics
            }
            raw[key] = (seeds, results)

    # Holm per metric over the whole grid; t and Wilcoxon are separate families.
    keys = sorted(raw)
    for m in metrics:
        adj_t = holm([raw[k][1][m].p_t for k in keys])
        adj_w = holm([raw[k][1][m].p_wilcoxon for k in keys])
        for k, pt, pw in zip(keys, adj_t, adj_w, strict=True):
            raw[k][1][m] = replace(raw[k][1][m], p_t_holm=float(pt), p_wilcoxon_holm=float(pw))
    comparisons = {
        k: Comparison(k[0], k[1], baseline_keep, seeds=raw[k][0], results=raw[k][1])
        for k in keys
    }
    return AblationSummary(
        metrics=metrics,
        baseline_keep=baseline_keep,
        confidence=confidence,
        sizes=sizes,
        keep_probs=keeps,
        cells=cell_summaries,
        comparisons=comparisons,
        n_comparisons=len(keys),
        notes=tuple(notes),
    )

