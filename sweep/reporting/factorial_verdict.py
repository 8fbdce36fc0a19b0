"""Words and tables for an ablation over more factors (:class:`~sweep.analysis.factorial.FactorialSummary`).

Same number formats as `sweep.reporting.verdict`. An interaction reads, e.g.::

    With 500 training examples, keep 0.5: dropout's benefit is 2.6 points smaller
    with normalization=batchnorm than with normalization=none (95 % CI −4.1 to −1.1,
    p = 0.012 Holm-adjusted, 5 seeds), a detectable interaction.

where "benefit" is the paired difference of best validation accuracy against
keep 1.0 at that level, and the interval is of benefit(level) − benefit(reference).
"""

from __future__ import annotations

from sweep.analysis.factorial import SIZE, FactorialSummary, Interaction, Levels
from sweep.analysis.intervals import PairedResult
from sweep.reporting.verdict import (
    _ci,
    _comparisons,
    _effect,
    _num,
    _p_phrase,
    _row,
    fmt_p,
    fmt_points,
    headline,
    overview,
    verdict,
)

__all__ = ["factorial_tables", "factorial_verdict", "interaction_sentence", "level_label", "ordered_label"]

_LABELS = {"best_val_acc": "best val acc", "gap": "train−val gap"}


def level_label(levels: Levels) -> str:
    """``normalization=batchnorm, hidden_dims=512-512`` ("" for no factor)."""
    return ", ".join(f"{n}={v}" for n, v in levels)


def ordered_label(fs: FactorialSummary, levels: Levels) -> str:
    """:func:`level_label` with the factors in the order they were given."""
    return level_label(_ordered(fs, levels))


def _side(factor: str, level: str) -> str:
    return f"{int(level):,} training examples" if factor == SIZE else f"{factor}={level}"


def _where(inter: Interaction) -> str:
    size = dict(inter.context).get(SIZE)
    others = [(n, v) for n, v in inter.context if n != SIZE]
    parts = ([f"{int(size):,} training examples"] if size else []) + ([level_label(tuple(others))] if others else [])
    if not parts:
        return f"Keep {inter.keep_prob:g}"
    return f"With {' and '.join(parts)}, keep {inter.keep_prob:g}"


def _interaction_words(res: PairedResult, alpha: float = 0.05) -> str:
    if not res.diff.defined:
        return f"cannot be judged from {res.n} seed{'s' if res.n != 1 else ''}"
    if res.diff.covers(0.0):
        return "no detectable interaction"
    words = "a detectable interaction"
    if not res.p_t_holm <= alpha:
        words += ", but not significant after Holm correction"
    return words


def interaction_sentence(inter: Interaction, confidence: float = 0.95) -> str:
    """One interaction of best validation accuracy in words, the numbers filled in."""
    res = inter.results["best_val_acc"]
    size = abs(res.mean_diff)
    how = "the same" if res.mean_diff == 0 else ("larger" if res.mean_diff > 0 else "smaller")
    conf = f"{confidence:.0%}".replace("%", " %")
    amount = f"{fmt_points(size, signed=False)} points {how}" if how != "the same" else "the same"
    stats = (f"{conf} CI {_ci(res.diff)}, {_p_phrase(res.p_t_holm)} Holm-adjusted, {res.n} seeds"
             if res.diff.defined else f"{res.n} seed: no interval or test")
    return (f"{_where(inter)}: dropout's benefit is {amount} with {_side(inter.factor, inter.level)} "
            f"than with {_side(inter.factor, inter.reference)} ({stats}), {_interaction_words(res)}.")


def _largest_line(fs: FactorialSummary) -> str:
    """The overview's line on interactions: the largest one whose interval excludes 0, else the largest estimate."""
    def size(i: Interaction) -> float:
        return abs(i.results["best_val_acc"].mean_diff)

    estimated = [i for i in fs.interactions if i.results["best_val_acc"].n > 0]
    detected = [i for i in estimated if i.results["best_val_acc"].diff.defined
                and not i.results["best_val_acc"].diff.covers(0.0)]
    if detected:
        return "Largest interaction: " + interaction_sentence(max(detected, key=size), fs.confidence)
    if estimated:
        return (f"No interaction detectable (every interval of the {_comparisons(fs.n_interactions)} covers 0); "
                "the largest estimate: " + interaction_sentence(max(estimated, key=size), fs.confidence))
    return ""


def _ordered(fs: FactorialSummary, levels: Levels) -> Levels:
    """`levels` in the order the factors were given (cells keep them sorted by name)."""
    rank = {name: i for i, (name, _) in enumerate(fs.factors)}
    return tuple(sorted(levels, key=lambda p: rank.get(p[0], len(rank))))


def factorial_verdict(fs: FactorialSummary) -> str:
    """The headline, the overview (at most five lines), the interactions, then the verdict of every level.

    Returns:
        Markdown text; per-level paragraphs under ``#### <level>`` headings.
    """
    conf = f"{fs.confidence:.0%}".replace("%", " %")
    items = [(level_label(_ordered(fs, lv)), fs.per_level[lv]) for lv in fs.levels]
    parts = [headline(items), "\n".join(overview(items, _largest_line(fs)))]
    parts.append(
        f"Dropout's effect is paired by seed against keep {fs.baseline_keep:g} at every level, with {conf} "
        f"t-intervals, p-values Holm-adjusted over the {_comparisons(fs.n_comparisons)} of the whole grid; "
        f"an interaction is the per-seed difference of that effect between two levels of one factor "
        f"(the others held), Holm-adjusted over the {_comparisons(fs.n_interactions)} of interactions."
    )
    if fs.interactions:
        parts.append("**Interactions (best validation accuracy).**")
        parts.append("\n".join("- " + interaction_sentence(i, fs.confidence) for i in fs.interactions))
    for lv in fs.levels:
        parts.append(f"#### {level_label(_ordered(fs, lv))}\n\n" + verdict(fs.per_level[lv], opening=False).rstrip())
    return "\n\n".join(parts) + "\n"


def factorial_tables(fs: FactorialSummary) -> str:
    """The interaction table: one row per interaction and metric (points, treated − baseline differences)."""
    conf = f"{fs.confidence:.0%}".replace("%", " %")
    head = ["factor", "level − reference", "held at", "keep_prob", "metric", "pairs", "interaction (points)",
            f"{conf} CI", "p (t)", "p (t, Holm)", "p (Wilcoxon)", "p (Wilcoxon, Holm)", "d_z"]
    title = (f"### Interactions: change of dropout's paired effect between levels "
             f"(effect = keep_prob − keep {fs.baseline_keep:g}, same seeds)")
    lines = [title, "", _row(head), _row(["---"] * len(head))]
    for i in fs.interactions:
        for m, res in i.results.items():
            ci = f"[{_num(res.diff.low * 100, 1)}, {_num(res.diff.high * 100, 1)}]" if res.diff.defined else "n/a"
            lines.append(_row([
                i.factor, f"{i.level} − {i.reference}", level_label(i.context) or "—", f"{i.keep_prob:g}",
                _LABELS.get(m, m), str(res.n), _num(res.mean_diff * 100, 1, signed=True), ci, fmt_p(res.p_t),
                fmt_p(res.p_t_holm), fmt_p(res.p_wilcoxon), fmt_p(res.p_wilcoxon_holm), _effect(res.d_z),
            ]))
    lines += ["", f"Holm: over the {_comparisons(fs.n_interactions)} of each metric, t and Wilcoxon separately.", ""]
    return "\n".join(lines)
