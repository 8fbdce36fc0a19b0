"""Which anytime-valid boundary decides soonest with 3-20 seeds? Half-widths in points.

Paired differences of best validation accuracy have a per-seed SD of median
0.92 points (range 0.64-1.49, docs/results.md). For n = 3..20 seeds this
prints the half-width of:

- ``t-CS``: sweep.analysis.confseq (Wang & Ramdas 2024, Thm 4.9), at sample SD 0.92;
  needs normal differences, no known variance;
- ``NM s=..``: Howard et al. 2021 two-sided normal mixture for sigma-sub-Gaussian
  differences, sqrt((n s^2 + rho) log((n s^2 + rho) / (rho alpha^2))) / n, rho
  optimal at n = 10 (the confseq package's ``best_rho``); sigma must be known in
  advance: 0.92 (the median: too small for a third of the comparisons) and
  1.49 (the largest measured);
- ``PrPl-EB``: Waudby-Smith & Ramdas 2023 (JRSS-B) predictable plug-in
  empirical-Bernstein CS for observations in a known range, here [-1, 1]
  (accuracy fractions), median over 2 000 simulated sequences with SD 0.92 points;
- ``t (fixed n)``: the classical t-interval, valid at one n only (reference).

Then the t-CS factor K_n (radius / sample SD) for several prior precisions,
and the false-decision rate of the t-CS when the differences are not normal
(its assumption), symmetric or skewed, with the classical t-interval's at a
fixed n for comparison.

usage: python bench/confseq_widths.py
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats

from sweep.analysis.confseq import DEFAULT_PRIOR_PRECISION, t_cs_radius, t_cs_sequences

SD = 0.92
NS = np.arange(3, 21)


def normal_mixture_radius(n: np.ndarray, sigma: float, alpha: float, n_opt: int = 10) -> np.ndarray:
    """Howard et al. 2021 two-sided normal mixture boundary, as a half-width of the mean."""
    v_opt = n_opt * sigma**2
    rho = v_opt / (2 * math.log(1 / alpha) + math.log(1 + 2 * math.log(1 / alpha)))
    v = n * sigma**2
    return np.sqrt((v + rho) * np.log((v + rho) / (rho * alpha**2))) / n


def prpl_eb_radius(x01: np.ndarray, alpha: float, cap: float = 0.5) -> np.ndarray:
    """Waudby-Smith & Ramdas PrPl-EB half-width for data in [0, 1], shape (sims, N) -> (sims, N)."""
    sims, big_n = x01.shape
    t = np.arange(1, big_n + 1, dtype=float)
    mu_hat = (0.5 + np.cumsum(x01, axis=1)) / (t + 1)
    sig2 = (0.25 + np.cumsum((x01 - mu_hat) ** 2, axis=1)) / (t + 1)
    mu_prev = np.concatenate([np.full((sims, 1), 0.5), mu_hat[:, :-1]], axis=1)
    sig2_prev = np.concatenate([np.full((sims, 1), 0.25), sig2[:, :-1]], axis=1)
    lam = np.minimum(np.sqrt(2 * math.log(2 / alpha) / (sig2_prev * t * np.log(1 + t))), cap)
    psi = -np.log(1 - lam) - lam  # = 4 psi_E(lambda)
    v = (x01 - mu_prev) ** 2
    return (math.log(2 / alpha) + np.cumsum(v * psi, axis=1)) / np.cumsum(lam, axis=1)


def main() -> None:
    rng = np.random.default_rng(0)
    for m in (1, 9):
        alpha = 0.05 / m
        d = rng.normal(0.0, SD / 100, size=(2000, NS[-1]))  # fractions
        eb = 2 * 100 * np.median(prpl_eb_radius((d + 1) / 2, alpha), axis=0)  # back to points on [-1, 1]
        rows = {
            "t-CS": t_cs_radius(NS, SD, alpha),
            "NM s=0.92": normal_mixture_radius(NS, 0.92, alpha),
            "NM s=1.49": normal_mixture_radius(NS, 1.49, alpha),
            "PrPl-EB": eb[NS - 1],
            "t (fixed n)": scipy.stats.t.ppf(1 - alpha / 2, NS - 1) * SD / np.sqrt(NS),
        }
        print(f"\nalpha = 0.05/{m}: half-width in points at SD {SD}")
        print("n            " + " ".join(f"{n:6d}" for n in NS))
        for name, r in rows.items():
            print(f"{name:12s} " + " ".join(f"{x:6.2f}" for x in r))
        print(f"t-CS K_n = radius / sample SD (default c2 = {DEFAULT_PRIOR_PRECISION}):")
        for c2 in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
            print(f"c2={c2:<9g} " + " ".join(f"{x:6.2f}" for x in t_cs_radius(NS, 1.0, alpha, c2)))

    print("\nNon-normal differences, mean 0, 2 000 sequences: t-CS false decisions over looks n = 2..20 "
          "against the classical t-interval's at one fixed n = 10 (alpha 0.05):")
    shapes = {
        "normal": lambda size: rng.normal(size=size),
        "t(3), symmetric": lambda size: rng.standard_t(3, size=size),
        "uniform": lambda size: rng.uniform(-1.0, 1.0, size=size),
        "gamma(4), skew 1": lambda size: rng.gamma(4.0, size=size) - 4.0,
        "exponential, skew 2": lambda size: rng.exponential(size=size) - 1.0,
    }
    for name, draw in shapes.items():
        x = draw((2000, 20))
        _, low, high = t_cs_sequences(x, 0.05)
        k = int(((low > 0) | (high < 0)).any(axis=1).sum())
        ci = scipy.stats.binomtest(k, 2000).proportion_ci(method="exact")
        n = 10
        half = scipy.stats.t.ppf(0.975, n - 1) * x[:, :n].std(axis=1, ddof=1) / math.sqrt(n)
        k_t = int((np.abs(x[:, :n].mean(axis=1)) > half).sum())
        print(f"{name:20s} t-CS {k / 2000:6.2%} (Clopper-Pearson {ci.low:.2%} to {ci.high:.2%});"
              f"  t at n = 10: {k_t / 2000:6.2%}")

if __name__ == "__main__":
    main()
