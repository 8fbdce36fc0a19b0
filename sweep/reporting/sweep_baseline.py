"""The sweep section's line on no dropout: what the best keep_prob 1.0 trial reached against the best overall."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def trial_best(t: FrozenTrial) -> float | None:
    """A finished trial's best validation accuracy: its value, or for a pruned one the best of the
    epochs it trained (its summary, else its reported values); None if it reported nothing."""
    if t.state.name == "COMPLETE" and t.value is not None:
        return float(t.value)
    best = (t.user_attrs.get("summary") or {}).get("best_val_acc")
    if best is not None and math.isfinite(best):
        return float(best)
    return max(t.intermediate_values.values()) if t.intermediate_values else None


def _what(t: FrozenTrial) -> str:
    from sweep.search.baseline import is_baseline

    parts = [f"trial {t.number}"]
    if is_baseline(t):
        parts.append("the baseline queued first")
    if t.state.name == "PRUNED":
        parts.append(f"pruned at epoch {t.user_attrs.get('pruned_at_epoch', '?')}")
    return ", ".join(parts)


def no_dropout_line(trials: Sequence[FrozenTrial]) -> str:
    """One paragraph: the best keep 1.0 trial against the best trial overall (accuracies in %),
    or, when no finished trial ran keep 1.0, sweep_baseline_note's sentence ("" for no trials)."""
    from sweep.reporting.verdict import sweep_baseline_note

    scored = [(t, v) for t in trials if t.state.name in ("COMPLETE", "PRUNED") and "keep_prob" in t.params
              and (v := trial_best(t)) is not None]
    no_dropout = [(t, v) for t, v in scored if math.isclose(float(t.params["keep_prob"]), 1.0)]
    if not no_dropout:
        return sweep_baseline_note([float(t.params["keep_prob"]) for t, _ in scored])
    t1, v1 = max(no_dropout, key=lambda tv: tv[1])
    tb, vb = max(scored, key=lambda tv: tv[1])
    diff = (vb - v1) * 100
    lead = (f"No dropout (keep_prob 1.0) in {len(no_dropout)} of the {len(scored)} finished trials: the best "
            f"reached {v1 * 100:.1f} % best validation accuracy ({_what(t1)})")
    if tb.number == t1.number or diff < 0.05:
        return lead + ", as high as any trial of the sweep."
    return (f"{lead}; the best trial overall {vb * 100:.1f} % ({_what(tb)}, keep_prob {float(tb.params['keep_prob']):g}), "
            f"{diff:.1f} points higher. Trials differ in more than keep_prob, so this is not dropout's effect "
            "alone: the ablation (`sweep ablate`) isolates it.")
