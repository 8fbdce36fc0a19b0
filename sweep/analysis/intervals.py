"""Confidence intervals and paired tests (numpy + scipy only): the statistics under every report number.

:func:`mean_ci` (t-interval), :func:`bootstrap_ci` (BCa check), :func:`paired_test`
(paired t and Wilcoxon with effect sizes) and :func:`holm` (step-down adjustment).
The ablation summary built from them is `sweep.analysis.stats`; interactions between
factors are `sweep.analysis.factorial`.

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
from dataclasses import dataclass

import numpy as np
import scipy.special
import scipy.stats

__all__ = ["Interval", "PairedResult", "bootstrap_ci", "holm", "mean_ci", "paired_test"]


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
