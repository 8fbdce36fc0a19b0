"""Plain-language verdict and markdown tables from an :class:`~sweep.analysis.stats.AblationSummary`.

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
The headline ("In short ...") and the overview's helped/hurt counts take only
differences that do both (interval excludes 0, Holm-adjusted p <= ALPHA) and
name every one; effect sizes of differences with no variance read "no variance".
"""

from __future__ import annotations

import math

from sweep.analysis.stats import AblationSummary, Comparison, Interval, PairedResult

__all__ = ["OVERVIEW_FROM", "fmt_p", "fmt_points", "headline", "overview", "summary_markdown_tables",
           "sweep_baseline_note", "verdict"]

#: A verdict over more paired comparisons than this opens with the short overview.
OVERVIEW_FROM = 5

MINUS = "\u2212"
NO_VARIANCE = "no variance"
#: A difference counts in the headline only if its interval excludes 0 AND its Holm-adjusted p is at most this.
ALPHA = 0.05
_LABELS = {
    "best_val_acc": "best val acc",
    "final_train_acc": "final train acc",
    "final_val_acc": "final val acc",
    "gap": "train−val gap",  # final train acc − final val acc
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
    """Effect size: two decimals, 3 significant digits when |x| >= 1000, "no variance" when infinite.

    d_z is infinite when every seed gave the same non-zero difference (sd 0):
    a ratio over nothing, not an effect "infinitely" large.
    """
    if math.isinf(x):
        return NO_VARIANCE
    if abs(x) >= 1000:
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
    if math.isinf(res.d_z):  # sd of the differences 0: the interval is a point and t's p is 0 by arithmetic
        return (f"{noun} {fmt_points(res.mean_diff)} points on every one of {_seeds(res.n)} ({NO_VARIANCE}: "
                f"no interval, and the t-test's {_p_phrase(res.p_t_holm)} Holm-adjusted says nothing more), "
                f"{_judgement(metric, res)}")
    return (
        f"{noun} {fmt_points(res.mean_diff)} points ({_conf(summary)} CI {_ci(res.diff)}, "
        f"{_p_phrase(res.p_t_holm)} Holm-adjusted{seeds}), {_judgement(metric, res)}"
    )


def _comparison_sentence(summary: AblationSummary, comp: Comparison) -> str:
    parts: list[str] = []
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


def _survives(res: PairedResult) -> bool:
    """The difference counts as found: interval excludes 0 and it survives the Holm correction."""
    return res.diff.defined and not res.diff.covers(0.0) and res.p_t_holm <= ALPHA


def _where(size: int, keep: float, label: str) -> str:
    return f"keep {keep:g} at {size:,} examples" + (f" with {label}" if label else "")


def _listed(found: list[tuple[str, PairedResult]]) -> str:
    """Every case, largest effect first: 'keep 0.25 at 100 examples (−5.3), keep 0.5 at 100 examples (−2.1)'."""
    return ", ".join(f"{where} ({fmt_points(res.mean_diff)})" for where, res in found)


class _Tally:
    """One metric's comparisons over a whole grid, sorted into what a headline may count."""

    def __init__(self, items: list[tuple[str, AblationSummary]], metric: str) -> None:
        self.up: list[tuple[str, PairedResult]] = []  # survives Holm, treated above baseline
        self.down: list[tuple[str, PairedResult]] = []  # survives Holm, treated below baseline
        self.unadjusted: list[tuple[str, PairedResult]] = []  # interval excludes 0, Holm p > ALPHA
        self.none = self.undefined = self.total = 0
        for label, summ in items:
            for (size, keep), comp in sorted(summ.comparisons.items()):
                res = comp.results.get(metric)
                if res is None:
                    continue
                self.total += 1
                where = _where(size, keep, label)
                if not res.diff.defined:
                    self.undefined += 1
                elif res.diff.covers(0.0):
                    self.none += 1
                elif _survives(res):
                    (self.up if res.diff.low > 0 else self.down).append((where, res))
                else:
                    self.unadjusted.append((where, res))
        self.up.sort(key=lambda x: -x[1].mean_diff)
        self.down.sort(key=lambda x: x[1].mean_diff)
        self.unadjusted.sort(key=lambda x: -abs(x[1].mean_diff))


def _by_points(found: list[tuple[str, PairedResult]], verb: str) -> str:
    """'keep 0.25 hurt it by 5.3 points at 100 examples and keep 0.5 by 2.1 points at 100 examples'."""
    parts = []
    for i, (where, res) in enumerate(found):
        keep, at = where.split(" at ", 1)
        amount = f"by {_num(abs(res.mean_diff) * 100, 1)} points"
        parts.append(f"{keep} {verb} {amount} at {at}" if i == 0 else f"{keep} {amount} at {at}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def headline(items: list[tuple[str, AblationSummary]]) -> str:
    """The answer in one sentence (accuracy and gap), plus one on a missing keep 1.0 baseline.

    Counts only differences that survive the Holm correction the verdict
    reports (interval excludes 0 and Holm-adjusted p <= ALPHA), and names
    every one of them. E.g. "In short: dropout never helped validation
    accuracy; keep 0.25 hurt it by 5.3 points at 100 examples; the train−val
    gap did not shrink anywhere (4 comparisons, counting only differences that
    survive Holm correction)."

    Args:
        items: (level label, its summary) per level; label "" for an ablation without factors.
    """
    acc, gap = _Tally(items, "best_val_acc"), _Tally(items, "gap")
    notes = _baseline_notes(items)
    if acc.total == 0:
        return "In short: nothing here answers whether dropout helps: no comparison was possible. " + " ".join(notes)
    if acc.up:
        parts = [f"dropout helped validation accuracy in {len(acc.up)} "
                 f"({_by_points(acc.up, 'raised it')})"]
    else:
        parts = ["dropout never helped validation accuracy"]
    parts.append(_by_points(acc.down, "hurt it") if acc.down else "it never hurt it either" if not acc.up
                 else "it never hurt it")
    if gap.total:
        if gap.down and len(gap.down) == gap.total:
            g = f"the train−val gap shrank in every one ({_span(gap.down)})"
        elif gap.down:
            g = f"the train−val gap shrank in {len(gap.down)} of them ({_by_points(gap.down, 'narrowed it')})"
        else:
            g = "the train−val gap did not shrink anywhere"
        if gap.up:
            g += f" and grew in {len(gap.up)} ({_by_points(gap.up, 'widened it')})"
        parts.append(g)
    undecided = f"; {acc.undefined} cannot be judged (one seed)" if acc.undefined else ""
    sentence = (f"In short ({_comparisons(acc.total)}, counting only differences that survive Holm "
                f"correction{undecided}): {'; '.join(parts)}.")
    return " ".join([sentence, *notes])


def _baseline_notes(items: list[tuple[str, AblationSummary]]) -> list[str]:
    """Sentences for a grid that never ran keep 1.0 (no dropout), or not at every size."""
    notes = []
    for label, summ in items:
        within = f" with {label}" if label else ""
        present = {s for (s, k) in summ.cells if abs(k - 1.0) <= 1e-9}
        if summ.baseline_keep != 1.0:
            notes.append(f"This ablation{within} compared against keep {summ.baseline_keep:g}, never against "
                         "keep 1.0 (no dropout)" + (": it says whether more dropout than that helps, "
                                                    "not whether dropout helps." if not present else
                                                    f" (keep 1.0 ran, at {_sizes(sorted(present))} examples, "
                                                    "but as a treatment)."))
            continue
        missing = [s for s in summ.sizes if s not in present]
        if missing:
            notes.append(f"No keep 1.0 (no dropout) runs at {_sizes(missing)} examples{within}: "
                         "nothing there was compared.")
    return notes


def _span(found: list[tuple[str, PairedResult]]) -> str:
    """'by 4.1 to 20.0 points' (or 'by 20.0 points'): the range of the absolute mean differences."""
    lo, hi = (_num(f(abs(r.mean_diff) for _, r in found) * 100, 1) for f in (min, max))
    return f"by {lo} points" if lo == hi else f"by {lo} to {hi} points"


def _sizes(sizes: list[int]) -> str:
    text = [f"{s:,}" for s in sizes]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def sweep_baseline_note(keep_probs: list[float]) -> str:
    """A sentence when no trial of a sweep ran keep_prob 1.0 (its importance and trend never saw no dropout)."""
    ks = [k for k in keep_probs if math.isfinite(k)]
    if not ks or any(abs(k - 1.0) <= 1e-9 for k in ks):
        return ""
    return (f"No trial of this sweep ran keep_prob 1.0 (no dropout): its {len(ks)} trials span keep "
            f"{min(ks):g} to {max(ks):g}, so the sweep itself never compared against no dropout; keep_prob's "
            "importance and trend below are among dropout levels only (an ablation compares against keep 1.0).")


def overview(items: list[tuple[str, AblationSummary]], largest_interaction: str = "") -> list[str]:
    """At most five lines over the whole grid: where dropout helped, hurt, had no detectable effect.

    Judged on best validation accuracy; "helped"/"hurt" count only differences
    whose interval excludes 0 and that survive the Holm correction (as the
    headline); those whose interval excludes 0 but do not survive it get their
    own line. Every case is named, largest effects first.

    Args:
        items: (level label, its summary) per level; label "" for an ablation without factors.
        largest_interaction: a line on the largest interaction, if any (written by the caller).
    """
    acc = _Tally(items, "best_val_acc")
    of = f"of {_comparisons(acc.total)}"
    rule = f"interval {{}} 0, Holm-adjusted p ≤ {ALPHA:g}"
    lines = [f"- Dropout helped ({rule.format('above')}) in {len(acc.up)} {of}"
             + (f": {_listed(acc.up)}." if acc.up else "."),
             f"- Dropout hurt ({rule.format('below')}) in {len(acc.down)} {of}"
             + (f": {_listed(acc.down)}." if acc.down else ".")]
    if acc.unadjusted:
        lines.append(f"- Interval excludes 0 but not significant after Holm correction in {len(acc.unadjusted)} "
                     f"{of}: {_listed(acc.unadjusted)}.")
    lines.append(f"- No detectable effect (interval covers 0) in {acc.none} {of}"
                 + (f"; {acc.undefined} cannot be judged (one seed)." if acc.undefined else "."))
    if largest_interaction:
        lines.append(f"- {largest_interaction}")
    return lines


def verdict(summary: AblationSummary, *, opening: bool | None = None) -> str:
    """Plain-language paragraphs, one per training-set size, with the numbers filled in.

    Args:
        summary: output of :func:`sweep.analysis.stats.summarize`; must include the
            ``best_val_acc`` metric (``gap`` is reported when present).
        opening: open with the :func:`headline` and the short :func:`overview`; None:
            the headline always, the overview when there are more than
            ``OVERVIEW_FROM - 1`` comparisons; False: neither (a level inside
            a factorial verdict, which has its own).

    Returns:
        Markdown-friendly text: (the headline, the overview,) a one-line reading guide, then
        per size the comparisons against the baseline, the best keep_prob and any caveat.
    """
    if "best_val_acc" not in summary.metrics:
        raise ValueError("summary.metrics must include 'best_val_acc' to write a verdict")
    conf = _conf(summary)
    with_overview = len(summary.comparisons) >= OVERVIEW_FROM if opening is None else opening
    guide = (
        f"Differences are paired by seed against {_baseline_name(summary)} "
        f"(keep {summary.baseline_keep:g}), with {conf} t-intervals; p-values are paired "
        f"t-tests, Holm-adjusted over the {_comparisons(summary.n_comparisons)} of each metric."
    )
    paragraphs = [headline([("", summary)])] if opening is not False else []
    paragraphs += ["\n".join(overview([("", summary)]))] if with_overview else []
    paragraphs.append(guide)
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
        summary: output of :func:`sweep.analysis.stats.summarize`.

    Returns:
        Markdown text (headings, tables and a footnote on the tests).
    """
    conf = _conf(summary)
    metrics = list(summary.metrics)
    unit = {"gap": "points", "val_loss": "nats"}
    units = {m: f"{_LABELS[m]} ({unit.get(m, '%')})" for m in metrics}
    if "gap" in units and {"final_train_acc", "final_val_acc"} <= set(metrics):
        # the mean gap is exactly the difference of those two means
        units["gap"] = "train−val gap = final train − final val (points)"
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
        f"small-sample correction; \"{NO_VARIANCE}\" where every seed gave the same difference (sd 0, no ratio). "
        "With n pairs the smallest two-sided Wilcoxon p is 2/2^n "
        f"({_wilcoxon_floor(summary)}), so it cannot reach 0.05 below 6 seeds.",
        "",
    ]
    return "\n".join(lines)
