"""The report's part for an ablation run with `--until-decided`: seeds taken, both intervals, why it stopped.

The stopping rule is replayed from the recorded cells (`sweep.analysis.sequential.replay`,
the function `sweep ablate` itself decides with), so each comparison is shown
at the look where the run stopped it. The anytime-valid interval is at level
1 − alpha/m (Bonferroni over the grid's m comparisons); the classical 95 %
t-interval over the same seeds is printed beside it for comparison only: it
is not valid after stopping on the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sweep.analysis.sequential import Rule, SequentialComparison, comparison_keys, comparison_name, replay
from sweep.analysis.stats import Cell

__all__ = ["is_sequential", "sequential_opening", "sequential_section", "sequential_state"]

MINUS = "\u2212"


def is_sequential(params: Mapping[str, str]) -> bool:
    """True for the parent params of an ablation run with --until-decided."""
    return params.get("until") == "decided"


def _rule(params: Mapping[str, str]) -> Rule:
    precision = params.get("precision", "none")
    return Rule(float(params.get("alpha", 0.05)), None if precision == "none" else float(precision),
                int(params.get("max_seeds", params.get("seeds", 20))))


def sequential_state(params: Mapping[str, str], cells: list[Cell]) -> dict[Any, SequentialComparison]:
    """Every comparison of the ablation as the run decided it, from its recorded cells."""
    sizes = [int(s) for s in params.get("sizes", "").split(",") if s.strip()] or sorted({c.size for c in cells})
    keeps = [float(k) for k in params.get("keep_probs", "").split(",") if k.strip()] or sorted({c.keep_prob for c in cells})
    levels = sorted({c.levels for c in cells}) or [()]
    values = {(c.size, c.keep_prob, c.seed, c.levels): c.best_val_acc for c in cells}
    return replay(values, comparison_keys(sizes, levels, keeps), _rule(params))


def _pt(x: float) -> str:
    if not math.isfinite(x):
        return "−∞" if x < 0 else "+∞" if x > 0 else "n/a"
    return f"{x:+.1f}".replace("-", MINUS)


def _why(comp: SequentialComparison, rule: Rule) -> str:
    iv = comp.decision.anytime
    if comp.status == "decided":
        side = "above 0: dropout helps" if iv.low > 0 else "below 0: dropout hurts"
        return f"decided: the anytime interval lies {side}"
    if comp.status == "precise":
        return (f"precise enough: the anytime interval is {iv.width:.1f} points wide (asked: at most "
                f"{rule.precision:g}) and contains 0, so any effect is within it")
    if comp.status == "capped":
        return f"capped: {rule.max_seeds} seeds (the cap) and the anytime interval still contains 0"
    return "still open: the ablation stopped before this comparison was decided"


def sequential_section(params: Mapping[str, str], cells: list[Cell]) -> str:
    """Markdown: the rule, one table row per comparison, and what the classical intervals mean here."""
    rule = _rule(params)
    state = sequential_state(params, cells)
    m = max(1, len(state))
    level = 100 * (1 - rule.alpha / m)
    target = "its anytime-valid interval excluded 0" + (
        "" if rule.precision is None else f" or was at most {rule.precision:g} points wide")
    counts = {s: sum(c.status == s for c in state.values()) for s in ("decided", "precise", "capped", "open")}
    lines = [
        "### Until decided: seeds added while undecided\n\n",
        f"Seeds were added in rounds (`sweep ablate --until-decided`) to each comparison (keep_prob − keep 1.0 "
        f"in best validation accuracy, same seeds) until {target}, at most {rule.max_seeds} seeds "
        f"(the grid's \"{params.get('seeds', rule.max_seeds)} seeds\" above is this cap). "
        f"{counts['decided']} decided, {counts['precise']} precise enough, {counts['capped']} capped"
        + (f", {counts['open']} still open" if counts["open"] else "") + f" of {len(state)}; "
        f"{len(cells)} finished cells in all, against {_fixed_cells(params, rule)} for the fixed design at the cap.\n\n",
        f"The anytime-valid intervals are confidence sequences for Gaussian means with unknown variance "
        f"(Wang & Ramdas 2024, arXiv:2310.03722, Thm 4.9), {_levels_text(level, m)}; each holds at every number "
        f"of seeds at once, so stopping on the data keeps its level. "
        f"Assumption: the paired differences of a comparison are i.i.d. normal across seeds. "
        f"The classical 95 % t-intervals, tests and Holm-adjusted p-values in the rest of this section are "
        f"over the same seeds but are **not valid after stopping on the data** (looking after every seed "
        f"inflates their error rate); they are shown for comparison only.\n\n",
        f"| comparison | seeds | mean diff (points) | anytime-valid {level:.4g} % interval | classical 95 % "
        f"t-interval | stopped because |\n|---|---|---|---|---|---|\n",
    ]
    for comp in sorted(state.values(), key=lambda c: c.key):
        d, iv = comp.decision, comp.decision.anytime
        t = d.t_interval
        lines.append(f"| {comparison_name(comp.key)} | {comp.seeds} | {_pt(iv.mean)} | [{_pt(iv.low)}, {_pt(iv.high)}] "
                     f"| [{_pt(t.low)}, {_pt(t.high)}] | {_why(comp, rule)} |\n")
    return "".join(lines) + "\n"


def _levels_text(level: float, m: int) -> str:
    if m == 1:
        return "at 95 % (one comparison: no correction)"
    return (f"each at {level:.4g} % so that all {m} hold together with 95 % (Bonferroni: the union bound "
            "over comparisons holds at any stopping time, since each sequence holds uniformly over time)")


def sequential_opening(params: Mapping[str, str], cells: list[Cell]) -> str:
    """One sentence for the verdict's opening: each comparison's anytime-valid outcome."""
    rule = _rule(params)
    state = sequential_state(params, cells)
    parts = []
    for comp in sorted(state.values(), key=lambda c: c.key):
        iv = comp.decision.anytime
        what = {"decided": "helps" if iv.low > 0 else "hurts", "precise": "no effect beyond the interval",
                "capped": "no effect detected", "open": "still open"}[comp.status]
        parts.append(f"{comparison_name(comp.key)}: {what} ({comp.status} after {comp.seeds} seeds, "
                     f"[{_pt(iv.low)}, {_pt(iv.high)}] points)")
    return (f"Until decided (anytime-valid intervals, Bonferroni over {len(state)}; at most {rule.max_seeds} seeds): "
            + "; ".join(parts) + ".")


def _fixed_cells(params: Mapping[str, str], rule: Rule) -> int:
    from sweep.config.factors import parse_vary_text

    n = len(params.get("keep_probs", "").split(",")) * len(params.get("sizes", "").split(",")) * rule.max_seeds
    for _, values in parse_vary_text(params.get("vary", "")):
        n *= len(values)
    return n
