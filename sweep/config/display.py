"""Numbers as a person writes them: MLflow params, progress lines, the report.

Optuna keeps the exact floats it drew, e.g. keep_prob 0.8500000000000001 on a
0.05 grid, learning_rate 0.000683671984871003 on a log scale; a person reads
and writes 0.85 and 6.837e-4. Everything a person reads goes through
`format_number` (one rule, one place); the exact values stay in Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweep.config.space import SearchSpace

LOG_DIGITS = 4  # significant digits of a log-scale value


def format_number(value: Any, *, step: float | None = None, log: bool = False) -> str:
    """`value` as text a person would write.

    Args:
        value: anything; only floats are rewritten (ints, strings, bools as str()).
        step: grid step of a stepped range: rounded to the step's decimals (0.85, 1.0).
        log: a log-scale value: 4 significant digits, e.g. 6.837e-4, 3.6e-3, 1e-2.

    Otherwise the shortest form of its 12 significant digits (0.3, 1.0, 1e-05):
    float noise goes, anything typed stays.
    """
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if step is not None:
        decimals = max(0, -int(Decimal(str(step)).normalize().as_tuple().exponent))
        return repr(round(value, decimals))
    if log and value != 0:
        mantissa, exp = f"{value:.{LOG_DIGITS - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exp)}"
    return repr(float(f"{value:.12g}"))


def scale_of(name: str, space: SearchSpace | None = None) -> dict[str, Any]:
    """How the hyperparameter `name` (an Optuna param name or a to_flat key) is written.

    Log-scale: its domain's nature (learning_rate, weight_scale, width) or a log
    range in `space`; the step of a float range in `space` (sweep.config.space.SearchSpace).
    """
    from sweep.config.domains import DOMAINS
    from sweep.config.space import Range

    base = "width" if name.startswith("hidden_") else name
    dom = DOMAINS.get(base)
    p = getattr(space, base, None) if space is not None and base in getattr(space, "KEYS", ()) else None
    step = p.step if isinstance(p, Range) and isinstance(p.step, float) else None
    log = bool(dom is not None and dom.log) or (isinstance(p, Range) and p.log)
    return {"step": step, "log": log}


def readable_params(params: Mapping[str, Any], space: SearchSpace | None = None) -> dict[str, str]:
    """Every value of `params` through `format_number` (MLflow params, the report)."""
    return {k: format_number(v, **scale_of(k, space)) for k, v in params.items()}


# MLflow shows a run's `mlflow.note.content` tag as its Description (markdown).
NOTE_TAG = "mlflow.note.content"


def run_note(params: Mapping[str, str], state: str, summary: Mapping[str, float], *,
             pruned_at_epoch: int | None = None, failure_reason: str | None = None) -> str:
    """One-line description of a trial or cell run, e.g.
    'keep_prob 0.85, hidden 64-32, batchnorm, lr 6.837e-4: pruned at epoch 3, best val acc 0.9533 (epoch 2)'.

    Args:
        params: the run's MLflow params (already `readable_params`).
        state: COMPLETE, PRUNED or FAIL.
        summary: bare-named one-shot figures (objective.RunResult.summary).
    """
    what = (f"keep_prob {params.get('keep_prob')}, hidden {params.get('hidden_dims')}, "
            f"{params.get('normalization')}, lr {params.get('learning_rate')}")
    # The other regularizers, when on (their params are absent when off: sweep.config.space.OFF).
    what += "".join(f", {label} {params[key]}" for key, label in (
        ("input_keep_prob", "input keep"), ("max_norm", "max-norm"), ("augment_flip", "flip"),
        ("augment_shift", "shift")) if key in params)
    if state == "FAIL":
        return f"{what}: failed ({failure_reason or 'no reason recorded'})"
    outcome = f"pruned at epoch {pruned_at_epoch}" if state == "PRUNED" else "complete"
    if "best_val_acc" in summary:
        outcome += f", best val acc {summary['best_val_acc']:.4f} (epoch {int(summary.get('best_epoch', 0))})"
    return f"{what}: {outcome}"


def study_note(study: str, dataset: str, trials: int) -> str:
    """Description of a study's parent run: what it is and how to read it (markdown)."""
    return (
        f"Optuna study **{study}** on {dataset}: {trials} trials, one child run each (`trial-NNNN`); "
        "expand this row to list them. Tag `state` says how a trial ended: COMPLETE, PRUNED (stopped "
        "early by the pruner, a normal outcome, so the run is FINISHED) or FAIL. A trial's Model metrics "
        "page draws its per-epoch curves (`val_acc`, `train_acc`, `gap` = train - val accuracy, losses, "
        "`lr`, step = epoch); one-shot figures (best val acc, epochs trained, ...) are its `summary/` "
        "tags, on its Overview and as runs-table columns. keep_prob is the probability of "
        "KEEPING a unit (1.0 = no dropout). `sweep report` attaches its report under this run's "
        "artifacts, `report/`."
    )


def ablation_note(name: str, study: str, keep_probs: str, sizes: str, seeds: int) -> str:
    """Description of an ablation's parent run (markdown)."""
    return (
        f"Seed-paired ablation **{name}** of study {study}: one configuration re-trained for keep_prob "
        f"{keep_probs} x training sizes {sizes} x {seeds} seeds, one child run per cell "
        "(`cell-n<size>-k<keep_prob>-s<seed>`). Seed k gives every keep_prob the same initial weights, "
        "batch order and training rows, so differences are dropout's. `sweep report` attaches the "
        "verdict and figures under this run's artifacts, `report/`."
    )
