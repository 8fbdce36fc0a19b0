"""The report of `sweep compare`: which regularizer won on the TEST split, by how much, at what cost.

``report.md`` (headline, per-arm table, every pairwise comparison, method) and two
figures: ``arms.png`` (test accuracy and train-test gap per arm, 95 % t-intervals
over the paired seeds) and ``curves.png`` (learning curves per arm: mean train and
validation accuracy per epoch with their bands; the test split is read once per
run, after training, so it has no curve). Accuracies in %, differences in points.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from sweep.analysis.arms import ArmComparison, CompareSummary
from sweep.analysis.intervals import Interval, mean_ci
from sweep.reporting.figures import save_png

__all__ = ["arms_figure", "curves_figure", "headline", "write_compare_report"]

_PTS = 100.0


def _pts(iv: Interval) -> str:
    if not math.isfinite(iv.mean):
        return "n/a"
    if not iv.defined:
        return f"{iv.mean * _PTS:.1f}"
    return f"{iv.mean * _PTS:.1f} [{iv.low * _PTS:.1f}, {iv.high * _PTS:.1f}]"


def _diff(c: ArmComparison | None) -> str:
    if c is None:
        return ""
    d = c.result.diff
    if not d.defined:
        return f"{c.result.mean_diff * _PTS:+.1f}"
    return f"{d.mean * _PTS:+.1f} [{d.low * _PTS:+.1f}, {d.high * _PTS:+.1f}]"


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _strength(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "-"


def headline(s: CompareSummary) -> str:
    """One sentence: the winner, by how much over none, and against which arms the difference survives Holm."""
    m = len(s.test_pairs)
    w = s.arm(s.winner)
    vs_none = s.pair(s.winner, "none") if s.winner != "none" else None
    base = f"{s.winner} had the highest mean test accuracy, {w.test_acc.mean * _PTS:.1f} %"
    if vs_none is not None:
        base += f" ({_diff(vs_none)} points over none, {s.seeds} paired seeds)"
    if s.beaten and not s.tied:
        return base + f"; it beat every other arm after Holm over {m} comparisons."
    if s.beaten:
        return (base + f"; after Holm over {m} comparisons it beat {', '.join(s.beaten)}, "
                f"but not {', '.join(s.tied)} (no difference detected).")
    return base + f"; no difference from any other arm survives Holm over {m} comparisons, so no arm clearly won."


def arms_figure(s: CompareSummary) -> Figure:
    """Two panels: test accuracy per arm and train-test gap per arm (points, 95 % t-intervals)."""
    fig = Figure(figsize=(max(6.0, 1.1 * len(s.arms) + 2), 4.2))
    names = [a.name for a in s.arms]
    x = np.arange(len(names))
    for ax, metric, title in ((fig.add_subplot(1, 2, 1), "test_acc", "test accuracy (%)"),
                              (fig.add_subplot(1, 2, 2), "gap", "train − test gap (points)")):
        ivs = [getattr(a, metric) for a in s.arms]
        means = np.array([iv.mean for iv in ivs]) * _PTS
        err = np.array([[iv.mean - iv.low, iv.high - iv.mean] if iv.defined else [0.0, 0.0] for iv in ivs]).T * _PTS
        colors = ["0.55" if n == "none" else colormaps["tab10"](i % 10) for i, n in enumerate(names)]
        ax.bar(x, means, yerr=err, capsize=4, color=colors)
        if metric == "test_acc" and np.isfinite(means).any():
            lo = np.nanmin(means - err[0])
            ax.set_ylim(max(0.0, lo - 0.15 * (np.nanmax(means + err[1]) - lo + 1)), None)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"regularizers on the test split, {s.seeds} paired seeds (95 % t-intervals)")
    fig.tight_layout()
    return fig


def curves_figure(records: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> Figure:
    """Per arm: mean validation (solid) and training (dashed) accuracy per epoch, with 95 % bands."""
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, name in enumerate(arms):
        curves = [r["curve"] for r in records if r["arm"] == name and r.get("curve")]
        if not curves:
            continue
        color = "0.35" if name == "none" else colormaps["tab10"](i % 10)
        marker = "osD^v<>ph*"[i % 10]  # arms identical to none (a bound never reached) still show
        n_ep = min(len(c) for c in curves)
        for key, style in (("val_acc", "-"), ("train_acc", "--")):
            ivs = [mean_ci([c[e][key] for c in curves]) for e in range(n_ep)]
            ep = np.arange(1, n_ep + 1)
            ax.plot(ep, [iv.mean * _PTS for iv in ivs], style, color=color, marker=marker, markersize=5,
                    fillstyle="none", label=name if key == "val_acc" else None)
            if all(iv.defined for iv in ivs):
                ax.fill_between(ep, [iv.low * _PTS for iv in ivs], [iv.high * _PTS for iv in ivs],
                                color=color, alpha=0.12, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("learning curves per arm: validation (solid), training (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _arm_table(s: CompareSummary) -> list[str]:
    none_secs = s.arm("none").seconds.mean if any(a.name == "none" for a in s.arms) else math.nan
    gaps = {c.treated: c for c in s.gap_vs_none}
    rows = ["| arm | strength (chosen on validation) | test acc % [95 % CI] | vs none, points [CI] | Holm p (t) "
            "| train acc % | train − test gap, points [CI] | gap vs none [CI] | train s/run (x none) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for a in s.arms:
        c = s.pair(a.name, "none") if a.name != "none" else None
        g = gaps.get(a.name)
        ratio = a.seconds.mean / none_secs if none_secs and math.isfinite(none_secs) else math.nan
        failed = f" ({a.failed} diverged)" if a.failed else ""
        rows.append(f"| {a.name}{failed} | {_strength(a.strengths)} | {_pts(a.test_acc)} | {_diff(c)} | "
                    f"{_p(c.result.p_t_holm) if c else ''} | {_pts(a.train_acc)} | {_pts(a.gap)} | {_diff(g)} | "
                    f"{a.seconds.mean:.2f} ({ratio:.2f}) |")
    return rows


def _pairs_table(s: CompareSummary) -> list[str]:
    rows = ["| comparison | difference, points [95 % CI] | p (t) | Holm p (t) | p (Wilcoxon) | Holm p (Wilcoxon) "
            "| d_z | survives Holm |", "|---|---|---|---|---|---|---|---|"]
    for c in s.test_pairs:
        r = c.result
        rows.append(f"| {c.treated} − {c.control} | {_diff(c)} | {_p(r.p_t)} | {_p(r.p_t_holm)} | "
                    f"{_p(r.p_wilcoxon)} | {_p(r.p_wilcoxon_holm)} | {r.d_z:.2f} | "
                    f"{'yes' if c.significant else 'no'} |")
    return rows


def _gap_sentences(s: CompareSummary) -> list[str]:
    out = []
    for g in s.gap_vs_none:
        d = g.result.diff
        if g.result.n >= 2 and d.mean == 0 and d.low == d.high == 0:
            out.append(f"- {g.treated} left the train−test gap unchanged: identical to none on every seed "
                       "(its strength never changed training, e.g. a max-norm bound the weights never reached).")
            continue
        verb = "narrowed" if d.mean < 0 else "widened"
        sure = "survives Holm" if g.significant else "does not survive Holm"
        out.append(f"- {g.treated} {verb} the train−test gap by {abs(d.mean) * _PTS:.1f} points "
                   f"({_diff(g)}; {sure}).")
    return out


def write_compare_report(s: CompareSummary, records: Sequence[Mapping[str, Any]], setup: Mapping[str, Any],
                         folder: Path) -> Path:
    """report.md and figures/{arms,curves}.png in `folder` (report.md written last, atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_png(arms_figure(s), folder / "figures" / "arms.png")
    save_png(curves_figure(records, [a.name for a in s.arms]), folder / "figures" / "curves.png")
    size = "the whole training split" if setup.get("size") is None else f"{setup['size']} training rows"
    lines = [
        f"# Regularizers compared on {setup.get('dataset')}: test accuracy, paired seeds", "",
        f"**In short:** {headline(s)}", "",
        f"Each arm's strength was chosen by its own search of {setup.get('budget')} trials on the **validation** "
        f"set (TPE over that arm's knob only; `--fix` arms: {', '.join(setup.get('fixed') or []) or 'none'}); "
        f"then every arm was re-trained on the same {s.seeds} seeds (seed k: the same initial weights, minibatch "
        f"order and training rows in every arm) on {size}, and its best-validation-epoch weights were evaluated "
        "once on the **test** split. Every number below is on the test split; the gap is training accuracy "
        "(the same weights on their own training rows) minus test accuracy.", "",
        "## Arms", "", *_arm_table(s), "",
        "## Train−test gap against none", "", *_gap_sentences(s), "",
        f"## Every pair of arms (test accuracy; Holm over all {len(s.test_pairs)} comparisons)", "",
        *_pairs_table(s), "",
        "![test accuracy and gap per arm](figures/arms.png)", "",
        "![learning curves per arm](figures/curves.png)", "",
        "## Setup", "",
        f"- base configuration (every regularizer off, then each arm's own): `{dict(setup.get('base') or {})}`",
        f"- training subsets: {setup.get('subsets')}; seeds: {s.seeds}; training time: wall seconds of one "
        "run's training (the ratio is against none's), measured as the runs ran: other load on the machine "
        "counts in it.",
    ]
    path = folder / "report.md"
    tmp = folder / f".report.md.{os.getpid()}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
