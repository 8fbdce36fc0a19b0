"""sweep.plots: PNGs are written and the figures hold what the summary says."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from sweep.analysis.importance import ImportanceResult, TrendPoint
from sweep.analysis.stats import AblationSummary, Cell, summarize
from sweep.reporting import figures as plots

SIZES = (500, 2000)
KEEPS = (1.0, 0.5, 0.25)


def synthetic_cells(seeds: int = 4, epochs: int = 6) -> list[Cell]:
    """Curves that rise per epoch; dropout lowers train acc and lifts val acc a little."""
    rng = np.random.default_rng(0)
    cells = []
    for size in SIZES:
        for seed in range(seeds):
            base = 0.3 + 0.05 * math.log10(size) + rng.normal(0, 0.01)
            for keep in KEEPS:
                ep = list(range(1, epochs + 1))
                val = [base * (1 - math.exp(-e / 2)) + 0.02 * (1 - keep) + rng.normal(0, 0.003)
                       for e in ep]
                train = [v + 0.4 * keep * (1 - math.exp(-e / 3)) for e, v in zip(ep, val, strict=True)]
                cells.append(Cell(size, keep, seed, max(val), train[-1], val[-1],
                                  train[-1] - val[-1], 1.2 - val[-1], ep, train, val))
    return cells


@pytest.fixture(scope="module")
def summary() -> AblationSummary:
    return summarize(synthetic_cells(), rng=np.random.default_rng(0), n_resamples=200)


def assert_png(path: Path, out: Path) -> None:
    assert path == out and path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_learning_curves(summary: AblationSummary, tmp_path: Path) -> None:
    fig = plots.learning_curves_figure(summary)
    assert len(fig.axes) == len(SIZES)
    for ax, size in zip(fig.axes, SIZES, strict=True):
        assert len(ax.lines) == 2 * len(KEEPS)  # train + val per keep_prob
        assert f"{size:,}" in ax.get_title()
        solid = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
        val_means = sorted(ln.get_ydata()[-1] for ln in solid)
        expected = sorted(summary.cells[(size, k)].val_curve.mean[-1] * 100 for k in KEEPS)
        assert val_means == pytest.approx(expected)
    out = tmp_path / "curves.png"
    assert_png(plots.plot_learning_curves(summary, out), out)


def test_learning_curves_tick_whole_epochs() -> None:
    # 15 epochs: matplotlib's default locator would put ticks at 2.5, 7.5, 12.5.
    fig = plots.learning_curves_figure(summarize(synthetic_cells(seeds=2, epochs=15), n_resamples=50,
                                                 rng=np.random.default_rng(0)))
    FigureCanvasAgg(fig).draw()  # ticks exist once drawn
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks), ticks


def test_gap_vs_keep_prob(summary: AblationSummary, tmp_path: Path) -> None:
    fig = plots.gap_figure(summary)
    (ax,) = fig.axes
    assert len(ax.containers) == len(SIZES)
    line = ax.containers[0].lines[0]
    assert list(line.get_xdata()) == sorted(KEEPS)
    expected = [summary.cells[(SIZES[0], k)].intervals["gap"].mean * 100 for k in sorted(KEEPS)]
    assert line.get_ydata() == pytest.approx(expected)
    out = tmp_path / "sub" / "gap.png"  # missing folders are created
    assert_png(plots.plot_gap_vs_keep_prob(summary, out), out)


def test_benefit_vs_size(summary: AblationSummary, tmp_path: Path) -> None:
    fig = plots.benefit_figure(summary)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert len(ax.containers) == len(KEEPS) - 1 + 1  # each dropout keep + the post-hoc best
    best = ax.containers[-1].lines[0].get_ydata()
    for i, size in enumerate(SIZES):
        diffs = [summary.comparisons[(size, k)].results["best_val_acc"].mean_diff
                 for k in KEEPS[1:]]
        assert best[i] == pytest.approx(max(diffs) * 100)
    out = tmp_path / "benefit.png"
    assert_png(plots.plot_benefit_vs_size(summary, out), out)


def _importances(empty_gap: bool) -> dict[str, dict[str, ImportanceResult]]:
    params = ("depth", "keep_prob", "noise")
    full = {"keep_prob": 0.8, "depth": 0.15, "noise": 0.05}
    out = {}
    for target in ("value", "gap"):
        out[target] = {
            ev: ImportanceResult(target, ev, {} if empty_gap and target == "gap" else full, 30,
                                 params, "fewer than 5 trials" if empty_gap else "")
            for ev in ("ped_anova", "fanova")
        }
    return out


def test_importances(tmp_path: Path) -> None:
    fig = plots.importance_figure(_importances(empty_gap=False))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.patches) == 2 * 3  # 2 evaluators x 3 params
        widths = sorted(p.get_width() for p in ax.patches)
        assert widths[-1] == pytest.approx(0.8)
        bold = [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
        assert bold == ["keep_prob"]
    fig = plots.importance_figure(_importances(empty_gap=True))
    gap_ax = fig.axes[1]
    assert len(gap_ax.patches) == 0
    assert any("fewer than 5 trials" in t.get_text() for t in gap_ax.texts)
    out = tmp_path / "imp.png"
    assert_png(plots.plot_importances(_importances(empty_gap=True), out), out)


def test_sweep_scatter(tmp_path: Path) -> None:
    points = [TrendPoint(i, 0.2 + 0.08 * i, 0.5 + 0.02 * i, 0.1 * i) for i in range(10)]
    points.append(TrendPoint(10, 0.95, 0.75, math.nan))  # a trial without a gap attr
    fig = plots.trend_figure(points)
    value_ax, gap_ax = fig.axes
    assert len(value_ax.collections[0].get_offsets()) == 11
    assert len(gap_ax.collections[0].get_offsets()) == 10
    assert "+1.00" in value_ax.get_title()
    out = tmp_path / "trend.png"
    assert_png(plots.plot_sweep_scatter(points, out), out)
    empty = plots.trend_figure([])
    assert all(len(ax.collections) == 0 for ax in empty.axes)


def test_single_seed_summary_plots_without_intervals(tmp_path: Path) -> None:
    summ = summarize(synthetic_cells(seeds=1), rng=np.random.default_rng(0), n_resamples=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in (plots.plot_learning_curves, plots.plot_gap_vs_keep_prob,
                   plots.plot_benefit_vs_size):
            out = tmp_path / f"{fn.__name__}.png"
            assert fn(summ, out).stat().st_size > 10_000


def test_bad_input_is_named(summary: AblationSummary, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path"):
        plots.plot_gap_vs_keep_prob(summary, tmp_path / "gap.svg")
    acc_only = summarize(synthetic_cells(2, 3), metrics=("val_loss",),
                         rng=np.random.default_rng(0), n_resamples=20)
    with pytest.raises(ValueError, match="'gap'"):
        plots.gap_figure(acc_only)
    with pytest.raises(ValueError, match="'best_val_acc'"):
        plots.benefit_figure(acc_only)


def test_plotting_never_imports_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_plots import synthetic_cells\n"
        "from sweep.reporting import figures as plots\nfrom sweep.analysis import stats\n"
        "s = stats.summarize(synthetic_cells(2, 3), rng=np.random.default_rng(0), n_resamples=20)\n"
        f"plots.plot_learning_curves(s, {str(tmp_path / 'x.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
