"""Report figures as PNGs, drawn on standalone matplotlib Figures (no pyplot state).

Every figure has a ``*_figure(...) -> Figure`` builder (tests inspect it) and a
``plot_*(..., path) -> Path`` writer that renders it with the Agg canvas.
Accuracies and gaps are drawn in percentage points; bands and error bars are
the summary's confidence intervals (t-intervals, paired for differences).
Missing intervals (one seed) are simply not drawn.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.stats
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from sweep.analysis.stats import AblationSummary, Interval

if TYPE_CHECKING:  # importance.py needs optuna; plotting its output does not
    from sweep.analysis.factorial import FactorialSummary
    from sweep.analysis.importance import ImportanceResult, TrendPoint

__all__ = [
    "HistoryPoint",
    "benefit_by_level_figure",
    "benefit_figure",
    "gap_figure",
    "history_figure",
    "importance_figure",
    "learning_curves_figure",
    "plot_benefit_by_level",
    "plot_benefit_vs_size",
    "plot_gap_vs_keep_prob",
    "plot_history",
    "plot_importances",
    "plot_learning_curves",
    "plot_sweep_scatter",
    "save_png",
    "trend_figure",
]

_PTS = 100.0  # fractions -> percentage points
_DPI = 110


def save_png(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` with the Agg canvas to ``path`` (a .png; parent folders are created)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches itself to fig: rendering never goes through pyplot
    fig.savefig(path, dpi=_DPI)
    return path


def _keep_colors(keeps: Sequence[float], baseline: float) -> dict[float, tuple[float, float, float, float]]:
    """Baseline in black, other keep_probs along viridis (low keep = dark)."""
    others = sorted(k for k in keeps if k != baseline)
    cmap = colormaps["viridis"]
    colors: dict[float, tuple[float, float, float, float]] = {baseline: (0.0, 0.0, 0.0, 1.0)}
    for i, k in enumerate(others):
        colors[k] = cmap(0.1 + 0.75 * i / max(1, len(others) - 1))
    return colors


def _keep_label(keep: float, baseline: float) -> str:
    return f"keep {keep:g} (no dropout)" if keep == baseline == 1.0 else f"keep {keep:g}"


def _yerr(ivs: Sequence[Interval]) -> np.ndarray:
    """(2, k) error-bar extents in points; NaN (not drawn) where there is no interval."""
    lo = [(iv.mean - iv.low) * _PTS for iv in ivs]
    hi = [(iv.high - iv.mean) * _PTS for iv in ivs]
    return np.array([lo, hi], dtype=float)


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes,
            fontsize=9, color="0.35")


def learning_curves_figure(summary: AblationSummary) -> Figure:
    """Mean +- CI accuracy per epoch: one panel per size, one color per keep_prob.

    Validation solid with its band, training dashed with a fainter band.
    Each panel holds 2 lines per keep_prob present at that size.
    """
    sizes = summary.sizes
    fig = Figure(figsize=(4.2 * len(sizes), 3.6), layout="constrained")
    axes = fig.subplots(1, len(sizes), sharey=True, squeeze=False)[0]
    colors = _keep_colors(summary.keep_probs, summary.baseline_keep)
    for ax, size in zip(axes, sizes, strict=True):
        for keep in summary.keep_probs:
            cell = summary.cells.get((size, keep))
            if cell is None:
                continue
            color = colors[keep]
            for band, style, alpha in ((cell.val_curve, "-", 0.2), (cell.train_curve, "--", 0.08)):
                ax.plot(band.epochs, band.mean * _PTS, style, color=color)
                ax.fill_between(band.epochs, band.low * _PTS, band.high * _PTS,
                                color=color, alpha=alpha, linewidth=0)
        n = {summary.cells[k].train_curve.n for k in summary.cells if k[0] == size}
        ax.set_title(f"{size:,} training examples ({'/'.join(map(str, sorted(n)))} seeds)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 2.5 ticks
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    handles = [Line2D([], [], color=colors[k], label=_keep_label(k, summary.baseline_keep))
               for k in summary.keep_probs]
    handles += [Line2D([], [], color="0.4", ls="-", label="validation"),
                Line2D([], [], color="0.4", ls="--", label="training")]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    fig.suptitle(f"Learning curves: mean ± {summary.confidence:.0%} CI over seeds")
    return fig


def plot_learning_curves(summary: AblationSummary, path: str | Path) -> Path:
    """Write :func:`learning_curves_figure` to ``path`` (PNG) and return the path."""
    return save_png(learning_curves_figure(summary), path)


def gap_figure(summary: AblationSummary) -> Figure:
    """Final train-val gap against keep_prob: one error-bar line per size (``ax.containers``)."""
    if "gap" not in summary.metrics:
        raise ValueError("summary.metrics must include 'gap' for the gap plot")
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["plasma"]
    for i, size in enumerate(summary.sizes):
        keeps = sorted(k for k in summary.keep_probs if (size, k) in summary.cells)
        ivs = [summary.cells[(size, k)].intervals["gap"] for k in keeps]
        ax.errorbar(keeps, [iv.mean * _PTS for iv in ivs], yerr=_yerr(ivs), marker="o",
                    capsize=3, color=cmap(0.85 * i / max(1, len(summary.sizes) - 1)),
                    label=f"{size:,} examples")
    ax.set_xlabel("keep_prob (1 = no dropout)")
    ax.set_ylabel("train − val accuracy gap (points)")
    ax.set_title(f"Overfitting gap vs keep_prob (mean ± {summary.confidence:.0%} CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_gap_vs_keep_prob(summary: AblationSummary, path: str | Path) -> Path:
    """Write :func:`gap_figure` to ``path`` (PNG) and return the path."""
    return save_png(gap_figure(summary), path)


def _best_keep(summary: AblationSummary, size: int) -> float | None:
    """Non-baseline keep_prob with the highest mean paired best_val_acc difference."""
    comps = [c for (s, _), c in summary.comparisons.items() if s == size]
    if not comps:
        return None
    return max(comps, key=lambda c: c.results["best_val_acc"].mean_diff).keep_prob


def benefit_figure(summary: AblationSummary) -> Figure:
    """Dropout's benefit vs training-set size (log x), paired CIs.

    One error-bar series per non-baseline keep_prob (best val acc minus the
    baseline's, same seeds), plus the per-size best keep_prob in black. The
    "best" is picked after looking, so its CI is optimistic. Slight x offsets
    keep the error bars apart.
    """
    if "best_val_acc" not in summary.metrics:
        raise ValueError("summary.metrics must include 'best_val_acc' for the benefit plot")
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.axhline(0.0, color="0.5", lw=1)
    keeps = sorted({k for (_, k) in summary.comparisons}, reverse=True)
    colors = _keep_colors(summary.keep_probs, summary.baseline_keep)
    series = [(k, colors[k], f"keep {k:g}") for k in keeps]
    best = {s: _best_keep(summary, s) for s in summary.sizes}
    # "best" is the best DROPOUT setting (keep < 1) against none, picked post hoc.
    for j, (keep, color, label) in enumerate([*series, (None, "black", "best dropout keep (post hoc)")]):
        wanted = [(size, best[size] if keep is None else keep) for size in summary.sizes]
        pts = [(size, k) for size, k in wanted if k is not None and (size, k) in summary.comparisons]
        if not pts:
            continue
        xs = [size * 1.04 ** (j - len(series) / 2) for size, _ in pts]
        ivs = [summary.comparisons[p].results["best_val_acc"].diff for p in pts]
        ax.errorbar(xs, [iv.mean * _PTS for iv in ivs], yerr=_yerr(ivs), marker="o", capsize=3,
                    color=color, label=label, lw=2.2 if keep is None else 1.2,
                    alpha=1.0 if keep is None else 0.75)
        if keep is None:
            for x, (_, k), iv in zip(xs, pts, ivs, strict=True):
                ax.annotate(f"{k:g}", (x, iv.mean * _PTS), textcoords="offset points",
                            xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(summary.sizes) / 1.6, max(summary.sizes) * 1.6)  # one size would sit on the axis edges
    ax.set_xticks(list(summary.sizes), [f"{s:,}" for s in summary.sizes])
    ax.minorticks_off()
    ax.set_xlabel("training-set size (examples, log scale)")
    ax.set_ylabel(f"best val acc − keep {summary.baseline_keep:g} (points)")
    ax.set_title(f"Dropout's benefit vs data size (paired mean ± {summary.confidence:.0%} CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_benefit_vs_size(summary: AblationSummary, path: str | Path) -> Path:
    """Write :func:`benefit_figure` to ``path`` (PNG) and return the path."""
    return save_png(benefit_figure(summary), path)


def benefit_by_level_figure(fs: FactorialSummary, labels: Mapping[tuple, str] | None = None) -> Figure:
    """Dropout's benefit against keep_prob: one panel per size, one line per level with its interval band.

    The benefit is the paired difference of best validation accuracy against
    the baseline keep_prob (0 at the baseline itself); the band is each
    comparison's t-interval (not drawn where there is none). Each panel holds
    one line (``ax.lines`` after the zero line) and one band per level.

    Args:
        fs: output of :func:`sweep.analysis.factorial.summarize_factorial`.
        labels: legend text per level (default ``name=value, ...``).
    """
    sizes = sorted({s for summ in fs.per_level.values() for s in summ.sizes})
    fig = Figure(figsize=(4.4 * len(sizes) + 1.8, 3.8), layout="constrained")
    axes = fig.subplots(1, len(sizes), sharey=True, squeeze=False)[0]
    cmap = colormaps["tab10"]
    for ax, size in zip(axes, sizes, strict=True):
        ax.axhline(0.0, color="0.5", lw=1)
        for i, lv in enumerate(fs.levels):
            summ = fs.per_level[lv]
            keeps = sorted(k for (s, k) in summ.comparisons if s == size)
            if not keeps:
                continue
            ivs = [summ.comparisons[(size, k)].results["best_val_acc"].diff for k in keeps]
            xs = [*keeps, summ.baseline_keep]
            mean = np.array([iv.mean for iv in ivs] + [0.0]) * _PTS
            low = np.array([iv.low for iv in ivs] + [0.0]) * _PTS
            high = np.array([iv.high for iv in ivs] + [0.0]) * _PTS
            label = (labels or {}).get(lv) or ", ".join(f"{n}={v}" for n, v in lv)
            ax.plot(xs, mean, "o-", color=cmap(i % 10), label=label)
            ax.fill_between(xs, low, high, color=cmap(i % 10), alpha=0.15, linewidth=0)
        ax.set_title(f"{size:,} training examples")
        ax.set_xlabel("keep_prob (1 = no dropout)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"best val acc − keep {fs.baseline_keep:g} (points)")
    handles, texts = axes[0].get_legend_handles_labels()
    fig.legend(handles, texts, loc="outside right center", fontsize=8)
    fig.suptitle(f"Dropout's benefit by level (paired mean ± {fs.confidence:.0%} CI)")
    return fig


def plot_benefit_by_level(fs: FactorialSummary, path: str | Path) -> Path:
    """Write :func:`benefit_by_level_figure` to ``path`` (PNG) and return the path."""
    return save_png(benefit_by_level_figure(fs), path)


_TARGET_TITLES = {"value": "validation accuracy", "gap": "train − val gap"}
_IMPORTANCE_PANEL_INCHES = 5.0
_NOTE_CHARS_PER_INCH = 12  # 7-pt DejaVu Sans averages ~4.5 pt a character; ~ 72 / 4.5 less the y-labels' share


def importance_figure(
    importances: Mapping[str, Mapping[str, ImportanceResult]], param: str = "keep_prob"
) -> Figure:
    """Horizontal grouped bars per target panel (one bar per evaluator per param).

    Args:
        importances: ``keep_prob_importance`` output, ``{target: {evaluator: result}}``.
        param: parameter whose label is emphasised.
    """
    targets = list(importances)
    fig = Figure(figsize=(_IMPORTANCE_PANEL_INCHES * max(1, len(targets)), 3.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(targets)), squeeze=False)[0]
    palette = ["tab:blue", "tab:orange", "tab:green"]
    for ax, target in zip(axes, targets, strict=False):
        results = importances[target]
        names = sorted({p for r in results.values() for p in r.importances},
                       key=lambda p: -sum(r.importances.get(p, 0.0) for r in results.values()))
        notes = [f"{ev}: {r.note}" for ev, r in results.items() if r.note]
        ax.set_title(f"importance for {_TARGET_TITLES.get(target, target)}")
        if not names:
            _note(ax, "\n".join(notes) or "no importances")
            ax.set_axis_off()
            continue
        y = np.arange(len(names))[::-1]
        height = 0.8 / max(1, len(results))
        for i, (ev, res) in enumerate(results.items()):
            if not res.importances:  # explained in the notes under the panel
                continue
            n = res.n_trials
            ax.barh(y + 0.4 - height * (i + 0.5), [res.importances.get(p, 0.0) for p in names],
                    height=height, color=palette[i % len(palette)], label=f"{ev} ({n} trials)")
        ax.set_yticks(y, names)
        for label in ax.get_yticklabels():
            if label.get_text() == param:
                label.set_fontweight("bold")
        ax.set_xlabel("share of importance")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=8, loc="lower right")
        if notes:
            # Wrapped here to the panel's width: matplotlib's wrap=True wraps at the FIGURE's edge,
            # so a left panel's note ran across the right panel and a long word off the edge.
            width = int(_NOTE_CHARS_PER_INCH * _IMPORTANCE_PANEL_INCHES)
            text = "\n".join(textwrap.fill(n, width, subsequent_indent="  ") for n in notes)
            ax.text(0.0, -0.25, text, transform=ax.transAxes, fontsize=7, va="top", color="0.35")
    return fig


def plot_importances(
    importances: Mapping[str, Mapping[str, ImportanceResult]],
    path: str | Path,
    param: str = "keep_prob",
) -> Path:
    """Write :func:`importance_figure` to ``path`` (PNG) and return the path."""
    return save_png(importance_figure(importances, param), path)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(scipy.stats.spearmanr(x, y).statistic)


def trend_figure(points: Sequence[TrendPoint]) -> Figure:
    """Validation accuracy and gap against keep_prob over completed trials: two panels.

    Each panel is one scatter (``ax.collections``), titled with Spearman's rho.
    """
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    keep = np.array([p.keep_prob for p in points], dtype=float)
    for ax, (attr, label) in zip(axes, (("value", "best validation accuracy (%)"),
                                        ("gap", "train − val gap (points)")), strict=True):
        y = np.array([getattr(p, attr) for p in points], dtype=float) * _PTS
        ok = np.isfinite(y)
        ax.set_xlabel("keep_prob (1 = no dropout)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if not ok.any():
            _note(ax, "no completed trials with this value")
            continue
        ax.scatter(keep[ok], y[ok], s=18, alpha=0.7)
        rho = _spearman(keep[ok], y[ok])
        rho_text = "n/a" if math.isnan(rho) else f"{rho:+.2f}"
        ax.set_title(f"{int(ok.sum())} trials, Spearman ρ = {rho_text}", fontsize=10)
    # "complete" (Optuna's state), not "finished": MLflow calls pruned trials' runs FINISHED too.
    fig.suptitle("Sweep: how the complete trials (pruned ones left out) move with keep_prob")
    return fig


def plot_sweep_scatter(points: Sequence[TrendPoint], path: str | Path) -> Path:
    """Write :func:`trend_figure` to ``path`` (PNG) and return the path."""
    return save_png(trend_figure(points), path)


@dataclass(frozen=True)
class HistoryPoint:
    """One complete or pruned trial of a sweep, for the history figure.

    Attributes:
        number: Optuna trial number.
        state: "COMPLETE" or "PRUNED".
        value: validation accuracy (fraction): a complete trial's value, a pruned
            trial's best reported value before it was stopped.
        minutes: when it ended, in minutes since the study's first trial started.
    """

    number: int
    state: str
    value: float
    minutes: float


def _best_so_far(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running maximum of `ys` in the order of `xs` (ties kept in input order)."""
    order = np.argsort(xs, kind="stable")
    return xs[order], np.maximum.accumulate(ys[order])


def history_figure(points: Sequence[HistoryPoint]) -> Figure:
    """The search's progress: validation accuracy against wall time and against trial number.

    Two panels, each with the complete trials (label "complete", dots), the pruned
    ones (label "pruned", crosses, at their best value before pruning) and the best
    validation accuracy so far over the complete trials (label "best so far", a step
    line), like optuna-dashboard's history plot. Accuracies in percentage points.
    """
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    complete = [p for p in points if p.state == "COMPLETE"]
    pruned = [p for p in points if p.state == "PRUNED"]
    for ax, attr, xlabel in ((axes[0], "minutes", "wall time since the first trial started (min)"),
                             (axes[1], "number", "trial number")):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if not complete and not pruned:
            _note(ax, "no complete or pruned trials yet")
            continue
        for group, marker, color, label in ((complete, "o", "tab:blue", "complete"),
                                            (pruned, "x", "tab:gray", "pruned")):
            if group:
                ax.scatter([getattr(p, attr) for p in group], [p.value * _PTS for p in group],
                           marker=marker, s=18, color=color, alpha=0.8, label=label)
        if complete:
            xs, best = _best_so_far(np.array([getattr(p, attr) for p in complete], dtype=float),
                                    np.array([p.value for p in complete], dtype=float))
            ax.step(xs, best * _PTS, where="post", color="tab:red", lw=1.8, label="best so far")
        if attr == "number":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("validation accuracy (%)")
    below = _clip_outliers(axes, [p.value * _PTS for p in points])
    axes[1].legend(fontsize=8, loc="lower right")
    title = f"Search progress: {len(complete)} complete, {len(pruned)} pruned trials"
    if below:
        shown = ", ".join(f"{v:.1f} %" for v in sorted(below))
        title += f"\n{len(below)} far below the rest, drawn as ▼ on the bottom edge ({shown})"
    fig.suptitle(title)
    return fig


def _clip_outliers(axes: Sequence[Axes], values: Sequence[float]) -> list[float]:
    """Bottom of the shared y-axis at the bulk of `values`; the far-low ones as ▼ on that edge.

    One diverged trial at chance level (10 %) otherwise stretches the axis down
    and squeezes every other trial into a sliver at the top. "Far below":
    under Q1 − 3·max(IQR, 1 point) (Tukey's far-out fence). Returns those values.
    """
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size < 4:
        return []
    q1, q3 = np.percentile(v, [25, 75])
    fence = q1 - 3.0 * max(q3 - q1, 1.0)
    far = v[v < fence]
    if far.size == 0:
        return []
    rest = v[v >= fence]
    pad = 0.05 * max(rest.max() - rest.min(), 1.0)
    bottom, top = rest.min() - 2 * pad, rest.max() + pad
    for ax in axes:
        ax.set_ylim(bottom, top)
    for ax, off in zip(axes, (0, 1), strict=True):
        xs = [np.asarray(c.get_offsets())[:, 0] for c in ax.collections]
        ys = [np.asarray(c.get_offsets())[:, 1] for c in ax.collections]
        if not xs:
            continue
        x, y = np.concatenate(xs), np.concatenate(ys)
        low = y < bottom
        ax.scatter(x[low], np.full(low.sum(), bottom + 0.5 * pad), marker="v", s=30, color="tab:purple",
                   clip_on=False, label="far below (value in title)" if off else None, zorder=3)
    return [float(x) for x in far]


def plot_history(points: Sequence[HistoryPoint], path: str | Path) -> Path:
    """Write :func:`history_figure` to ``path`` (PNG) and return the path."""
    return save_png(history_figure(points), path)
