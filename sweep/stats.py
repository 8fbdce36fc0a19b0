"""Confidence intervals, paired tests and the ablation summary (numpy + scipy only).

The ablation re-trains one configuration over keep_prob x training-set size x
seeds. One run is a :class:`Cell`; runs with the same ``(size, seed)`` share
init, batch order and training subset, so they are *paired* across keep_prob.
:func:`summarize` turns a list of cells into an :class:`AblationSummary`:
per-(size, keep_prob) means with 95 % t-intervals (plus a bootstrap check),
paired differences against the baseline keep_prob (t-test, Wilcoxon, effect
sizes, Holm-corrected across the grid) and mean +- CI learning curves.

Conventions:
    * Non-finite values (a diverged run's NaN loss) are dropped, never averaged;
      paired tests drop the whole pair. Every drop is recorded in a ``note``.
    * Undefined quantities (an interval from one value, a test on one pair) are
      NaN with a ``note`` saying why, never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.special
import scipy.stats

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

DEFAULT_METRICS: tuple[str, ...] = ("best_val_acc", "final_train_acc", "gap", "val_loss")
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
        if any(b <= a for a, b in zip(self.epochs, self.epochs[1:])):
            raise ValueError(f"Cell.epochs must be strictly increasing, got {self.epochs}")


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided confidence interval.

    ``low``/``high`` are NaN when no interval exists (n < 2, or no finite values);
    ``note`` then says why (it is "" for an ordinary interval). ``method`` is
    "t" or "bootstrap-BCa".
    """

    mean: float
    low: float
    high: float
    n: int
    sem: float
    confidence: float
    method: str
    note: str = ""

    @property
    def defined(self) -> bool:
        """True when both ends of the interval are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def covers(self, value: float = 0.0) -> bool:
        """True when the interval is defined and low <= value <= high."""
        return self.defined and self.low <= value <= self.high


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of treated vs control (difference = treated - control).

    ``d_z`` = mean diff / sd of diffs (Cohen's d for paired data); ``g_z`` is the
    same times Hedges' exact small-sample factor J(n - 1) (NaN for n < 3).
    ``p_t_holm`` / ``p_wilcoxon_holm`` are NaN from :func:`paired_test` and filled
    in by :func:`summarize` (Holm over the whole grid, per metric).
    """

    n: int
    mean_diff: float
    diff: Interval
    t_stat: float
    p_t: float
    p_wilcoxon: float
    d_z: float
    g_z: float
    note: str = ""
    p_t_holm: float = math.nan
    p_wilcoxon_holm: float = math.nan


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


def _finite(values: Iterable[float] | np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """1-D float array of the finite values and how many non-finite ones were dropped."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {x.shape}")
    keep = np.isfinite(x)
    return x[keep], int(x.size - keep.sum())


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _dropped_note(dropped: int) -> str:
    return f"dropped {dropped} non-finite value(s)" if dropped else ""


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean and t-interval: mean +- t_{(1+c)/2, n-1} * s / sqrt(n).

    Args:
        values: shape (n,); non-finite entries are dropped (and noted).
        confidence: two-sided level in (0, 1).

    Returns:
        An :class:`Interval` (method "t"). n = 1 gives mean = the value and NaN
        ends; n = 0 gives all NaN. Both set ``note``.
    """
    _check_confidence(confidence)
    x, dropped = _finite(values, "values")
    n = int(x.size)
    dropped_note = _dropped_note(dropped)
    if n == 0:
        nan = math.nan
        note = _join("no finite values", dropped_note)
        return Interval(nan, nan, nan, 0, nan, confidence, "t", note)
    mean = float(x.mean())
    if n == 1:
        note = _join("n=1: a single value has no interval", dropped_note)
        return Interval(mean, math.nan, math.nan, 1, math.nan, confidence, "t", note)
    sem = float(x.std(ddof=1) / math.sqrt(n))
    half = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n, sem, confidence, "t", dropped_note)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 9999,
) -> Interval:
    """Bootstrap (BCa) interval of the mean, a distribution-free check on :func:`mean_ci`.

    With few seeds (n ~ 5) the bootstrap interval is known to be too narrow
    (it ignores the t-distribution's extra width), so it is a check, not the
    headline interval.

    Args:
        values: shape (n,); non-finite entries are dropped (and noted).
        rng: the only source of randomness (passed to scipy as ``random_state``).
        confidence: two-sided level in (0, 1).
        n_resamples: bootstrap resamples, >= 1.

    Returns:
        An :class:`Interval` (method "bootstrap-BCa", ``sem`` = bootstrap standard
        error). n < 2 gives NaN ends; identical values give low = high = mean.
    """
    _check_confidence(confidence)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    x, dropped = _finite(values, "values")
    n = int(x.size)
    method = "bootstrap-BCa"
    dropped_note = _dropped_note(dropped)
    if n < 2:
        mean = float(x[0]) if n else math.nan
        note = _join(f"n={n}: no bootstrap interval", dropped_note)
        return Interval(mean, math.nan, math.nan, n, math.nan, confidence, method, note)
    mean = float(x.mean())
    if np.all(x == x[0]):
        # BCa divides by the jackknife spread, which is 0 here: the answer is exact.
        note = _join("all values equal", dropped_note)
        return Interval(mean, mean, mean, n, 0.0, confidence, method, note)
    with warnings.catch_warnings():
        # Tiny samples can make BCa's acceleration degenerate; NaN ends are then reported.
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        res = scipy.stats.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="BCa",
            vectorized=True,
            random_state=rng,
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    note = dropped_note if math.isfinite(low) and math.isfinite(high) else _join(
        "bootstrap interval degenerate", dropped_note
    )
    return Interval(mean, low, high, n, float(res.standard_error), confidence, method, note)


def _hedges_factor(df: int) -> float:
    """Exact small-sample bias factor J(df) = G(df/2) / (sqrt(df/2) G((df-1)/2)); NaN if df < 2."""
    if df < 2:
        return math.nan
    log_j = (
        scipy.special.gammaln(df / 2.0)
        - 0.5 * math.log(df / 2.0)
        - scipy.special.gammaln((df - 1) / 2.0)
    )
    return math.exp(log_j)


def paired_test(
    treated: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
) -> PairedResult:
    """Paired comparison of ``treated`` against ``control`` (element i of each is one pair).

    Tests: paired t-test (``scipy.stats.ttest_rel``) and Wilcoxon signed-rank
    (``scipy.stats.wilcoxon``, default zero_method "wilcox": zero differences
    are dropped; scipy picks the exact null for n <= 50 without ties/zeros, an
    exact permutation test with ties/zeros for n <= 13, the normal approximation
    above). Small n: the smallest attainable two-sided Wilcoxon p is 2 / 2**n
    (0.0625 for 5 pairs), so it cannot reach 0.05 below 6 pairs.

    Edge cases (noted in ``note``, never raised):
        * pairs with a non-finite member are dropped;
        * n < 2: t-interval, both p-values and effect sizes are NaN;
        * all differences exactly 0: p_t = p_wilcoxon = 1 (no evidence of a
          difference; kept at 1 rather than NaN so Holm still counts the test),
          t_stat = d_z = g_z = 0;
        * differences constant but non-zero (sd <= 1e-12 |mean|): d_z = g_z = +-inf,
          p_t from scipy (0 or tiny).

    Args:
        treated: shape (n,).
        control: shape (n,), same order of pairs.
        confidence: level of the interval of the mean difference.

    Returns:
        A :class:`PairedResult` with NaN Holm fields.
    """
    _check_confidence(confidence)
    a = np.asarray(treated, dtype=float)
    b = np.asarray(control, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"treated and control must be 1-D of equal length, got shapes {a.shape} and {b.shape}"
        )
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    dropped = int(ok.size - ok.sum())
    drop_note = f"dropped {dropped} pair(s) with a non-finite value" if dropped else ""
    d = a - b
    n = int(d.size)
    diff = mean_ci(d, confidence)
    nan = math.nan
    if n < 2:
        note = _join(f"n={n}: no paired test", drop_note)
        return PairedResult(n, diff.mean, diff, nan, nan, nan, nan, nan, note)
    if np.all(d == 0.0):
        note = _join("all differences are exactly zero: p set to 1", drop_note)
        return PairedResult(n, 0.0, diff, 0.0, 1.0, 1.0, 0.0, 0.0, note)

    with warnings.catch_warnings():
        # sd = 0 with a non-zero mean: scipy warns, then returns t = +-inf, p = 0 (what we want).
        warnings.simplefilter("ignore", RuntimeWarning)
        t_res = scipy.stats.ttest_rel(a, b)
        w_res = scipy.stats.wilcoxon(d)
    sd = float(d.std(ddof=1))
    # sd at rounding level (identical differences up to float error) counts as 0.
    constant = sd <= 1e-12 * abs(diff.mean)
    d_z = math.copysign(math.inf, diff.mean) if constant else diff.mean / sd
    g_z = d_z * _hedges_factor(n - 1)
    notes = [drop_note]
    if n < 3:
        notes.append("n=2: Hedges correction undefined")
    return PairedResult(
        n=n,
        mean_diff=diff.mean,
        diff=diff,
        t_stat=float(t_res.statistic),
        p_t=float(t_res.pvalue),
        p_wilcoxon=float(w_res.pvalue),
        d_z=float(d_z),
        g_z=float(g_z),
        note=_join(*notes),
    )


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values.

    With the m non-NaN p-values sorted ascending p_(1) <= ... <= p_(m):
    adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). NaNs stay NaN in place and
    do not count towards m. Reject H_i at level a iff adj_i <= a.

    Args:
        pvalues: shape (k,), each in [0, 1] or NaN.

    Returns:
        Adjusted p-values, shape (k,), in the input order.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    real = ~np.isnan(p)
    if np.any((p[real] < 0.0) | (p[real] > 1.0)):
        raise ValueError(f"pvalues must lie in [0, 1] (or be NaN), got {p[real].tolist()}")
    out = p.copy()
    idx = np.flatnonzero(real)
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


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
        for k, pt, pw in zip(keys, adj_t, adj_w):
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

