"""sweep.factorial: interactions between dropout's effect and another factor, on grids whose answer is planted."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.analysis.factorial import interactions, summarize_factorial
from sweep.analysis.stats import Cell, summarize

NORM = ("none", "batchnorm")


def fake_train(norm: str, size: int, keep: float, seed_base: float, effect: dict[str, float],
               rng: np.random.Generator, noise: float) -> Cell:
    """A 'training run': the seed's own accuracy, plus dropout's effect at this level, plus run noise."""
    acc = seed_base + (effect[norm] if keep < 1.0 else 0.0) + rng.normal(0.0, noise)
    gap = 0.3 - (0.1 if keep < 1.0 else 0.0) + rng.normal(0.0, noise)
    return Cell(size, keep, 0, acc, acc + gap, acc, gap, 1.5 - acc, levels=(("normalization", norm),))


def grid(rng: np.random.Generator, effect: dict[str, float], seeds: int, noise: float,
         sizes: tuple[int, ...] = (500,)) -> list[Cell]:
    cells = []
    for seed in range(seeds):
        base = 0.6 + rng.normal(0.0, 0.03)  # between-seed spread, shared by the seed's cells (pairing)
        for size in sizes:
            for norm in NORM:
                for keep in (1.0, 0.5):
                    c = fake_train(norm, size, keep, base, effect, rng, noise)
                    cells.append(Cell(**{**c.__dict__, "seed": seed}))
    return cells


@pytest.mark.parametrize("planted", [-0.026, 0.0])
def test_interaction_interval_covers_the_planted_difference_95_percent_of_the_time(planted: float) -> None:
    """400 repeats: the 95 % interval of effect(batchnorm) - effect(none) covers the truth in ~95 % of them."""
    rng = np.random.default_rng(12)
    effect = {"none": 0.02, "batchnorm": 0.02 + planted}
    covered = found = 0
    repeats = 400
    for _ in range(repeats):
        [inter] = interactions(grid(rng, effect, seeds=8, noise=0.006), [("normalization", NORM)])
        res = inter.results["best_val_acc"]
        assert (inter.factor, inter.level, inter.reference, inter.keep_prob) == ("normalization", "batchnorm", "none", 0.5)
        covered += res.diff.covers(planted)
        found += not res.diff.covers(0.0)
    # Binomial(400, 0.95): sd 1.1 %; the band is about +-2.7 sd.
    assert 0.92 <= covered / repeats <= 0.98, covered
    if planted:
        assert found / repeats > 0.9, found  # a 2.6-point interaction is found with 8 seeds at this noise
    else:
        assert 0.02 <= found / repeats <= 0.08, found  # the false-positive rate is the nominal 5 %


def test_interaction_is_the_difference_of_paired_effects_per_seed() -> None:
    rng = np.random.default_rng(3)
    cells = grid(rng, {"none": 0.03, "batchnorm": 0.0}, seeds=4, noise=0.01)
    [inter] = interactions(cells, [("normalization", NORM)])
    acc = {(dict(c.levels)["normalization"], c.keep_prob, c.seed): c.best_val_acc for c in cells}
    per_seed = [(acc["batchnorm", 0.5, s] - acc["batchnorm", 1.0, s]) - (acc["none", 0.5, s] - acc["none", 1.0, s])
                for s in range(4)]
    res = inter.results["best_val_acc"]
    assert res.mean_diff == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert res.n == 4 and inter.seeds == (0, 1, 2, 3)
    # The reference level is the one given first: the other order flips the sign.
    [flipped] = interactions(cells, [("normalization", ("batchnorm", "none"))])
    assert flipped.results["best_val_acc"].mean_diff == pytest.approx(-res.mean_diff)


def test_factorial_summary_holm_over_the_whole_grid_and_size_as_a_factor() -> None:
    rng = np.random.default_rng(4)
    three = ("none", "batchnorm", "layernorm")
    cells = []
    for seed in range(3):
        base = 0.5 + rng.normal(0, 0.02)
        for size in (100, 300):
            for norm in three:
                for keep in (1.0, 0.75, 0.5):
                    acc = base + (0.01 if keep < 1 else 0) + rng.normal(0, 0.01)
                    cells.append(Cell(size, keep, seed, acc, acc + 0.2, acc, 0.2 + rng.normal(0, 0.01), 1.0,
                                      levels=(("normalization", norm),)))
    fs = summarize_factorial(cells, [("normalization", three)], rng=np.random.default_rng(0), n_resamples=200)
    assert fs.levels == tuple((("normalization", n),) for n in three)  # the given order
    assert fs.factors == (("normalization", three), ("size", ("100", "300")))
    # 3 levels x 2 sizes x 2 keep_probs compared with keep 1.0 = 12 comparisons, one Holm family per metric.
    assert fs.n_comparisons == 12
    # normalization: 3 pairs x 2 sizes x 2 keeps; size: 1 pair x 3 levels x 2 keeps.
    assert fs.n_interactions == 12 + 6
    pairs = {(i.factor, i.level, i.reference) for i in fs.interactions}
    assert ("normalization", "batchnorm", "none") in pairs and ("normalization", "layernorm", "batchnorm") in pairs
    assert ("size", "300", "100") in pairs
    for lv, s in fs.per_level.items():
        alone = summarize([c for c in cells if c.levels == lv], rng=np.random.default_rng(0), n_resamples=200)
        assert s.n_comparisons == 12
        for key, comp in s.comparisons.items():
            res, own = comp.results["best_val_acc"], alone.comparisons[key].results["best_val_acc"]
            assert res.mean_diff == own.mean_diff and res.p_t == own.p_t
            assert res.p_t_holm >= own.p_t_holm  # a larger family never adjusts less


def test_verdict_says_the_planted_interaction_in_words_and_the_figure_has_a_line_per_level() -> None:
    from sweep.reporting.factorial_verdict import factorial_verdict, interaction_sentence
    from sweep.reporting.figures import benefit_by_level_figure

    rng = np.random.default_rng(7)
    cells = grid(rng, {"none": 0.03, "batchnorm": 0.004}, seeds=8, noise=0.004, sizes=(300, 1000))
    fs = summarize_factorial(cells, [("normalization", NORM)], rng=np.random.default_rng(0), n_resamples=200)
    inter = next(i for i in fs.interactions if i.factor == "normalization" and dict(i.context)["size"] == "300")
    res = inter.results["best_val_acc"]
    text = interaction_sentence(inter)
    assert text.startswith("With 300 training examples, keep 0.5: dropout's benefit is "
                           f"{abs(res.mean_diff) * 100:.1f} points smaller with normalization=batchnorm than with "
                           "normalization=none (95 % CI ")
    assert text.endswith("8 seeds), a detectable interaction.")
    verdict = factorial_verdict(fs)
    assert verdict.startswith("In short (4 comparisons, counting only differences that survive Holm correction): "
                              "dropout helped validation accuracy in 4 ")
    opening = verdict.split("\n\n", 2)[1].splitlines()  # the overview, after the one-sentence headline
    assert len(opening) <= 5
    assert opening[0].startswith("- Dropout helped (interval above 0, Holm-adjusted p ≤ 0.05) in 4 of 4 comparisons: ")
    assert opening[2] == "- No detectable effect (interval covers 0) in 0 of 4 comparisons."
    assert opening[3].startswith("- Largest interaction: With ")
    assert "#### normalization=none" in verdict and "#### normalization=batchnorm" in verdict
    fig = benefit_by_level_figure(fs)
    panels = [ax for ax in fig.axes if ax.get_title().endswith("training examples")]
    assert [ax.get_title() for ax in panels] == ["300 training examples", "1,000 training examples"]
    for ax in panels:
        assert len(ax.lines) == 1 + len(NORM) and len(ax.collections) == len(NORM)  # zero line, a line + band per level
        none_line = ax.lines[1]
        assert list(none_line.get_xdata()) == [0.5, 1.0] and none_line.get_ydata()[-1] == 0.0


def test_a_plain_ablation_opens_with_the_overview_only_when_its_grid_is_large() -> None:
    from sweep.reporting.verdict import verdict

    rng = np.random.default_rng(8)
    def plain(sizes: tuple[int, ...]) -> list[Cell]:
        return [Cell(**{**c.__dict__, "levels": ()}) for c in grid(rng, {"none": 0.03, "batchnorm": 0.0}, 4, 0.004,
                                                                   sizes) if dict(c.levels)["normalization"] == "none"]
    small = verdict(summarize(plain((100, 300)), rng=np.random.default_rng(0), n_resamples=100))
    # 2 comparisons: the one-sentence headline, then the reading guide (no overview)
    assert small.startswith("In short (2 comparisons,") and small.split("\n\n")[1].startswith("Differences are paired")
    big = verdict(summarize(plain((100, 200, 300, 400, 500)), rng=np.random.default_rng(0), n_resamples=100))
    helped = big.split("\n\n")[1].splitlines()[0]
    assert helped.startswith("- Dropout helped (interval above 0, Holm-adjusted p ≤ 0.05) in 5 of 5 comparisons: ")
    assert all(f"keep 0.5 at {s} examples" in helped for s in (100, 200, 300, 400, 500))  # every one named


def test_two_varied_factors_hold_the_other_one_and_the_size() -> None:
    rng = np.random.default_rng(9)
    cells = []
    for seed in range(6):
        base = 0.5 + rng.normal(0, 0.02)
        for width in ("64", "256"):
            for norm in NORM:
                for keep in (1.0, 0.5):
                    acc = base + (0.02 if keep < 1 and width == "256" else 0.0) + rng.normal(0, 0.005)
                    cells.append(Cell(300, keep, seed, acc, acc + 0.2, acc, 0.2, 1.0,
                                      levels=(("hidden_dims", width), ("normalization", norm))))
    found = interactions(cells, [("normalization", NORM), ("hidden_dims", ("64", "256"))])
    assert sorted((i.factor, i.context) for i in found) == [
        ("hidden_dims", (("normalization", "batchnorm"), ("size", "300"))),
        ("hidden_dims", (("normalization", "none"), ("size", "300"))),
        ("normalization", (("hidden_dims", "256"), ("size", "300"))),
        ("normalization", (("hidden_dims", "64"), ("size", "300"))),
    ]
    width = [i for i in found if i.factor == "hidden_dims"]
    assert all(i.level == "256" and i.reference == "64" for i in width)
    assert all(not i.results["best_val_acc"].diff.covers(0.0) for i in width)  # planted: +2 points only when wide


def test_one_seed_or_a_missing_baseline_is_said_not_raised() -> None:
    from sweep.reporting.factorial_verdict import factorial_tables, factorial_verdict

    rng = np.random.default_rng(10)
    one = grid(rng, {"none": 0.02, "batchnorm": 0.0}, seeds=1, noise=0.01)
    fs = summarize_factorial(one, [("normalization", NORM)], rng=np.random.default_rng(0), n_resamples=50)
    text = factorial_verdict(fs)
    assert "(1 seed: no interval or test), cannot be judged from 1 seed." in text
    assert "0 of 2 comparisons; 2 cannot be judged (one seed)." in text
    assert "| n/a |" in factorial_tables(fs)
    # A level without its keep 1.0 runs: that level has no comparison, and no interaction is formed with it.
    cells = [c for c in grid(rng, {"none": 0.02, "batchnorm": 0.0}, seeds=3, noise=0.01)
             if not (dict(c.levels)["normalization"] == "batchnorm" and c.keep_prob == 1.0)]
    fs = summarize_factorial(cells, [("normalization", NORM)], rng=np.random.default_rng(0), n_resamples=50)
    assert fs.interactions == () and fs.n_comparisons == 1
    assert "no keep_prob=1.0 runs" in factorial_verdict(fs)
