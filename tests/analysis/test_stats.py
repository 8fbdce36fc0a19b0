"""sweep.stats against scipy and against synthetic data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from sweep.analysis.stats import (
    Cell,
    bootstrap_ci,
    holm,
    mean_ci,
    paired_test,
    summarize,
)


def make_cell(size: int, keep: float, seed: int, acc: float, **kw: object) -> Cell:
    epochs = kw.pop("epochs", [1, 2, 3])
    e = range(len(epochs))  # type: ignore[arg-type]
    train = kw.pop("train_acc", [acc + 0.1 * i for i in e])
    val = kw.pop("val_acc", [acc - 0.01 * i for i in e])
    base = dict(
        size=size, keep_prob=keep, seed=seed, best_val_acc=acc, final_train_acc=acc + 0.2,
        final_val_acc=acc - 0.01, gap=0.21, val_loss=1.5 - acc,
    )
    base.update(kw)
    curves = dict(epochs=list(epochs), train_acc=list(train), val_acc=list(val))
    return Cell(**curves, **base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- mean_ci / bootstrap_ci


def test_mean_ci_matches_scipy_t_interval() -> None:
    x = np.random.default_rng(1).normal(0.6, 0.05, size=7)
    iv = mean_ci(x, confidence=0.9)
    low, high = scipy.stats.t.interval(0.9, 6, loc=x.mean(), scale=scipy.stats.sem(x))
    assert iv.n == 7 and iv.method == "t" and iv.note == ""
    assert iv.mean == pytest.approx(x.mean())
    assert iv.sem == pytest.approx(scipy.stats.sem(x))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert iv.covers(x.mean()) and not iv.covers(high + 1e-6)


def test_mean_ci_single_value_and_empty_are_flagged_not_raised() -> None:
    one = mean_ci([0.5])
    assert one.mean == 0.5 and one.n == 1 and not one.defined
    assert math.isnan(one.low) and math.isnan(one.high) and "n=1" in one.note
    assert not one.covers(0.5)
    none = mean_ci([])
    assert none.n == 0 and math.isnan(none.mean) and "no finite" in none.note


def test_mean_ci_drops_non_finite_and_says_so() -> None:
    iv = mean_ci([0.1, float("nan"), 0.3, float("inf")])
    assert iv.n == 2 and iv.mean == pytest.approx(0.2) and "dropped 2" in iv.note


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5])
def test_confidence_out_of_range_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=bad)


def test_values_must_be_one_dimensional() -> None:
    with pytest.raises(ValueError, match="values"):
        mean_ci(np.zeros((2, 2)))


def test_bootstrap_close_to_t_interval_for_normal_data() -> None:
    x = np.random.default_rng(2).normal(0.5, 0.1, size=200)
    t_iv = mean_ci(x)
    b_iv = bootstrap_ci(x, np.random.default_rng(3), n_resamples=4000)
    width = t_iv.high - t_iv.low
    assert b_iv.method == "bootstrap-BCa" and b_iv.n == 200
    assert abs(b_iv.low - t_iv.low) < 0.1 * width
    assert abs(b_iv.high - t_iv.high) < 0.1 * width
    assert b_iv.sem == pytest.approx(t_iv.sem, rel=0.15)


def test_bootstrap_is_reproducible_from_the_generator() -> None:
    x = [0.41, 0.44, 0.39, 0.47, 0.43]
    a = bootstrap_ci(x, np.random.default_rng(7), n_resamples=500)
    b = bootstrap_ci(x, np.random.default_rng(7), n_resamples=500)
    c = bootstrap_ci(x, np.random.default_rng(8), n_resamples=500)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_bootstrap_degenerate_inputs() -> None:
    rng = np.random.default_rng(0)
    assert not bootstrap_ci([0.3], rng).defined
    flat = bootstrap_ci([0.3, 0.3, 0.3], rng)
    assert (flat.low, flat.mean, flat.high) == (0.3, 0.3, 0.3) and "equal" in flat.note
    with pytest.raises(ValueError, match="rng"):
        bootstrap_ci([0.1, 0.2], 0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- paired_test


@pytest.mark.parametrize("effect", [0.03, -0.03])
def test_planted_paired_effect_is_found_with_the_right_sign(effect: float) -> None:
    rng = np.random.default_rng(11)
    seed_effect = rng.normal(0.5, 0.05, size=8)  # large between-seed spread, removed by pairing
    control = seed_effect + rng.normal(0, 0.005, size=8)
    treated = seed_effect + effect + rng.normal(0, 0.005, size=8)
    res = paired_test(treated, control)
    assert res.n == 8
    assert res.p_t < 1e-4
    assert res.p_wilcoxon == pytest.approx(2 / 2**8)  # all 8 differences share a sign: exact null
    assert math.copysign(1, res.mean_diff) == math.copysign(1, effect)
    assert not res.diff.covers(0.0)
    assert math.copysign(1, res.d_z) == math.copysign(1, effect) and abs(res.d_z) > 2
    assert abs(res.g_z) < abs(res.d_z)  # Hedges shrinks towards 0
    # an unpaired test on the same data cannot see it through the seed spread
    assert scipy.stats.ttest_ind(treated, control).pvalue > 0.05


def test_paired_test_agrees_with_one_sample_test_on_differences() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=9), rng.normal(size=9)
    res = paired_test(a, b)
    d = a - b
    one = scipy.stats.ttest_1samp(d, 0.0)
    assert res.t_stat == pytest.approx(one.statistic)
    assert res.p_t == pytest.approx(one.pvalue)
    assert res.d_z == pytest.approx(d.mean() / d.std(ddof=1))
    low, high = scipy.stats.t.interval(0.95, 8, loc=d.mean(), scale=scipy.stats.sem(d))
    assert (res.diff.low, res.diff.high) == pytest.approx((low, high))
    # Hedges' exact J(8) against its textbook approximation 1 - 3 / (4 df - 1)
    assert res.g_z / res.d_z == pytest.approx(1 - 3 / (4 * 8 - 1), abs=2e-3)


def test_null_effect_interval_covers_zero_about_95_percent() -> None:
    rng = np.random.default_rng(2024)
    repeats, n = 2000, 5
    covered = rejected_t = rejected_w = 0
    for _ in range(repeats):
        seed_effect = rng.normal(0.5, 0.05, size=n)
        treated = seed_effect + rng.normal(0, 0.01, n)
        res = paired_test(treated, seed_effect + rng.normal(0, 0.01, n))
        covered += res.diff.covers(0.0)
        rejected_t += res.p_t < 0.05
        rejected_w += res.p_wilcoxon < 0.05
    # two-sided binomial test against the nominal 95 % (fixed seed, so deterministic)
    assert scipy.stats.binomtest(covered, repeats, 0.95).pvalue > 0.001, covered / repeats
    # the t-test's size matches its interval: p < 0.05 exactly when the CI misses 0
    assert rejected_t == repeats - covered
    assert rejected_w == 0  # smallest two-sided Wilcoxon p with 5 pairs is 2/32 > 0.05


def test_paired_edge_cases() -> None:
    zero = paired_test([0.4, 0.5, 0.6], [0.4, 0.5, 0.6])
    assert (zero.p_t, zero.p_wilcoxon, zero.d_z, zero.mean_diff) == (1.0, 1.0, 0.0, 0.0)
    assert "zero" in zero.note
    one = paired_test([0.5], [0.4])
    assert one.n == 1 and one.mean_diff == pytest.approx(0.1)
    assert math.isnan(one.p_t) and math.isnan(one.p_wilcoxon) and "n=1" in one.note
    nan_pair = paired_test([0.5, float("nan"), 0.7, 0.6], [0.4, 0.4, 0.5, 0.55])
    assert nan_pair.n == 3 and "dropped 1 pair" in nan_pair.note
    # a zero difference among others: dropped by Wilcoxon's zero rule, test still runs
    some_zero = paired_test([0.5, 0.6, 0.7, 0.8, 0.9], [0.5, 0.5, 0.6, 0.7, 0.8])
    assert 0 < some_zero.p_wilcoxon <= 1
    with pytest.raises(ValueError, match="treated and control"):
        paired_test([1.0, 2.0], [1.0])


# ---------------------------------------------------------------- holm


def test_holm_by_hand() -> None:
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> running max .02 .03 .06 .06
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_nan_passthrough_and_family_size() -> None:
    got = holm([0.01, float("nan"), 0.02])
    assert math.isnan(got[1])
    assert got[[0, 2]] == pytest.approx([0.02, 0.02])  # m = 2, not 3
    assert np.isnan(holm([float("nan")])).all() and holm([]).size == 0


def _holm_reject_reference(p: np.ndarray, alpha: float) -> np.ndarray:
    """Textbook step-down: reject p_(1), p_(2), ... while p_(i) <= alpha / (m - i + 1)."""
    order = np.argsort(p)
    reject = np.zeros(p.size, dtype=bool)
    for i, j in enumerate(order):
        if p[j] > alpha / (p.size - i):
            break
        reject[j] = True
    return reject


def test_holm_properties_on_random_pvalues() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 12))
        adj = holm(p)
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= 0)  # monotone in the raw order
        assert np.all(adj <= np.minimum(1, p * p.size) + 1e-15)  # never worse than Bonferroni
        for alpha in (0.01, 0.05, 0.1):
            np.testing.assert_array_equal(adj <= alpha, _holm_reject_reference(p, alpha))


def test_holm_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="pvalues"):
        holm([0.5, 1.2])


# ---------------------------------------------------------------- Cell and summarize


def _grid(effects: dict[float, float], sizes: tuple[int, ...] = (500, 2000)) -> list[Cell]:
    """Paired grid: a per-(size, seed) base accuracy plus a planted effect per keep_prob."""
    rng = np.random.default_rng(0)
    seeds = range(6)
    cells = []
    for size in sizes:
        for s in seeds:
            base = 0.3 + 0.1 * math.log10(size) + rng.normal(0, 0.02)
            for keep, eff in effects.items():
                acc = base + eff + rng.normal(0, 0.002)
                cells.append(make_cell(size, keep, s, acc, gap=0.4 * keep + rng.normal(0, 0.01)))
    return cells


def test_summarize_intervals_comparisons_and_holm() -> None:
    cells = _grid({1.0: 0.0, 0.5: 0.02, 0.25: 0.0})
    summ = summarize(cells, rng=np.random.default_rng(0), n_resamples=500)
    assert summ.sizes == (500, 2000) and summ.keep_probs == (1.0, 0.5, 0.25)
    assert set(summ.cells) == {(s, k) for s in (500, 2000) for k in (1.0, 0.5, 0.25)}
    assert set(summ.comparisons) == {(s, k) for s in (500, 2000) for k in (0.5, 0.25)}
    assert summ.n_comparisons == 4 and summ.notes == ()

    by = {(c.size, c.keep_prob, c.seed): c for c in cells}
    cs = summ.cells[(500, 0.5)]
    assert cs.seeds == tuple(range(6))
    for m in ("best_val_acc", "gap", "val_loss", "final_train_acc"):
        ref = mean_ci([by[(500, 0.5, s)].__dict__[m] for s in range(6)])
        assert cs.intervals[m] == ref
    assert set(cs.bootstrap) == {"best_val_acc"} and cs.bootstrap["best_val_acc"].defined

    comp = summ.comparisons[(500, 0.5)]
    res = comp.results["best_val_acc"]
    diffs = [by[(500, 0.5, s)].best_val_acc - by[(500, 1.0, s)].best_val_acc for s in range(6)]
    assert res.mean_diff == pytest.approx(np.mean(diffs)) and res.n == 6
    assert res.diff.low > 0  # the planted +2 points
    assert summ.comparisons[(500, 0.25)].results["best_val_acc"].p_t > 0.001
    assert summ.comparisons[(2000, 0.25)].results["gap"].mean_diff < -0.25  # 0.4*(0.25-1)

    keys = sorted(summ.comparisons)
    for m in summ.metrics:
        raw_t = [summ.comparisons[k].results[m].p_t for k in keys]
        raw_w = [summ.comparisons[k].results[m].p_wilcoxon for k in keys]
        got_t = [summ.comparisons[k].results[m].p_t_holm for k in keys]
        got_w = [summ.comparisons[k].results[m].p_wilcoxon_holm for k in keys]
        assert got_t == pytest.approx(holm(raw_t).tolist())
        assert got_w == pytest.approx(holm(raw_w).tolist())


def test_summarize_learning_curves_use_epochs_shared_by_all_runs() -> None:
    four = [1, 2, 3, 4]
    cells = [
        make_cell(500, 1.0, 0, 0.4, epochs=four, train_acc=[.1, .2, .3, .4],
                  val_acc=[.1, .2, .2, .2]),
        make_cell(500, 1.0, 1, 0.4, epochs=four, train_acc=[.3, .4, .5, .6],
                  val_acc=[.2, .2, .3, .3]),
        make_cell(500, 1.0, 2, 0.4, epochs=[1, 2], train_acc=[.2, .3], val_acc=[.0, .2]),  # pruned
    ]
    summ = summarize(cells, rng=np.random.default_rng(0), n_resamples=100)
    band = summ.cells[(500, 1.0)].train_curve
    assert band.epochs.tolist() == [1, 2] and band.n == 3
    assert band.mean == pytest.approx([0.2, 0.3])
    ref = mean_ci([0.1, 0.2, 0.0])  # val at epoch 1 over the three runs
    val = summ.cells[(500, 1.0)].val_curve
    assert (val.low[0], val.mean[0], val.high[0]) == pytest.approx((ref.low, ref.mean, ref.high))


def test_summarize_unpaired_seeds_and_missing_baseline_are_noted() -> None:
    cells = [make_cell(500, 1.0, s, 0.4 + 0.01 * s) for s in range(3)]
    cells += [make_cell(500, 0.5, s, 0.42 + 0.01 * s) for s in (1, 2, 3)]
    cells += [make_cell(2000, 0.5, s, 0.5) for s in range(3)]
    summ = summarize(cells, rng=np.random.default_rng(0), n_resamples=100)
    assert summ.comparisons[(500, 0.5)].seeds == (1, 2)
    assert (2000, 0.5) not in summ.comparisons and summ.n_comparisons == 1
    assert any("[0, 3]" in n for n in summ.notes)
    assert any("size 2000" in n for n in summ.notes)


def test_single_seed_summary_does_not_crash() -> None:
    cells = [make_cell(500, 1.0, 0, 0.4), make_cell(500, 0.5, 0, 0.45)]
    summ = summarize(cells, rng=np.random.default_rng(0), n_resamples=100)
    iv = summ.cells[(500, 0.5)].intervals["best_val_acc"]
    assert iv.n == 1 and not iv.defined
    res = summ.comparisons[(500, 0.5)].results["best_val_acc"]
    assert res.mean_diff == pytest.approx(0.05) and math.isnan(res.p_t_holm)
    assert np.isnan(summ.cells[(500, 0.5)].val_curve.low).all()


def test_bad_input_names_the_field() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="duplicate"):
        summarize([make_cell(500, 1.0, 0, 0.4), make_cell(500, 1.0, 0, 0.41)], rng=rng)
    with pytest.raises(ValueError, match="metrics"):
        summarize([make_cell(500, 1.0, 0, 0.4)], metrics=("accuracy",), rng=rng)
    with pytest.raises(ValueError, match="cells"):
        summarize([], rng=rng)
    with pytest.raises(ValueError, match="keep_prob"):
        make_cell(500, 0.0, 0, 0.4)
    with pytest.raises(ValueError, match="train_acc"):
        make_cell(500, 1.0, 0, 0.4, train_acc=[0.1])
    with pytest.raises(ValueError, match="epochs"):
        make_cell(500, 1.0, 0, 0.4, epochs=[1, 1, 2])
