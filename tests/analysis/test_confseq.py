"""sweep.confseq: validity under peeking (A/A simulation), power, coverage and edge cases.

The simulations use the spread measured in docs/results.md: the per-seed SD of
paired differences of best validation accuracy, median 0.92 points (range
0.64-1.49). The t-CS is scale-invariant, so the SD only sets the unit; the
power check is where it matters. ``python tests/analysis/test_confseq.py`` prints the
figures quoted in docs/results.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from sweep.analysis.confseq import (
    DEFAULT_PRIOR_PRECISION,
    decide,
    log_e_value,
    t_confidence_sequence,
    t_cs_radius,
    t_cs_sequences,
)
from sweep.analysis.intervals import mean_ci

SD_POINTS = 0.92  # median per-seed SD of a paired best-val-acc difference (docs/results.md)
N_SIMS = 2000
FIRST_LOOK, MAX_SEEDS = 2, 20
ALPHA = 0.05


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    """Exact 95 % binomial interval of k successes in n."""
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def peeking_t_decides(x: np.ndarray, alpha_each: float) -> np.ndarray:
    """Shape (..., N) -> (..., N) bool: the classical t-interval at 1 - alpha_each excludes 0 at n."""
    n = np.arange(1, x.shape[-1] + 1, dtype=float)
    mean = np.cumsum(x, axis=-1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (np.cumsum(x * x, axis=-1) - n * mean**2) / (n - 1.0)
        half = scipy.stats.t.ppf(1.0 - alpha_each / 2.0, n - 1.0) * np.sqrt(np.maximum(var, 0.0) / n)
    return (n >= 2) & (np.abs(mean) > half)


def cs_decides(x: np.ndarray, alpha_each: float) -> np.ndarray:
    """Shape (..., N) -> (..., N) bool: the anytime interval (running intersection) excludes 0 at n."""
    _, low, high = t_cs_sequences(x, alpha_each)
    return (low > 0.0) | (high < 0.0)


def first_decision(decides: np.ndarray, first_look: int = FIRST_LOOK) -> np.ndarray:
    """(..., N) bool -> (...,) n of the first look (n >= first_look) that decides, 0 if none."""
    looks = decides[..., first_look - 1:]
    hit = looks.any(axis=-1)
    return np.where(hit, looks.argmax(axis=-1) + first_look, 0)


def simulate(rng: np.random.Generator, n_comparisons: int, effect: float = 0.0,
             sd: float = SD_POINTS) -> np.ndarray:
    """Paired differences of N_SIMS ablations: shape (N_SIMS, n_comparisons, MAX_SEEDS), in points."""
    return rng.normal(effect, sd, size=(N_SIMS, n_comparisons, MAX_SEEDS))


def aa_rates(seed: int, n_comparisons: int) -> dict[str, tuple[int, float, float, float]]:
    """Family-wise false-decision counts/rates under no effect, stopping at the first deciding look."""
    x = simulate(np.random.default_rng(seed), n_comparisons)
    alpha_each = ALPHA / n_comparisons
    out = {}
    for name, decides in (("t-CS", cs_decides(x, alpha_each)), ("peeking t", peeking_t_decides(x, alpha_each))):
        # An ablation errs if any comparison is ever declared (each stops at its first decision).
        k = int((first_decision(decides) > 0).any(axis=-1).sum())
        lo, hi = clopper_pearson(k, N_SIMS)
        out[name] = (k, k / N_SIMS, lo, hi)
    return out


# ------------------------------------------------------------------ validity under peeking


@pytest.mark.parametrize("n_comparisons", [1, 9])
def test_aa_peeking_t_cs_declares_at_most_5_percent_and_t_interval_more(n_comparisons: int) -> None:
    rates = aa_rates(seed=20261203 + n_comparisons, n_comparisons=n_comparisons)
    for name, (k, rate, lo, hi) in rates.items():
        print(f"A/A, m={n_comparisons}, looks n={FIRST_LOOK}..{MAX_SEEDS}, {name}: "
              f"{k}/{N_SIMS} = {rate:.2%} (Clopper-Pearson 95 % {lo:.2%} to {hi:.2%})")
    _, rate, _, hi = rates["t-CS"]
    assert rate <= ALPHA and hi <= ALPHA, rates["t-CS"]
    _, _, lo_t, _ = rates["peeking t"]
    assert lo_t > ALPHA, rates["peeking t"]  # why the new interval is needed


def test_uniform_coverage_with_any_mean_and_scale() -> None:
    """P(mu in every CS_n, n = 2..200) >= 1 - alpha: the guarantee itself, away from mu = 0, sigma = 1."""
    rng = np.random.default_rng(7)
    mu, sigma = -3.7, 25.0
    x = rng.normal(mu, sigma, size=(N_SIMS, 200))
    _, low, high = t_cs_sequences(x, ALPHA, running=False)
    missed = ((low > mu) | (high < mu)).any(axis=-1)
    k = int(missed.sum())
    lo, hi = clopper_pearson(k, N_SIMS)
    print(f"uniform miss rate over n=2..200: {k}/{N_SIMS} (CP {lo:.2%} to {hi:.2%})")
    assert hi <= ALPHA


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_coverage_at_fixed_n_is_at_least_the_t_intervals(n: int) -> None:
    """At one fixed n the CS is wider than the t-interval of the same level, so it covers at least as often."""
    rng = np.random.default_rng(100 + n)
    x = rng.normal(0.4, SD_POINTS, size=(N_SIMS, n))
    _, low, high = t_cs_sequences(x, ALPHA, running=False)
    covered = (low[:, -1] <= 0.4) & (high[:, -1] >= 0.4)
    assert covered.mean() >= 1 - ALPHA
    sd = x.std(axis=-1, ddof=1)
    t_half = scipy.stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    assert np.all(t_cs_radius(n, sd, ALPHA) >= t_half)


# ------------------------------------------------------------------ power


@pytest.mark.parametrize("n_comparisons, median_by", [(1, 6), (9, 9)])
def test_two_point_effect_is_decided_well_before_the_cap(n_comparisons: int, median_by: int) -> None:
    x = simulate(np.random.default_rng(11 + n_comparisons), n_comparisons, effect=2.0)[:, 0]
    stop = first_decision(cs_decides(x, ALPHA / n_comparisons))
    decided = stop > 0
    median = float(np.median(stop[decided]))
    print(f"2-point effect, SD {SD_POINTS}, m={n_comparisons}: decided in {decided.mean():.1%} "
          f"by n={MAX_SEEDS}, median n {median:g}, 90th percentile {np.percentile(stop[decided], 90):g}")
    assert decided.mean() >= 0.99
    assert median <= median_by
    _, low, _ = t_cs_sequences(x, ALPHA / n_comparisons)
    assert np.all(low[np.arange(len(x)), stop - 1] > 0)  # every decision says "dropout helps"


# ------------------------------------------------------------------ the formula itself


def test_e_value_matches_the_mixture_integral_it_is_defined_by() -> None:
    """Theorem 4.9's closed form against numerical integration over sigma (right Haar) and theta ~ N(0, 1/c2)."""
    y = np.array([0.7, -0.2, 1.9, 0.4, 1.1])
    c2 = DEFAULT_PRIOR_PRECISION

    def lik(sig: float, mu: float) -> float:
        return float(np.prod(np.exp(-((y - mu) ** 2) / (2 * sig**2)) / sig))

    h0 = scipy.integrate.quad(lambda s: lik(s, 0.0) / s, 0, np.inf, limit=200)[0]
    h1 = scipy.integrate.dblquad(
        lambda th, s: lik(s, th * s) / s * math.sqrt(c2 / (2 * math.pi)) * math.exp(-c2 * th * th / 2),
        0, 60, -60, 60)[0]
    assert log_e_value(y)[-1] == pytest.approx(math.log(h1 / h0), abs=1e-6)
    assert log_e_value(y)[0] == pytest.approx(0.0, abs=1e-12)  # G_1 = 1: a test martingale starts at 1


def test_interval_ends_are_where_the_e_value_reaches_one_over_alpha() -> None:
    x = np.random.default_rng(3).normal(1.0, 0.9, size=9)
    _, low, high = t_cs_sequences(x, ALPHA, running=False)
    for n in range(3, 10):
        for end in (low[n - 1], high[n - 1]):
            assert log_e_value(x[:n], end)[-1] == pytest.approx(math.log(1 / ALPHA), rel=1e-9)
        assert log_e_value(x[:n], (low[n - 1] + high[n - 1]) / 2)[-1] < math.log(1 / ALPHA)


def test_running_intersection_never_widens() -> None:
    x = np.random.default_rng(5).normal(0.3, 1.0, size=(50, 20))
    _, low, high = t_cs_sequences(x, ALPHA)
    assert np.all(np.isfinite(low[:, 2:])), "with c2 = 0.1 the 95 % CS is bounded from n = 3"
    assert np.all(np.diff(low[:, 2:], axis=-1) >= 0) and np.all(np.diff(high[:, 2:], axis=-1) <= 0)


# ------------------------------------------------------------------ decide(): the API the loop calls


def test_decide_statuses_reasons_and_bonferroni() -> None:
    rng = np.random.default_rng(9)
    diffs = {
        "helps": 2.0 + rng.normal(0, SD_POINTS, 10),
        "null-precise": rng.normal(0, 0.05, 12),
        "null-capped": rng.normal(0, SD_POINTS, 6),
        "null-open": rng.normal(0, SD_POINTS, 4),
    }
    out = decide(diffs, alpha=0.05, precision=1.0, max_seeds=6)
    assert [d.status for d in out.values()] == ["decided", "precise", "capped", "open"]
    assert all(d.alpha_each == pytest.approx(0.0125) and d.n_comparisons == 4 for d in out.values())
    assert "lies above 0 after 10 seeds" in out["helps"].reason
    assert out["helps"].anytime.low > 0
    assert out["null-open"].n == 4 and "does not yet exclude 0" in out["null-open"].reason
    # The classical interval is sweep.analysis.intervals.mean_ci at the unadjusted level.
    assert out["helps"].t_interval == mean_ci(diffs["helps"], 0.95)
    # More comparisons in the grid: each interval is at alpha/m, so wider.
    wide = decide({"helps": diffs["helps"]}, n_comparisons=36)["helps"].anytime
    alone = decide({"helps": diffs["helps"]})["helps"].anytime
    assert wide.width > alone.width and wide.alpha == pytest.approx(0.05 / 36)


def test_anytime_p_value_agrees_with_the_interval() -> None:
    rng = np.random.default_rng(12)
    for effect in (0.0, 0.5, 1.0, 2.0):
        for n in (2, 3, 5, 8, 13):
            d = decide({"a": effect + rng.normal(0, SD_POINTS, n)}, n_comparisons=3)["a"]
            assert (d.p_anytime <= d.alpha_each) == (d.status == "decided"), (effect, n, d)
    assert decide({"a": [0.0, 0.0, 0.0]})["a"].p_anytime == 1.0


def test_decided_wins_over_precise_and_units_do_not_matter() -> None:
    points = 2.0 + np.random.default_rng(4).normal(0, SD_POINTS, 12)
    in_points = decide({"a": points}, precision=100.0)["a"]
    in_fraction = decide({"a": points / 100}, precision=1.0)["a"]
    assert in_points.status == in_fraction.status == "decided"
    assert in_fraction.anytime.low * 100 == pytest.approx(in_points.anytime.low)


def test_edge_cases_n1_zero_variance_nonfinite() -> None:
    one = decide({"a": [0.5]}, max_seeds=5)["a"]
    assert one.status == "open" and one.anytime.low == -math.inf and "n=1" in one.reason
    assert decide({"a": [0.5]}, max_seeds=2)["a"].status == "open"  # 1 < cap
    zeros = decide({"a": [0.0] * 5}, precision=0.5)["a"]  # identical runs: no effect, exactly
    assert zeros.status == "precise" and zeros.anytime.width == 0.0 and "all differences are equal" in zeros.reason
    const = t_confidence_sequence([0.01] * 5)
    assert const.low == const.high == pytest.approx(0.01) and "equal" in const.note
    with_nan = t_confidence_sequence([1.0, math.nan, 1.2, 0.9, 1.1])
    assert with_nan.n == 4 and "dropped 1 non-finite" in with_nan.note
    empty = decide({"a": [math.nan]})["a"]
    assert empty.status == "open" and empty.n == 0 and "no finite values" in empty.reason
    # Too few seeds for the level: an unbounded interval, said so.
    two = t_confidence_sequence([1.0, 1.1], alpha=0.05)
    assert math.isinf(two.width) and "too few values" in two.note


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=0.0), "alpha"),
    (dict(alpha=1.5), "alpha"),
    (dict(n_comparisons=1), "n_comparisons"),
    (dict(n_comparisons=0), "n_comparisons"),
    (dict(precision=0.0), "precision"),
    (dict(precision=math.nan), "precision"),
    (dict(max_seeds=1), "max_seeds"),
    (dict(max_seeds=5.0), "max_seeds"),
    (dict(prior_precision=-1.0), "prior_precision"),
])
def test_bad_arguments_say_which_and_what_is_allowed(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decide({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}, **kwargs)


def test_a_comparison_with_a_table_instead_of_a_row_is_named() -> None:
    with pytest.raises(ValueError, match=r"diffs\['keep 0.5'\] must be a 1-D"):
        decide({"keep 0.5": [[1.0, 2.0], [3.0, 4.0]]})


if __name__ == "__main__":  # the figures quoted in docs/results.md
    for m in (1, 9):
        for name, (k, rate, lo, hi) in aa_rates(seed=20261203 + m, n_comparisons=m).items():
            print(f"A/A m={m} {name}: {k}/{N_SIMS} = {rate:.2%} [{lo:.2%}, {hi:.2%}]")
