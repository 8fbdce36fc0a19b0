"""The sweep's figures as people read them (issue 18): axes not stretched by one bad trial,
footnotes inside the figure, Optuna's word for the trials drawn."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from sweep.analysis.importance import ImportanceResult, TrendPoint
from sweep.reporting import figures as plots


def history(bad: float | None) -> list[plots.HistoryPoint]:
    rng = np.random.default_rng(3)
    points = []
    for i in range(30):
        value = 0.93 + 0.04 * (1 - math.exp(-i / 8)) + rng.normal(0, 0.01)
        points.append(plots.HistoryPoint(i, "PRUNED" if i % 3 == 2 else "COMPLETE", min(value, 0.995), 0.7 * i))
    if bad is not None:
        points[7] = plots.HistoryPoint(7, "COMPLETE", bad, 4.9)
    return points


def test_one_diverged_trial_does_not_stretch_the_history_axis() -> None:
    fig = plots.history_figure(history(bad=0.101))
    for ax in fig.axes:
        bottom, top = ax.get_ylim()
        assert 85 < bottom < 91 and top < 100.5, (bottom, top)  # the bulk: ~91-99 %
        markers = ax.collections[-1].get_offsets()
        assert len(markers) == 1 and markers[0, 1] > bottom  # the bad trial, on the bottom edge
    assert "1 far below the rest" in fig._suptitle.get_text() and "10.1 %" in fig._suptitle.get_text()
    plain = plots.history_figure(history(bad=None))  # nothing far below: matplotlib's own limits, no markers
    assert "far below" not in plain._suptitle.get_text()
    assert all(len(ax.collections) == 2 for ax in plain.axes)


def test_importance_footnotes_stay_inside_their_panel() -> None:
    params = ["keep_prob", "learning_rate", "hidden_1"]
    long = ("3 completed trial(s) with a finite value: ped_anova needs at least 5 complete trials, "
            "and the rest were pruned or failed before reporting")
    imp = {t: {"ped_anova": ImportanceResult(t, "ped_anova", {}, 3, params, long),
               "fanova": ImportanceResult(t, "fanova", {"keep_prob": 0.2, "learning_rate": 0.5, "hidden_1": 0.3},
                                          3, params, "only 3 trials: importances are a rough hint")}
           for t in ("value", "gap")}
    fig = plots.importance_figure(imp)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width = fig.bbox.width
    left, right = fig.axes
    for ax in fig.axes:
        [note] = [t for t in ax.texts if "ped_anova" in t.get_text()]
        box = note.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0, (box, width)
    left_note = next(t for t in left.texts if "ped_anova" in t.get_text()).get_window_extent(renderer)
    assert left_note.x1 < right.get_window_extent(renderer).x0  # not running into the next panel


def test_the_trend_figure_says_complete_not_finished() -> None:
    fig = plots.trend_figure([TrendPoint(i, 0.3 + 0.07 * i, 0.9, 0.1) for i in range(5)])
    title = fig._suptitle.get_text()
    assert "complete trials" in title and "finished" not in title
