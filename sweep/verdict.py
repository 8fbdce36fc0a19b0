"""Plain-language verdict and markdown tables from an :class:`~sweep.stats.AblationSummary`.

Number formats (stable, so tests and readers can parse them back):
    * accuracy differences and gaps in percentage points, one decimal, signed
      with "+" or the minus sign "−" (U+2212), e.g. "+1.2 points", "−38.0 points";
    * absolute accuracies as "45.3 %";
    * p-values with two significant digits ("p = 0.11", "p = 0.0042"),
      "p < 0.001" below that; with one seed the clause reads
      "(1 seed: no interval or test)" instead;
    * tables print "n/a" for anything undefined.

"No detectable effect" means the paired 95 % t-interval of the difference
covers zero. Intervals are per comparison; p-values are Holm-adjusted over
the grid, so a difference can exclude zero yet not survive Holm (said so).
"""

from __future__ import annotations

import math

from sweep.stats import AblationSummary, Comparison, Interval, PairedResult

__all__ = ["OVERVIEW_FROM", "fmt_p", "fmt_points", "overview", "summary_markdown_tables", "verdict"]

#: A verdict over more paired comparisons than this opens with the short overview.
OVERVIEW_FROM = 5

MINUS = "\u2212"
_LABELS = {
    "best_val_acc": "best val acc",
    "final_train_acc": "final train acc",
    "final_val_acc": "final val acc",
    "gap": "train−val gap",
    "val_loss": "val loss",
}
_ACCURACY_LIKE = {"best_val_acc", "final_train_acc", "final_val_acc", "gap"}


def _num(x: float, digits: int, signed: bool = False) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return ("+" if signed and x > 0 else "" if x > 0 else MINUS) + "∞"
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return text.replace("-", MINUS)


def _effect(x: float) -> str:
    """Effect size: two decimals, or 3 significant digits when |x| >= 1000."""
    if math.isfinite(x) and abs(x) >= 1000:
        return f"{x:+.3g}".replace("-", MINUS)
    return _num(x, 2, signed=True)


def fmt_points(fraction: float, signed: bool = True) -> str:
    """A fraction as percentage points, one decimal: 0.012 -> "+1.2", -0.38 -> "−38.0"."""
    return _num(fraction * 100.0, 1, signed)


def fmt_p(p: float) -> str:
    """A p-value as text: "0.11", "0.0042", "<0.001", "1", "n/a"."""
    if math.isnan(p):
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:.2g}"


def _p_phrase(p: float) -> str:
    text = fmt_p(p)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def _ci(iv: Interval, scale: float = 100.0, digits: int = 1) -> str:
    if not iv.defined:
        return "n/a"
    return f"{_num(iv.low * scale, digits)} to {_num(iv.high * scale, digits)}"


def _baseline_name(summary: AblationSummary) -> str:
    b = summary.baseline_keep
    return "no dropout" if b == 1.0 else f"keep {b:g}"


def _judgement(metric: str, res: PairedResult, alpha: float = 0.05) -> str:
    """Plain words for one paired difference, decided by its CI (see module doc)."""
    if not res.diff.defined:
        return f"cannot be judged from {_seeds(res.n)}"
    if res.diff.covers(0.0):
        return "no detectable effect"
    up = res.diff.low > 0
    if metric == "gap":
        words = "larger with dropout" if up else "smaller with dropout"
    else:
        words = "higher with dropout" if up else "lower with dropout"
    if not res.p_t_holm <= alpha:
        words += ", but not significant after Holm correction"
    return words


def _conf(summary: AblationSummary) -> str:
    return f"{summary.confidence:.0%}".replace("%", " %")


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _effect_clause(
    summary: AblationSummary, metric: str, noun: str, res: PairedResult, with_seeds: bool
) -> str:
    if not res.diff.defined:
        return f"{noun} {fmt_points(res.mean_diff)} points ({_seeds(res.n)}: no interval or test)"
    seeds = f", {_seeds(res.n)}" if with_seeds else ""
    return (
        f"{noun} {fmt_points(res.mean_diff)} points ({_conf(summary)} CI {_ci(res.diff)}, "
        f"{_p_phrase(res.p_t_holm)} Holm-adjusted{seeds}), {_judgement(metric, res)}"
    )


def _comparison_sentence(summary: AblationSummary, comp: Comparison) -> str:
    parts = []
    for metric, noun in (("best_val_acc", "validation accuracy"), ("gap", "train−val gap")):
        if metric in comp.results:
            parts.append(_effect_clause(summary, metric, noun, comp.results[metric], not parts))
    head = (
        f"With {comp.size:,} training examples, keep {comp.keep_prob:g} vs "
        f"{_baseline_name(summary)}: "
    )
    return head + "; ".join(parts) + "."


def _best_sentence(summary: AblationSummary, size: int) -> str:
    """Names the keep_prob with the highest mean best val acc (ties go to the baseline)."""
    keeps = [k for k in summary.keep_probs if (size, k) in summary.cells]
    order = sorted(keeps, key=lambda k: (k != summary.baseline_keep, -k))

    def mean(k: float) -> float:
        m = summary.cells[(size, k)].intervals["best_val_acc"].mean
        return m if math.isfinite(m) else -math.inf

    best = max(order, key=mean)
    iv = summary.cells[(size, best)].intervals["best_val_acc"]
    value = f"{_num(iv.mean * 100, 1)} %"
    ci = f", {_conf(summary)} CI {_ci(iv)}" if iv.defined else ""
    if best == summary.baseline_keep:
        return (
            f"Best keep_prob: {best:g} ({_baseline_name(summary)}), "
            f"mean best validation accuracy {value}{ci}."
        )
    if (size, best) not in summary.comparisons:
        return (
            f"Best keep_prob: {best:g}, mean best validation accuracy {value}{ci}; "
            f"nothing to compare against (no keep {summary.baseline_keep:g} runs at this size)."
        )
    res = summary.comparisons[(size, best)].results["best_val_acc"]
    verdict = _judgement("best_val_acc", res)
    return (
        f"Best keep_prob: {best:g}, mean best validation accuracy {value}{ci}; "
        f"against {_baseline_name(summary)}: {verdict} (picked after looking, so optimistic)."
    )


def _caveat(summary: AblationSummary, size: int) -> str:
    n = min(len(c.seeds) for (s, _), c in summary.cells.items() if s == size)
    if n >= 3:
        return ""
    if n == 1:
        return (
            f"Caveat: a single seed at {size:,} examples, so no interval or test is possible; "
            "these numbers are anecdotes."
        )
    return (
        f"Caveat: only {n} seeds at {size:,} examples: intervals are very wide and the "
        "Wilcoxon test cannot reach p < 0.05; treat this as a hint, not a result."
    )


def _listed(found: list[tuple[str, PairedResult]], limit: int = 3) -> str:
    shown = [f"{where} ({fmt_points(res.mean_diff)})" for where, res in found[:limit]]
    more = len(found) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def overview(items: list[tuple[str, AblationSummary]], largest_interaction: str = "") -> list[str]:
    """At most five lines over the whole grid: where dropout helped, hurt, had no detectable effect.

    Judged on best validation accuracy by each comparison's interval (as the
    bullets below it), listing the largest effects first.

    Args:
        items: (level label, its summary) per level; label "" for an ablation without factors.
        largest_interaction: a line on the largest interaction, if any (written by the caller).
    """
    helped: list[tuple[str, PairedResult]] = []
    hurt: list[tuple[str, PairedResult]] = []
    none_, undefined, total = 0, 0, 0
    for label, summ in items:
        for (size, keep), comp in sorted(summ.comparisons.items()):
            res = comp.results["best_val_acc"]
            total += 1
            where = f"keep {keep:g} at {size:,} examples" + (f" with {label}" if label else "")
            if not res.diff.defined:
                undefined += 1
            elif res.diff.covers(0.0):
                none_ += 1
            else:
                (helped if res.diff.low > 0 else hurt).append((where, res))
    helped.sort(key=lambda x: -x[1].mean_diff)
    hurt.sort(key=lambda x: x[1].mean_diff)
    of = f"of {_comparisons(total)}"
    lines = [f"- Dropout helped (validation accuracy interval above 0) in {len(helped)} {of}"
             + (f": {_listed(helped)}." if helped else "."),
             f"- Dropout hurt (interval below 0) in {len(hurt)} {of}" + (f": {_listed(hurt)}." if hurt else "."),
             f"- No detectable effect (interval covers 0) in {none_} {of}"
             + (f"; {undefined} cannot be judged (one seed)." if undefined else ".")]
    if largest_interaction:
        lines.append(f"- {largest_interaction}")
    return lines


def verdict(summary: AblationSummary, *, opening: bool | None = None) -> str:
    """Plain-language paragraphs, one per training-set size, with the numbers filled in.

    Args:
        summary: output of :func:`sweep.stats.summarize`; must include the
            ``best_val_acc`` metric (``gap`` is reported when present).
        opening: open with the short :func:`overview`; None: when there are
            more than ``OVERVIEW_FROM - 1`` comparisons.

    Returns:
        Markdown-friendly text: (the overview,) a one-line reading guide, then per size the
        comparisons against the baseline, the best keep_prob and any caveat.
    """
    if "best_val_acc" not in summary.metrics:
        raise ValueError("summary.metrics must include 'best_val_acc' to write a verdict")
    conf = _conf(summary)
    if opening is None:
        opening = len(summary.comparisons) >= OVERVIEW_FROM
    guide = (
        f"Differences are paired by seed against {_baseline_name(summary)} "
        f"(keep {summary.baseline_keep:g}), with {conf} t-intervals; p-values are paired "
        f"t-tests, Holm-adjusted over the {_comparisons(summary.n_comparisons)} of each metric."
    )
    paragraphs = ["\n".join(overview([("", summary)])), guide] if opening else [guide]
    for size in summary.sizes:
        head = " ".join(s for s in (_best_sentence(summary, size), _caveat(summary, size)) if s)
        paragraphs.append(f"**{size:,} training examples.** {head}")
        items = [
            "- " + _comparison_sentence(summary, summary.comparisons[(size, k)])
            for k in summary.keep_probs
            if (size, k) in summary.comparisons
        ]
        if items:
            paragraphs.append("\n".join(items))
    if summary.notes:
        paragraphs.append("Notes: " + "; ".join(summary.notes) + ".")
    return "\n\n".join(paragraphs) + "\n"


def _scale(metric: str) -> tuple[float, int]:
    return (100.0, 1) if metric in _ACCURACY_LIKE else (1.0, 3)


def _mean_ci_cell(iv: Interval, metric: str) -> str:
    scale, digits = _scale(metric)
    mean = _num(iv.mean * scale, digits)
    if not iv.defined:
        return f"{mean} [n/a]"
    return f"{mean} [{_num(iv.low * scale, digits)}, {_num(iv.high * scale, digits)}]"


def _comparisons(n: int) -> str:
    return "1 comparison" if n == 1 else f"{n} comparisons"


def _wilcoxon_floor(summary: AblationSummary) -> str:
    """The smallest Wilcoxon p these pair counts allow, e.g. '0.0625 for 5 pairs'."""
    ns = sorted({c.results[m].n for c in summary.comparisons.values() for m in c.results if c.results[m].n > 0})
    if not ns:
        return "no pairs here"
    return ", ".join(f"{2 / 2**n:.3g} for {n} pairs" for n in ns)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def summary_markdown_tables(summary: AblationSummary) -> str:
    """Two markdown tables: per-cell means with CIs, and paired differences with tests.

    Accuracies and the gap are in percentage points, val loss in its own units.

    Args:
        summary: output of :func:`sweep.stats.summarize`.

    Returns:
        Markdown text (headings, tables and a footnote on the tests).
    """
    conf = _conf(summary)
    metrics = list(summary.metrics)
    unit = {"gap": "points", "val_loss": "nats"}
    units = {m: f"{_LABELS[m]} ({unit.get(m, '%')})" for m in metrics}
    has_boot = "best_val_acc" in metrics
    head = ["size", "keep_prob", "seeds"] + [units[m] for m in metrics]
    head += ["best val acc, bootstrap CI"] if has_boot else []
    lines = [f"### Per cell: mean [{conf} t-interval]", "", _row(head), _row(["---"] * len(head))]
    for size in summary.sizes:
        for keep in summary.keep_probs:
            cell = summary.cells.get((size, keep))
            if cell is None:
                continue
            row = [f"{size:,}", f"{keep:g}", str(len(cell.seeds))]
            row += [_mean_ci_cell(cell.intervals[m], m) for m in metrics]
            if has_boot:
                boot = cell.bootstrap["best_val_acc"]
                row.append(f"[{_ci(boot).replace(' to ', ', ')}]" if boot.defined else "[n/a]")
            lines.append(_row(row))

    head = ["size", "keep_prob", "metric", "pairs", "mean diff", f"{conf} CI", "p (t)",
            "p (t, Holm)", "p (Wilcoxon)", "p (Wilcoxon, Holm)", "d_z", "g_z"]
    lines += ["", f"### Paired differences vs keep_prob {summary.baseline_keep:g} "
              "(same seeds; treated − baseline)", "", _row(head), _row(["---"] * len(head))]
    for key in sorted(summary.comparisons, key=lambda k: (k[0], -k[1])):
        comp = summary.comparisons[key]
        for m in metrics:
            res = comp.results[m]
            scale, digits = _scale(m)
            ci = f"[{_num(res.diff.low * scale, digits)}, {_num(res.diff.high * scale, digits)}]"
            lines.append(_row([
                f"{comp.size:,}", f"{comp.keep_prob:g}", _LABELS[m], str(res.n),
                _num(res.mean_diff * scale, digits, signed=True), ci if res.diff.defined else "n/a",
                fmt_p(res.p_t), fmt_p(res.p_t_holm), fmt_p(res.p_wilcoxon),
                fmt_p(res.p_wilcoxon_holm), _effect(res.d_z), _effect(res.g_z),
            ]))
    lines += [
        "",
        f"Holm: over the {_comparisons(summary.n_comparisons)} of each metric, t and Wilcoxon "
        "separately. d_z = mean difference / sd of differences; g_z = d_z with Hedges' "
        "small-sample correction. With n pairs the smallest two-sided Wilcoxon p is 2/2^n "
        f"({_wilcoxon_floor(summary)}), so it cannot reach 0.05 below 6 seeds.",
        "",
    ]
    return "\n".join(lines)
