"""Anytime-valid intervals for seed-paired differences: stop adding seeds when they decide.

A classical t-interval is valid at one sample size fixed in advance; looking at
it after every seed and stopping when it excludes 0 raises the false-decision
rate well above alpha (tests/analysis/test_confseq.py measures it). A *confidence
sequence* (CS) holds at every n at once: P(exists n: mu not in CS_n) <= alpha,
so it stays valid at any data-dependent stopping time.

The boundary used is the scale-invariant t-test martingale with a Gaussian
mixture over the standardized effect (Wang & Ramdas 2024, "Anytime-valid
t-tests and confidence sequences for Gaussian means with unknown variance",
arXiv:2310.03722, Theorem 4.9; the right-Haar construction goes back to Lai
1976, Ann. Statist. 4(2)). For a candidate mean m and y_i = x_i - m,
S_n = sum y_i, V_n = sum y_i**2, c2 = prior precision of theta = mu/sigma:

    G_n(m) = sqrt(c2 / (n + c2)) * ((n + c2) V_n / ((n + c2) V_n - S_n**2)) ** (n/2)

is a test martingale (G_1 = 1) under N(m, sigma^2) for every sigma, in the
filtration of the scale-invariant statistics y_1/|y_1|, ..., y_n/|y_1|.
Ville's inequality gives P(exists n: G_n(mu) >= 1/alpha) <= alpha, and the CS
{m: G_n(m) < 1/alpha} has the closed form of :func:`t_cs_radius`.

Assumptions: paired differences i.i.d. normal with unknown mean and variance
(the assumption of the t-interval the reports print), seeds in the order they
were run. Why not a bounded-data CS (differences of accuracies lie in
[-1, 1]): with a 2-point effect and 20 seeds no level-5 % procedure valid for
every distribution on [-1, 1] can exclude 0 (docs/results.md, "Deciding with
fewer seeds"); bench/confseq_widths.py compares the widths at n = 3..20.

Multiple comparisons: Bonferroni, each comparison's CS at level alpha/m; see
:func:`decide`. The classical t-intervals returned alongside come from
`sweep.analysis.intervals.mean_ci`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sweep.analysis.intervals import Interval, mean_ci

__all__ = [
    "DEFAULT_PRIOR_PRECISION",
    "STATUSES",
    "AnytimeInterval",
    "Decision",
    "decide",
    "log_e_value",
    "t_confidence_sequence",
    "t_cs_radius",
    "t_cs_sequences",
]

# Prior N(0, 1/c2) on the standardized effect theta = mu/sigma, i.e. prior SD
# sqrt(10) = 3.2. Chosen before any data from the project's own effect sizes:
# best-val-acc d_z of 1.4-4.1 in docs/results.md. Of c2 in {0.01, 0.03, 0.1,
# 0.3, 1, 3} its CS is within 12 % of the narrowest at every n = 5..20, at
# alpha 0.05 and 0.05/9 (bench/confseq_widths.py).
DEFAULT_PRIOR_PRECISION = 0.1

STATUSES = ("decided", "precise", "capped", "open")


@dataclass(frozen=True)
class AnytimeInterval:
    """Mean of n paired differences with its anytime-valid interval (running intersection).

    ``low``/``high`` are +-inf while the CS is still the whole line (n < 2, or
    too few seeds for the level), NaN when there are no finite values.
    ``alpha`` is the level of this one comparison (alpha/m after Bonferroni).
    """

    mean: float
    low: float
    high: float
    n: int
    alpha: float
    method: str = "t-CS (Wang & Ramdas 2024, Thm 4.9)"
    note: str = ""

    @property
    def width(self) -> float:
        """high - low (inf while unbounded, NaN without values)."""
        return self.high - self.low

    def excludes(self, value: float = 0.0) -> bool:
        """True when the interval lies strictly on one side of ``value``."""
        return self.low > value or self.high < value


@dataclass(frozen=True)
class Decision:
    """What the sequential ablation loop should do with one comparison.

    ``status``: 'decided' (the anytime interval excludes 0), 'precise' (its
    width <= precision), 'capped' (n >= max_seeds, neither), 'open' (add seeds).
    ``t_interval`` is the classical t-interval at 1 - alpha (unadjusted, as the
    reports print it): not valid under peeking, shown for comparison only.
    ``p_anytime`` = min(1, 1 / max_k G_k(0)) is an anytime-valid p-value of "no
    effect": P(it ever falls to p) <= p. It is <= ``alpha_each`` exactly when
    the anytime interval excludes 0 (to rounding), so compare it with
    ``alpha_each``, not with alpha.
    """

    name: str
    n: int
    status: str
    reason: str
    anytime: AnytimeInterval
    t_interval: Interval
    p_anytime: float
    alpha_each: float
    n_comparisons: int


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_prior(prior_precision: float) -> None:
    if not (prior_precision > 0.0 and math.isfinite(prior_precision)):
        raise ValueError(f"prior_precision must be a positive number, got {prior_precision}")


def log_e_value(values: Sequence[float] | np.ndarray, null_mean: float = 0.0,
                prior_precision: float = DEFAULT_PRIOR_PRECISION) -> np.ndarray:
    """log G_n(null_mean) of the Theorem 4.9 martingale after each of the n values.

    Args:
        values: shape (N,), finite.
        null_mean: the mean m tested.
        prior_precision: c2 > 0.

    Returns:
        Shape (N,): log G_1 = 0, then log G_n. Equal non-zero y_i give the largest
        value, ((n + c2)/c2)^((n-1)/2); all y_i = 0 give 0 (no evidence).
    """
    _check_prior(prior_precision)
    y = np.asarray(values, dtype=float) - null_mean
    if y.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {y.shape}")
    n = np.arange(1, y.size + 1, dtype=float)
    s = np.cumsum(y)
    v = np.cumsum(y * y)
    a = (n + prior_precision) * v
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / (a - s * s)  # >= 1 by Cauchy-Schwarz: S^2 <= n V < (n + c2) V
        out = 0.5 * np.log(prior_precision / (n + prior_precision)) + 0.5 * n * np.log(ratio)
    out[v == 0.0] = 0.0  # no information yet: y = 0 so far
    return out


def t_cs_radius(n: np.ndarray | int, sd: np.ndarray | float, alpha: float,
                prior_precision: float = DEFAULT_PRIOR_PRECISION) -> np.ndarray:
    """Half-width of the t-CS at n values with sample SD ``sd`` (ddof=1).

    {m: G_n(m) < 1/alpha}, with D = mean - m and (n - 1) sd^2 = sum (x - mean)^2,
    solves to D^2 < K_n sd^2 with R = (alpha^2 c2 / (n + c2))^(1/n):

        K_n = (n + c2)(1 - R)(n - 1) / (n ((n + c2) R - c2))   if (n + c2) R > c2, else inf.

    Args:
        n: sample sizes, any shape broadcastable with ``sd``; n < 2 gives inf.
        sd: sample SDs (>= 0).
        alpha: level of this CS.
        prior_precision: c2 > 0.

    Returns:
        Radius, broadcast shape; inf while the CS is the whole line, 0 when sd = 0
        and K_n is finite (all values equal: the CS is that value).
    """
    _check_alpha(alpha)
    _check_prior(prior_precision)
    n = np.asarray(n, dtype=float)
    sd = np.asarray(sd, dtype=float)
    c2 = prior_precision
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.exp((2.0 * math.log(alpha) + np.log(c2 / (n + c2))) / n)
        den = n * ((n + c2) * r - c2)
        k = (n + c2) * (1.0 - r) * (n - 1.0) / den
    finite = (den > 0.0) & (n >= 2.0)
    radius = np.where(finite, np.sqrt(np.where(finite, k, 0.0)) * sd, np.inf)
    return np.broadcast_to(radius, np.broadcast_shapes(n.shape, sd.shape)).copy()


def t_cs_sequences(x: np.ndarray, alpha: float,
                   prior_precision: float = DEFAULT_PRIOR_PRECISION,
                   running: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The t-CS after every prefix of many sequences at once (vectorised for simulation).

    Args:
        x: shape (..., N), finite; the last axis is the order the values came in.
        alpha: level of each CS.
        prior_precision: c2 > 0.
        running: intersect each interval with all earlier ones (still valid:
            the CS holds at all n at once), so intervals never widen.

    Returns:
        ``(mean, low, high)``, each of shape (..., N): entry n-1 is after n values.
        With ``running`` an empty intersection (possible only when the CS has
        missed, chance <= alpha) shows as low > high.
    """
    x = np.asarray(x, dtype=float)
    n = np.arange(1, x.shape[-1] + 1, dtype=float)
    mean = np.cumsum(x, axis=-1) / n
    # Sum of squares around the running mean, from centred data for accuracy.
    centred = x - x[..., :1]
    ss = np.cumsum(centred * centred, axis=-1) - n * (mean - x[..., :1]) ** 2
    sd = np.sqrt(np.maximum(ss, 0.0) / np.maximum(n - 1.0, 1.0))  # equal values: exactly 0
    radius = t_cs_radius(n, sd, alpha, prior_precision)
    with np.errstate(invalid="ignore"):
        low, high = mean - radius, mean + radius
    if running:
        low = np.maximum.accumulate(low, axis=-1)
        high = np.minimum.accumulate(high, axis=-1)
    return mean, low, high


def t_confidence_sequence(values: Sequence[float] | np.ndarray, alpha: float = 0.05,
                          prior_precision: float = DEFAULT_PRIOR_PRECISION) -> AnytimeInterval:
    """The anytime-valid interval after all of ``values`` (running intersection over n).

    Args:
        values: shape (N,), in the order the seeds were run; non-finite ones are
            dropped and noted (valid if a run's divergence does not depend on
            how its difference would have come out).
        alpha: level of this one comparison.
        prior_precision: c2 > 0.

    Returns:
        An :class:`AnytimeInterval`; n < 2 gives (-inf, inf) with a note.
    """
    _check_alpha(alpha)
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be a 1-D sequence of numbers, got shape {x.shape}")
    keep = np.isfinite(x)
    dropped = int(x.size - keep.sum())
    x = x[keep]
    notes = [f"dropped {dropped} non-finite value(s)"] if dropped else []
    n = int(x.size)
    if n == 0:
        return AnytimeInterval(math.nan, math.nan, math.nan, 0, alpha,
                               note="; ".join(["no finite values", *notes]))
    mean, low, high = t_cs_sequences(x, alpha, prior_precision)
    lo, hi = float(low[-1]), float(high[-1])
    if n < 2:
        notes.insert(0, "n=1: one value has no interval")
    elif hi == lo:
        notes.insert(0, "all differences are equal: under the normal model the interval "
                        "is that value (check that the runs really differ)")
    elif math.isinf(hi - lo):
        notes.insert(0, f"n={n}: too few values for an interval at level {1 - alpha:.4g}")
    if lo > hi:
        # Only when the CS has missed at some n (chance <= alpha): show the latest alone.
        _, lo_now, hi_now = t_cs_sequences(x, alpha, prior_precision, running=False)
        lo, hi = float(lo_now[-1]), float(hi_now[-1])
        notes.append("earlier intervals do not overlap this one (a miss, chance <= alpha "
                     "under the assumptions): the latest interval alone is shown")
    return AnytimeInterval(float(mean[-1]), lo, hi, n, alpha, note="; ".join(notes))


def _fmt(x: float) -> str:
    return f"{x:+.4g}" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


def decide(diffs: Mapping[str, Sequence[float] | np.ndarray], alpha: float = 0.05,
           n_comparisons: int | None = None, precision: float | None = None,
           max_seeds: int | None = None,
           prior_precision: float = DEFAULT_PRIOR_PRECISION) -> dict[str, Decision]:
    """Status of every comparison of a sequential ablation after the seeds run so far.

    A comparison is 'decided' when its anytime interval excludes 0, 'precise'
    when the interval is at most ``precision`` wide, 'capped' when it has
    ``max_seeds`` seeds without either, else 'open' (give it more seeds).

    Multiple comparisons: Bonferroni, each CS at level alpha/m with m =
    ``n_comparisons``. Each CS holds at every n at once, so the union bound
    P(some CS misses at some n) <= m * alpha/m = alpha holds whatever seeds
    the loop adds to which comparison and whenever it stops each one: every
    interval reported at stopping (decided, precise or capped) covers its
    true mean simultaneously with probability >= 1 - alpha. Holm on anytime
    p-values would also control the family-wise error of the *decisions*
    but gives no simultaneous intervals, and the precision rule needs them.

    Args:
        diffs: name -> paired differences (treated - keep 1.0), shape (n,), in
            seed order; fractions or points (``precision`` in the same unit).
        alpha: family-wise error over the grid, in (0, 1).
        n_comparisons: m for Bonferroni; default len(diffs). Pass the size of
            the whole grid when deciding on part of it.
        precision: stop when high - low <= precision (None: never).
        max_seeds: cap on n (None: no cap).
        prior_precision: c2 of the mixture (see :data:`DEFAULT_PRIOR_PRECISION`).

    Returns:
        name -> :class:`Decision`, in the order of ``diffs``.
    """
    _check_alpha(alpha)
    m = max(1, len(diffs)) if n_comparisons is None else n_comparisons
    if isinstance(m, bool) or not isinstance(m, int) or m < max(1, len(diffs)):
        raise ValueError(f"n_comparisons must be an integer >= the number of comparisons "
                         f"({len(diffs)}) and >= 1, got {n_comparisons!r}")
    if precision is not None and not (precision > 0.0 and math.isfinite(precision)):
        raise ValueError(f"precision must be a positive number, got {precision}")
    if max_seeds is not None and (isinstance(max_seeds, bool) or not isinstance(max_seeds, int)
                                  or max_seeds < 2):
        raise ValueError(f"max_seeds must be an integer >= 2, got {max_seeds!r}")
    alpha_each = alpha / m
    out: dict[str, Decision] = {}
    for name, values in diffs.items():
        if np.ndim(values) != 1:
            raise ValueError(f"diffs[{name!r}] must be a 1-D sequence of paired differences, "
                             f"got shape {np.shape(values)}")
        cs = t_confidence_sequence(values, alpha_each, prior_precision)
        t_int = mean_ci(values, 1.0 - alpha)
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        log_e = float(np.max(log_e_value(finite, 0.0, prior_precision))) if finite.size else 0.0
        p_anytime = min(1.0, math.exp(-log_e))
        level = f"anytime {100 * (1 - alpha_each):.4g} % interval [{_fmt(cs.low)}, {_fmt(cs.high)}]"
        if cs.n >= 1 and cs.excludes(0.0):
            side = "above" if cs.low > 0 else "below"
            status, reason = "decided", f"{level} lies {side} 0 after {cs.n} seeds"
        elif precision is not None and cs.width <= precision:
            status, reason = "precise", (f"{level} is {cs.width:.4g} wide <= precision "
                                         f"{precision:g} after {cs.n} seeds; it contains 0")
        elif max_seeds is not None and cs.n >= max_seeds:
            status, reason = "capped", (f"{level} contains 0 at the cap of {max_seeds} seeds"
                                        + ("" if precision is None else
                                           f" and is {cs.width:.4g} wide > precision {precision:g}"))
        else:
            need = "exclude 0" if precision is None else f"exclude 0 or be <= {precision:g} wide"
            status, reason = "open", f"{level} after {cs.n} seeds does not yet {need}"
        if cs.note:
            reason = f"{reason} ({cs.note})"
        out[name] = Decision(name, cs.n, status, reason, cs, t_int, p_anytime, alpha_each, m)
    return out
