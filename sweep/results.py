"""What the Python API returns: typed results with readable reprs, and their pandas tables.

Accuracies in every table are fractions in [0, 1]; `_repr_markdown_` renders a
result in Jupyter, `repr` in a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from sweep.analysis.stats import AblationSummary
    from sweep.config.sweep_file import SweepConfig

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


@dataclass(frozen=True)
class SweepResult:
    """What `run` did: the best trial, the trials table and where the runs are.

    ``trials`` has one row per Optuna trial (number, state, value = best
    validation accuracy, params_*, duration), as `optuna.Study.trials_dataframe`.
    """

    study: str
    target: int
    counted: int
    best_trial: int | None
    best_val_acc: float | None
    best_params: dict[str, Any] | None
    test_acc: float | None
    interrupted: bool
    all_in_mlflow: bool
    tracking_uri: str  # password masked
    experiment_id: str | None
    parent_run_id: str | None
    best_run_id: str | None
    trials: pd.DataFrame = field(repr=False)
    exit_code: int = 0  # what `sweep run` exits with for this outcome

    def __repr__(self) -> str:
        best = "no completed trial" if self.best_trial is None else (
            f"best trial {self.best_trial}: val {_pct(self.best_val_acc)}, test {_pct(self.test_acc)}")
        flags = (", interrupted" if self.interrupted else "") + ("" if self.all_in_mlflow else ", NOT ALL IN MLFLOW")
        return f"<SweepResult {self.study!r}: {self.counted}/{self.target} trials{flags}; {best}>"

    def _repr_markdown_(self) -> str:
        lines = [f"**Sweep `{self.study}`**: {self.counted} of {self.target} trials counted"
                 + (" (interrupted: run again to resume)" if self.interrupted else "") + "."]
        if self.best_trial is not None:
            params = ", ".join(f"{k} = {v}" for k, v in (self.best_params or {}).items())
            lines.append(f"Best trial {self.best_trial}: validation {_pct(self.best_val_acc)}, "
                         f"test {_pct(self.test_acc)} ({params}).")
        if not self.all_in_mlflow:
            lines.append("Not everything is in MLflow yet: `sweep sync` sends the rest.")
        return "\n\n".join(lines)


@dataclass(frozen=True)
class AblationResult:
    """What `ablate` trained, and what its cells say.

    Tables (accuracies as fractions):
        ``runs``: one row per finished cell run: size, keep_prob, seed, the varied
            factors, best_val_acc, final_train_acc, final_val_acc, gap, val_loss.
        ``cells``: one row per (size, keep_prob[, factors]) and metric: n, mean, low, high
            (the t-interval over seeds).
        ``comparisons``: one row per paired comparison against keep_prob 1.0 and metric:
            n, mean_diff, low, high, p_t, p_t_holm, p_wilcoxon, g_z.
    """

    name: str
    study: str
    cells_total: int
    cells_done: int
    interrupted: bool
    all_in_mlflow: bool
    experiment_id: str | None
    parent_run_id: str | None
    runs: pd.DataFrame = field(repr=False)
    cells: pd.DataFrame = field(repr=False)
    comparisons: pd.DataFrame = field(repr=False)
    verdict: str = field(default="", repr=False)
    exit_code: int = 0
    outcome: Any = field(default=None, repr=False)  # sweep.ablation.runner.AblationOutcome, as the CLI reads it

    def __repr__(self) -> str:
        state = "interrupted" if self.interrupted else "complete" if self.cells_done == self.cells_total else "unfinished"
        return (f"<AblationResult {self.name!r} of {self.study!r}: {self.cells_done}/{self.cells_total} cells, "
                f"{state}; {len(self.comparisons)} comparison rows>")

    def _repr_markdown_(self) -> str:
        head = f"**Ablation `{self.name}`** of `{self.study}`: {self.cells_done} of {self.cells_total} cells trained."
        return head + ("\n\n" + self.verdict if self.verdict else "")


@dataclass(frozen=True)
class Report:
    """`report`'s files and its verdict (the text report.md opens each ablation with)."""

    study: str
    path: Path  # report.md
    figures: tuple[Path, ...]
    verdict: str

    def __repr__(self) -> str:
        return f"<Report {self.study!r}: {self.path} ({len(self.figures)} figures)>"

    def _repr_markdown_(self) -> str:
        return f"**Report for `{self.study}`** — {self.path}\n\n{self.verdict}"


@dataclass(frozen=True)
class StudyResults:
    """A finished (or running) study read back: its trials, its best trial and that trial's network."""

    config: SweepConfig = field(repr=False)
    workdir: Path
    trials: pd.DataFrame = field(repr=False)
    best_trial: int | None
    best_val_acc: float | None
    best_params: dict[str, Any] | None
    test_acc: float | None

    def best_model(self) -> Any:
        """The best trial's network (a model.FullyConnectedNet, or your own class with --model) with its
        saved weights (test mode: ``net.loss(X)`` gives scores).

        Raises:
            ConfigError: no completed trial, or its weights are no longer on disk.
        """
        from sweep.config.domains import ConfigError
        from sweep.paths import SweepPaths
        from sweep.training import build_net, load_model_state, load_weights

        if self.best_trial is None or self.best_params is None:
            raise ConfigError(f"--study: {self.config.study_name!r} has no completed trial yet")
        paths = SweepPaths.for_study(self.workdir, self.config.study_name)
        file = paths.weights_dir / f"trial-{self.best_trial:04d}.npz"
        if not file.exists():
            raise ConfigError(f"{file}: the best trial's weights are not there (deleted, or the study "
                              "ran in another folder)")
        weights = load_weights(file)
        params = self.config.space.params_from_trial(self.best_params)
        model = self.config.model
        if model is not None and not model.checked:  # your own net: how to build it (sweep.check.contract)
            from sweep.check.contract import checked_config

            model = checked_config(self.config)[0].model
        net = build_net(params, int(weights["W1"].shape[0]), int(weights[f"b{len(params.hidden_dims) + 1}"].shape[0]),
                        seed=0, model=model)
        load_model_state(net, weights)
        return net

    def __repr__(self) -> str:
        best = "no completed trial" if self.best_trial is None else (
            f"best trial {self.best_trial}: val {_pct(self.best_val_acc)}, test {_pct(self.test_acc)}")
        return f"<StudyResults {self.config.study_name!r}: {len(self.trials)} trials; {best}>"


_RUN_FIELDS = ("size", "keep_prob", "seed", "best_val_acc", "final_train_acc", "final_val_acc", "gap", "val_loss")


def runs_table(cells: Sequence[Any]) -> pd.DataFrame:
    """One row per finished cell run (sweep.stats.Cell), the varied factors as columns."""
    import pandas as pd

    rows = [{**{f: getattr(c, f) for f in _RUN_FIELDS}, **dict(c.levels)} for c in cells]
    return pd.DataFrame(rows, columns=list(_RUN_FIELDS) if not rows else None)


def cells_table(summaries: Sequence[tuple[Mapping[str, str], AblationSummary]]) -> pd.DataFrame:
    """One row per (factors, size, keep_prob, metric): n, mean and the t-interval over seeds."""
    import pandas as pd

    rows = []
    for levels, s in summaries:
        for (size, keep), cell in sorted(s.cells.items()):
            for metric, iv in cell.intervals.items():
                rows.append({**levels, "size": size, "keep_prob": keep, "metric": metric, "n": iv.n,
                             "mean": iv.mean, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows, columns=None if rows else ["size", "keep_prob", "metric", "n", "mean", "low", "high"])


def comparisons_table(summaries: Sequence[tuple[Mapping[str, str], AblationSummary]]) -> pd.DataFrame:
    """One row per (factors, size, keep_prob, metric) paired against the baseline keep_prob on shared seeds."""
    import pandas as pd

    cols = ["size", "keep_prob", "baseline_keep", "metric", "n", "mean_diff", "low", "high", "p_t", "p_t_holm",
            "p_wilcoxon", "g_z"]
    rows = []
    for levels, s in summaries:
        for (size, keep), comp in sorted(s.comparisons.items()):
            for metric, r in comp.results.items():
                rows.append({**levels, "size": size, "keep_prob": keep, "baseline_keep": comp.baseline_keep,
                             "metric": metric, "n": r.n, "mean_diff": r.mean_diff, "low": r.diff.low,
                             "high": r.diff.high, "p_t": r.p_t, "p_t_holm": r.p_t_holm, "p_wilcoxon": r.p_wilcoxon,
                             "g_z": r.g_z})
    return pd.DataFrame(rows, columns=None if rows else cols)

