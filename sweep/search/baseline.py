"""The no-dropout baseline trial: every new sweep tries keep_prob 1.0 at least once.

A search over keep_prob in [0.2, 1.0] draws exactly 1.0 rarely (1 of 60 default
trials, and that one pruned), so the sweep itself would never compare against no
dropout. A new study therefore gets one trial queued first (Optuna's
`enqueue_trial`): keep_prob 1.0 at the centre of the rest of the space (a range's
midpoint, geometric for a log range, on its grid; a choice's first value). It
depends on the space only, so it is the same for every seed, and as trial 0 it
trains with trial 0's seeds. Queued once, by the process that creates the study
(`sweep.search.study.open_study`): a resumed study, or a second `sweep run` joining
it, never queues another. Studies from before have none, and the report says when
a sweep never ran keep 1.0 (sweep.reporting.verdict.sweep_baseline_note).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sweep.config.domains import DOMAINS
from sweep.config.space import Choice, Fixed, Range

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from sweep.config.space import Param, SearchSpace

#: Trial user attr (and MLflow tag `sweep.baseline`) marking the baseline trial; says what it is.
BASELINE_ATTR = "baseline"
BASELINE_TAG = "sweep.baseline"
BASELINE_WHAT = "keep_prob 1.0 (no dropout) at the centre of the search space"


def can_draw_no_dropout(p: Param) -> bool:
    """Whether the keep_prob setting `p` is searched and can take 1.0."""
    if isinstance(p, Choice):
        return len(p.choices) > 1 and any(math.isclose(float(c), 1.0) for c in p.choices)
    if isinstance(p, Range) and p.low < 1.0 <= p.high + 1e-12:
        return p.step is None or abs((1.0 - p.low) / p.step - round((1.0 - p.low) / p.step)) < 1e-8
    return False


def centre(name: str, p: Param) -> Any:
    """The middle of a searched setting: a range's midpoint (geometric on a log scale) on its
    grid, an int rounded; a choice's first value; a fixed one's value."""
    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Choice):
        return p.choices[0]
    mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
    if p.step is not None:
        mid = p.low + round((mid - p.low) / p.step) * p.step
    if DOMAINS["width" if name.startswith("hidden_") else name].kind is int:
        return round(mid)
    return float(f"{mid:.4g}")


def baseline_params(space: SearchSpace) -> dict[str, Any] | None:
    """The baseline's Optuna params (searched settings only), or None when keep_prob is
    fixed or cannot be 1.0 (the sweep file chose that: nothing is added)."""
    if not can_draw_no_dropout(space.keep_prob):
        return None
    params: dict[str, Any] = {"keep_prob": 1.0}
    for name in space.KEYS:
        p = getattr(space, name)
        if name not in ("keep_prob", "width") and not isinstance(p, Fixed):
            params[name] = centre(name, p)
    if not isinstance(space.width, Fixed):
        depth = params.get("depth", centre("depth", space.depth))
        params.update({f"hidden_{i}": centre("hidden_", space.width) for i in range(1, int(depth) + 1)})
    return params


def enqueue_baseline(study: optuna.Study, space: SearchSpace) -> bool:
    """Queue the baseline trial in a study just created; False if the space has none."""
    params = baseline_params(space)
    if params is None:
        return False
    study.enqueue_trial(params, user_attrs={BASELINE_ATTR: BASELINE_WHAT})
    return True


def is_baseline(trial: FrozenTrial) -> bool:
    return BASELINE_ATTR in trial.user_attrs
