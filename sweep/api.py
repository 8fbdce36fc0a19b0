"""The Python API: a sweep, its ablation and its report as objects.

The `sweep` command line is a thin layer over these functions; a notebook or a
script calls them directly::

    import sweep

    cfg = sweep.load_config(trials=12, epochs=5)      # the built-in digits sweep, smaller
    result = sweep.run(cfg)                           # SweepResult: best trial, trials table
    ablation = sweep.ablate(cfg, seeds=3)             # AblationResult: cells and paired differences
    duel = sweep.compare(cfg, arms=["none", "l2", "dropout"], seeds=5)  # regularizers, tuned, on the test split
    report = sweep.report(cfg)                        # Report: report.md, figures and the verdict
    net = sweep.load_study(cfg).best_model()          # the best network, a model.FullyConnectedNet

Every function takes the same settings as the command line (the sweep file's
keys, as keyword overrides) and raises the same one-line `ConfigError` the CLI
prints. Tables are pandas DataFrames; accuracies in them are fractions in [0, 1].
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sweep.results import (
    AblationResult,
    Report,
    StudyResults,
    SweepResult,
    cells_table,
    comparisons_table,
    runs_table,
)

if TYPE_CHECKING:
    import optuna

    from sweep.ablation.compare import CompareOutcome
    from sweep.ablation.runner import AblationOutcome
    from sweep.analysis.stats import AblationSummary
    from sweep.config.sweep_file import SweepConfig
    from sweep.search.progress import SweepOutcome
    from sweep.search.status import StudyStatus

__all__ = [
    "AblationResult",
    "Report",
    "StudyResults",
    "SweepResult",
    "ablate",
    "compare",
    "load_config",
    "load_study",
    "report",
    "run",
    "status",
]


# -- configuration ---------------------------------------------------------------


def load_config(path: str | Path | None = None, **overrides: object) -> SweepConfig:
    """The sweep settings: a sweep file (TOML, see examples/) with keyword overrides.

    Args:
        path: the sweep file; None: the built-in digits sweep (examples/digits.toml).
        **overrides: the command line's settings by their flag names, e.g.
            ``trials=20, epochs=5, jobs=2, keep_probs=[1, 0.5], sizes=[300], seeds=3``;
            ``model="cs231n.classifiers.fc_net:FullyConnectedNet", model_path="~/assignment2"``
            trains your own cs231n-style net (checked before the first trial, see README).

    Raises:
        ConfigError: the same one line `sweep` prints, naming the key and what is allowed.

    Example:
        >>> sweep.load_config(trials=8).trials
        8
    """
    from sweep.config.sweep_file import load_config as _load

    return _load(path, {k: v for k, v in overrides.items() if v is not None})


def _config(config: SweepConfig | str | Path | None, overrides: Mapping[str, object]) -> SweepConfig:
    """A SweepConfig from what a caller passed: a config, a sweep file, or None (the defaults)."""
    from sweep.config.sweep_file import SweepConfig, apply_overrides

    if isinstance(config, SweepConfig):
        given = {k: v for k, v in overrides.items() if v is not None}
        return apply_overrides(config, given) if given else config
    return load_config(config, **overrides)


# -- entry points -------------------------------------------------------------------


def run(config: SweepConfig | str | Path | None = None, *, workdir: str | Path | None = None,
        dask_scheduler: str | None = None, timeout_kill: bool = False, out: TextIO | None = None,
        progress: bool = True, tables: bool = True, checked: bool = False, **overrides: object) -> SweepResult:
    """Run (or resume) the sweep until the study has `trials` trials; the same as `sweep run`.

    Args:
        config: a SweepConfig, a sweep file, or None (the built-in digits sweep).
        workdir: the folder holding the journal, mlflow.db and .sweep/ (default: the current one).
        dask_scheduler: run the trials on this Dask cluster (needs a shared ``storage``).
        out: where the progress lines go (default: standard output).
        progress: also show a progress bar (tqdm: a widget in Jupyter).
        tables: read the trials table back (``SweepResult.trials``; empty when False).
        checked: the caller already made the start-up checks (the CLI names its flags in them).
        **overrides: settings by their flag names (``trials=20``, ``jobs=2``, ...).
    """
    from sweep.search.progress import EXIT_FAULT, EXIT_UNTRACKED
    from sweep.search.runner import run_sweep

    cfg = _config(config, overrides)
    if not checked:
        _preflight(cfg, workdir, local=dask_scheduler is None)
    with _progress_bar(progress, cfg.trials, "trials") as listener:
        o = run_sweep(cfg, workdir=_path(workdir), out=out or sys.stdout, dask_scheduler=dask_scheduler,
                      timeout_kill=timeout_kill, on_progress=listener)
    code = 130 if o.interrupted else EXIT_FAULT if o.fault else EXIT_UNTRACKED if o.untracked is not None else 0
    return _sweep_result(cfg, o, code, _path(workdir), tables)


def ablate(config: SweepConfig | str | Path | None = None, *, name: str | None = None, yes: bool = True,
           workdir: str | Path | None = None, dask_scheduler: str | None = None, out: TextIO | None = None,
           progress: bool = True, tables: bool = True, checked: bool = False, **overrides: object) -> AblationResult:
    """Train every missing cell of the ablation grid, then summarize it; the same as `sweep ablate`.

    Args:
        config: a SweepConfig, a sweep file, or None (the built-in digits sweep).
        name: the ablation's name (default: derived from the grid).
        yes: run a large or long grid without asking (the CLI asks on a terminal).
        dask_scheduler: train the cells on this Dask cluster's workers (as ``sweep.run``'s).
        **overrides: ``keep_probs=[1, 0.5]``, ``sizes=[300, 1000]``, ``seeds=5``, ``vary=["normalization=none,batchnorm"]``, ...
            ``until="decided"`` (with ``precision=2.0`` points, ``max_seeds=10``): seeds added in rounds while
            a comparison is undecided, as ``--until-decided``; ``result.outcome.decisions`` then holds each
            comparison's `sweep.analysis.sequential.SequentialComparison` (seeds, decision, reason).
    """
    from sweep.ablation.runner import run_ablation
    from sweep.search.progress import EXIT_FAULT, EXIT_UNTRACKED

    cfg = _config(config, overrides)
    if not checked:
        _preflight(cfg, workdir, ablation=True, local=dask_scheduler is None)
    with _progress_bar(progress, None, "cells") as listener:
        o = run_ablation(cfg, name=name, out=out or sys.stdout, workdir=_path(workdir), yes=yes,
                         on_progress=listener, dask_scheduler=dask_scheduler)
    code = 130 if o.interrupted else EXIT_FAULT if o.fault else EXIT_UNTRACKED if o.untracked is not None else 0
    return _ablation_result(cfg, o, code, _path(workdir), tables)


def compare(config: SweepConfig | str | Path | None = None, *, arms: list[str] | None = None, budget: int = 8,
            seeds: int = 5, size: int | None = None, fix: list[str] | Mapping[str, Mapping[str, Any]] | None = None,
            workdir: str | Path | None = None, out: TextIO | None = None, checked: bool = False,
            **overrides: object) -> CompareOutcome:
    """Regularizers compared fairly on the test split; the same as `sweep compare` (resumable).

    Each arm's strength is searched on the validation set with `budget` trials (or given in
    `fix`, e.g. ``["l2:reg=1e-3"]`` or ``{"l2": {"reg": 1e-3}}``), then every arm is re-trained on
    the same `seeds` seeds (same init, batch order and rows per seed) and evaluated on test.

    Args:
        config: a SweepConfig, a sweep file, or None; the base configuration is its
            [ablation.params], else the study's best trial.
        arms: names from `sweep.ablation.arms.ARM_NAMES` ('none' required); default every arm the data take.
        size: training rows (default: the config's num_train, else the whole split).

    Returns:
        `sweep.ablation.compare.CompareOutcome`: records per (arm, seed), the summary, the report's path.
    """
    from sweep.ablation.compare import run_compare

    cfg = _config(config, overrides)
    if not checked:
        _preflight(cfg, workdir, ablation=True)
    return run_compare(cfg, arms=arms, budget=budget, seeds=seeds, size=size, fixed=fix,
                       workdir=(_path(workdir) or Path.cwd()).resolve(), out=out or sys.stdout)


def report(config: SweepConfig | str | Path | None = None, *, out_dir: str | Path | None = None,
           workdir: str | Path | None = None, out: TextIO | None = None, checked: bool = False,
           written: Any = None, **overrides: object) -> Report:
    """Write report.md and its figures for the study and its ablations; the same as `sweep report`.

    Raises:
        ConfigError: nothing is recorded for the study.
        sweep.reporting.report.ReportNotUploaded: written on disk, but MLflow did not take it (the CLI's exit 3).
    """
    from sweep.reporting.report import write_report

    cfg = _config(config, overrides)
    if not checked:
        _preflight(cfg, workdir, train=False)
    from sweep.reporting.report import ReportWritten

    written = written if written is not None else ReportWritten()
    path = write_report(cfg, out_dir=_path(out_dir), workdir=_path(workdir), out=out, written=written)
    figures = tuple(sorted((path.parent / "figures").rglob("*.png")))
    verdict = "\n\n".join(f"**{name}**: {opening}" for name, opening in written.openings)
    return Report(cfg.study_name, path, figures, verdict)


def status(study: str | None = None, *, storage: str | None = None, tracking_uri: str | None = None,
           workdir: str | Path | None = None) -> list[StudyStatus]:
    """How each study of the storage stands (read-only), as `sweep status` prints it."""
    from sweep.search.status import read_statuses

    return read_statuses(study, storage, tracking_uri, (_path(workdir) or Path.cwd()).resolve())


def load_study(config: SweepConfig | str | Path | None = None, *, workdir: str | Path | None = None,
               **overrides: object) -> StudyResults:
    """Read a study back from its storage (nothing is trained or written)."""
    from sweep.config.domains import ConfigError
    from sweep.paths import SweepPaths
    from sweep.search.study import make_storage, open_study

    cfg = _config(config, overrides)
    where = (_path(workdir) or Path.cwd()).resolve()
    paths = SweepPaths.for_study(where, cfg.study_name)
    try:
        study = open_study(cfg, make_storage(cfg.storage, paths.journal), create=False)
    except KeyError:
        raise ConfigError(f"--study: no study {cfg.study_name!r} in this storage; run `sweep run` first") from None
    best, value, params, test = _best_of(study)
    return StudyResults(cfg, where, study.trials_dataframe(), best, value, params, test)


# -- helpers -----------------------------------------------------------------------------


def _path(p: str | Path | None) -> Path | None:
    return None if p is None else Path(p)


def _preflight(cfg: SweepConfig, workdir: str | Path | None, *, train: bool = True, ablation: bool = False,
               local: bool = True) -> None:
    """The CLI's checks before anything is created: a usable tracking URI and storage URL, writable
    folders, and (to train) no more workers than cores and a network that fits in memory."""
    from sweep.config.bounds import check_jobs, check_memory, useful_jobs
    from sweep.config.preflight import check_storage, check_tracking_uri, check_writable
    from sweep.tracking.store import default_tracking_uri

    where = (_path(workdir) or Path.cwd()).resolve()
    tracking_uri = cfg.tracking_uri or default_tracking_uri(where)
    check_tracking_uri(tracking_uri, "[sweep] tracking_uri")
    check_storage(cfg.storage, "[sweep] storage")
    check_writable({where: "working folder"})
    if train and local:
        check_jobs(cfg, "[sweep] jobs")
        check_memory(cfg, useful_jobs(cfg.resolved_jobs(), 10**9 if ablation else cfg.trials), ablation=ablation)


class _progress_bar:
    """A tqdm bar (a widget in Jupyter) fed by the runner's progress callback; a no-op when off."""

    def __init__(self, enabled: bool, total: int | None, unit: str) -> None:
        self.enabled, self.total, self.unit, self.bar = enabled, total, unit, None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, unit=self.unit, file=sys.stderr)

        def listener(done: int, total: int) -> None:
            assert self.bar is not None
            if self.bar.total != total:
                self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

        return listener

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _best_of(study: optuna.Study) -> tuple[int | None, float | None, dict[str, Any] | None, float | None]:
    """The best completed trial's number, value and params, and its test accuracy if computed."""
    try:
        best = study.best_trial
    except ValueError:  # no completed trial
        return None, None, None, None
    stored = study.user_attrs.get("best_test_acc") or {}
    test = float(stored["acc"]) if stored.get("trial") == best.number else None
    assert best.value is not None  # a completed trial's
    return best.number, float(best.value), dict(best.params), test


def _sweep_result(cfg: SweepConfig, o: SweepOutcome, code: int, workdir: Path | None, tables: bool) -> SweepResult:
    import pandas as pd

    from sweep.redact import mask_url

    trials = load_study(cfg, workdir=workdir).trials if tables else pd.DataFrame()
    return SweepResult(
        study=o.study_name, target=cfg.trials, counted=o.counted, best_trial=o.best_number,
        best_val_acc=o.best_value, best_params=o.best_params, test_acc=o.test_acc, interrupted=o.interrupted,
        all_in_mlflow=o.untracked is None, tracking_uri=mask_url(o.tracking_uri) or "",
        experiment_id=o.experiment_id, parent_run_id=o.parent_run_id, best_run_id=o.best_run_id,
        trials=trials, exit_code=code,
    )


def _ablation_result(cfg: SweepConfig, o: AblationOutcome, code: int, workdir: Path | None, tables: bool) -> AblationResult:
    """Read the ablation's cells back from MLflow and summarize them as the report does."""
    import numpy as np

    from sweep.analysis.stats import summarize
    from sweep.reporting.report import load_ablations
    from sweep.tracking.store import default_tracking_uri, make_client

    runs: list[Any] = []
    summaries: list[tuple[dict[str, str], AblationSummary]] = []
    if o.experiment_id is not None and tables:
        from sweep.paths import paths_of_config

        where = (workdir or Path.cwd()).resolve()
        client = make_client(cfg.tracking_uri or default_tracking_uri(where))
        for ab in load_ablations(client, o.experiment_id, paths_of_config(where, cfg).key):
            if ab.name != o.name:
                continue
            runs = ab.cells
            by_levels: dict[tuple[tuple[str, str], ...], list[Any]] = {}
            for c in ab.cells:
                by_levels.setdefault(c.levels, []).append(c)
            for levels, cells in sorted(by_levels.items()):
                summaries.append((dict(levels), summarize(cells, rng=np.random.default_rng(cfg.seed))))
    from sweep.reporting.verdict import verdict

    text = "\n\n".join((f"**{', '.join(f'{k}={v}' for k, v in lv.items())}**\n\n" if lv else "") + verdict(s)
                       for lv, s in summaries)
    return AblationResult(
        name=o.name, study=cfg.study_name, cells_total=o.cells_total, cells_done=o.cells_done,
        interrupted=o.interrupted, all_in_mlflow=o.untracked is None, experiment_id=o.experiment_id,
        parent_run_id=o.parent_run_id, runs=runs_table(runs), cells=cells_table(summaries),
        comparisons=comparisons_table(summaries), verdict=text, exit_code=code, outcome=o,
    )


