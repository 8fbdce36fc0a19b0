"""Numbers as MLflow records them: rounded as a person writes them, read back exactly.

A run's values come out of float arithmetic (0.9833333333333333 = 354/360,
a gap of 0.020000000000000018, epoch_seconds 0.42478626700000177). MLflow
shows what it is given, so they are rounded where they are recorded:
accuracies and gaps to 4 decimals (98.33 %), losses and the learning rate
to 4 significant digits, seconds to the millisecond, counts as integers.

Nothing the report computes is lost. An accuracy on n rows is k/n, and for
n <= 10**d the values k/n lie at least 10**-d apart, so rounded to d decimals
(d = 4 up to 10 000 rows, more above: `acc_decimals`) each still names its k.
A run's summary carries its row counts (`val_rows`, `train_acc_rows`), and
`exact_accuracy` gives back k/n bit for bit (the same `k / n` division the
Solver made), so the statistics read back from MLflow are the unrounded ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

ACC_DECIMALS = 4  # 98.33 %: exact up to 10 000 rows (see acc_decimals)
GAP_DECIMALS = 4
SIG_DIGITS = 4  # losses, the learning rate
SECONDS_DECIMALS = 3  # milliseconds
# Summary figures that are counts (written as integers).
COUNTS = ("best_epoch", "epochs_trained", "val_rows", "train_acc_rows")
# Which summary accuracy was measured on which rows (the count's name in the summary).
ROWS_OF = {"best_val_acc": "val_rows", "final_val_acc": "val_rows", "final_train_acc": "train_acc_rows"}


def acc_decimals(rows: int | None) -> int:
    """Decimals that keep an accuracy on `rows` rows exact: 4 up to 10 000 rows, one more per factor 10."""
    if not rows or rows <= 10**ACC_DECIMALS:
        return ACC_DECIMALS
    return math.ceil(math.log10(rows))


def round_value(name: str, value: float, rows: int | None = None) -> float:
    """`value` of the metric or summary figure `name`, rounded as a person writes it.

    Args:
        name: e.g. 'val_acc', 'best_val_acc', 'gap', 'final_val_loss', 'lr', 'epoch_seconds'.
        rows: rows an accuracy was measured on (more decimals above 10 000, see acc_decimals).
    """
    value = float(value)
    if not math.isfinite(value):
        return value
    if name in COUNTS:
        return float(round(value))
    if name.endswith("_acc"):
        return round(value, acc_decimals(rows))
    if name.endswith("gap"):
        return round(value, max(GAP_DECIMALS, acc_decimals(rows)))
    if name.endswith("_seconds"):
        return round(value, SECONDS_DECIMALS)
    return float(f"{value:.{SIG_DIGITS}g}") if name.endswith("_loss") or name == "lr" else float(f"{value:.10g}")


def rounded_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """One epoch's metrics (train_acc, val_acc, gap, losses, lr, epoch_seconds) rounded for MLflow."""
    return {k: round_value(k, v) for k, v in metrics.items()}


def rounded_summary(summary: Mapping[str, float]) -> dict[str, float]:
    """A run's one-shot figures rounded for MLflow; accuracies keep the decimals their row count needs."""
    rows = max((int(summary[k]) for k in ("val_rows", "train_acc_rows") if k in summary), default=None)
    return {k: round_value(k, v, rows) for k, v in summary.items()}


def exact_accuracy(value: float, rows: int) -> float:
    """The accuracy k/rows that `value` (rounded by round_value) stands for, bit for bit."""
    return round(value * rows) / rows


def exact_summary(summary: Mapping[str, float]) -> dict[str, float]:
    """Summary figures read back from MLflow with their accuracies (and the final gap) made exact again.

    Runs recorded without row counts (before them) are returned as read.
    """
    out = dict(summary)
    for name, rows_key in ROWS_OF.items():
        rows = out.get(rows_key)
        if name in out and rows and math.isfinite(out[name]):
            out[name] = exact_accuracy(out[name], int(rows))
    if all(k in out for k in ("train_acc_rows", "val_rows", "final_train_acc", "final_val_acc")):
        out["final_gap"] = out["final_train_acc"] - out["final_val_acc"]  # as the Solver computed it
    return out
