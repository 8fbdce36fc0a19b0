"""The Optuna side of one trial: `trial_objective` draws the params, trains through
`sweep.training.train` with pruning as its per-epoch hook, and records the outcome."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sweep.config.display import NOTE_TAG, mlflow_params, run_note
from sweep.data.spec import DataSpec
from sweep.own_net import TRACEBACK_TAG, model_tags, traceback_tags
from sweep.search.baseline import BASELINE_ATTR, BASELINE_TAG
from sweep.tracking.spool import STATE_TAG, RunRecorder, SpoolWriteError, end_status
from sweep.tracking.store import summary_chart_metrics, summary_tags
from sweep.training import RunResult, RunSeeds, save_weights, train

if TYPE_CHECKING:
    import optuna

    from sweep.config.model_spec import ModelSpec
    from sweep.config.space import SearchSpace, TrainParams

# -- Optuna trials -----------------------------------------------------------


class TrialFailed(Exception):
    """A trial ended as failed (e.g. its loss diverged); the sweep goes on."""


@dataclass(frozen=True)
class TrialContext:
    """Everything a worker process needs to run trials of one study (picklable)."""

    study_name: str
    storage_url: str | None
    journal_path: Path
    seed: int
    space: SearchSpace
    spool_dir: Path
    weights_dir: Path
    data: DataSpec  # the sweep's arrays (every worker loads the same memory-mapped cache)
    pruner: str
    max_epochs: int
    # The study's --trials target: a task starts no trial once it is reached
    # (sweep.search.study.check_target). None: no check (the task always runs one).
    target_trials: int | None = None
    # End of the time budget (`--timeout`), wall-clock `time.time()`: a task starts
    # no trial after it (sweep.config.budget). None: no budget.
    deadline: float | None = None
    # The `sweep run` process ("host:pid:start") that runs these tasks on loky workers: it
    # reaps its own workers' trials (it sees every death, and stops them on an interrupt),
    # so a worker leaves a sibling's trial alone; seen dead mid-way through the parent's
    # stop, it would be called "worker process died" instead of "interrupted". None on
    # Dask, where the task re-run after its worker died must reap that worker's trial.
    sweep_process: str | None = None
    # k of the reproducible mode (sweep.search.reproducible): trial n's sampler and pruner see only
    # the trials < n - k, all finished. None: off.
    reproducible_lag: int | None = None
    # Your own net (--model), checked by the parent (sweep.check.contract); None: the built-in one.
    # Strings only: the worker imports the class itself (sweep.own_net).
    model: ModelSpec | None = None


def trial_objective(trial: optuna.Trial, ctx: TrialContext, data: Mapping[str, np.ndarray]) -> float:
    """Optuna objective: best validation accuracy of one training run.

    Reports val_acc each epoch for pruning; records params, per-epoch metrics
    and the outcome in the trial's spool file (-> MLflow child run).
    """
    from sweep.search.study import seed_index

    frozen = trial.study._storage.get_trial(trial._trial_id)
    index = seed_index(frozen)
    params = ctx.space.suggest(trial)
    seeds = RunSeeds.derive(ctx.seed, index)
    tags = {
        "optuna.trial_number": trial.number,
        "optuna.study": ctx.study_name,
        "sweep.seed_index": index,
        "sweep.init_seed": seeds.init,
        "sweep.order_seed": seeds.order,
        "sweep.kind": "trial",
        **model_tags(ctx.model),
    }
    if BASELINE_ATTR in trial.user_attrs:  # the no-dropout trial every new sweep queues (search.baseline)
        tags[BASELINE_TAG] = trial.user_attrs[BASELINE_ATTR]
    try:
        return _train_recorded(trial, ctx, data, params, seeds, tags)
    except SpoolWriteError as exc:  # the spool folder cannot be written (disk full): say which, on the trial
        with contextlib.suppress(Exception):
            trial.set_user_attr("failure_reason", exc.strerror)
        raise


def _train_recorded(trial: optuna.Trial, ctx: TrialContext, data: Mapping[str, np.ndarray], params: TrainParams, seeds: RunSeeds,
                    tags: dict[str, Any]) -> float:
    """Train one trial's run, its events in the trial's spool file (see trial_objective)."""
    import optuna

    from sweep.search.study import spool_path

    with RunRecorder(spool_path(ctx.spool_dir, trial.number)) as rec:
        # MLflow params as a person writes them (0.85, 6.837e-4); Optuna keeps the exact floats.
        shown = mlflow_params(params.to_flat(), ctx.space)
        rec.start(f"trial-{trial.number:04d}", "study", shown, tags)

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            trial.report(metrics["val_acc"], epoch)
            return not trial.should_prune()

        try:
            result = train(params, data, seeds, recorder=rec, on_epoch=report, keep_best_weights=True,
                           model=ctx.model)
        except BaseException as exc:  # interrupt or a bug: record it, let Optuna fail the trial
            interrupted = isinstance(exc, KeyboardInterrupt)
            from sweep.search.study import is_storage_error, short_storage_error

            if interrupted:
                reason = "interrupted"
            elif isinstance(exc, SpoolWriteError):
                reason = exc.strerror or str(exc)  # always set: SpoolWriteError(errno, text)
            elif is_storage_error(exc):
                reason = f"the Optuna storage failed: {short_storage_error(exc)}"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            # The spool end first, each step on its own: the storage (database restarting)
            # or the spool folder (disk full) may be what failed.
            with contextlib.suppress(OSError, ValueError):
                rec.end(end_status("FAIL", interrupted=interrupted), {STATE_TAG: "FAIL", "failure_reason": reason,
                        NOTE_TAG: run_note(shown, "FAIL", {}, failure_reason=reason)})
            with contextlib.suppress(Exception):
                trial.set_user_attr("failure_reason", reason)
                if interrupted:
                    trial.set_user_attr("interrupted", True)
            raise
        summary = result.summary
        trial.set_user_attr("summary", summary)
        _record_timing(trial, result, data)
        if "final_gap" in summary:
            trial.set_user_attr("gap", summary["final_gap"])
        if result.state == "FAIL":
            trial.set_user_attr("failure_reason", result.failure_reason)
            if result.traceback:  # your own net raised: its traceback on the trial and its run
                trial.set_user_attr(TRACEBACK_TAG, result.traceback)
            note = run_note(shown, "FAIL", summary, failure_reason=result.failure_reason)
            rec.end(end_status("FAIL"), {STATE_TAG: "FAIL", "failure_reason": result.failure_reason, NOTE_TAG: note,
                                         **summary_tags(summary), **traceback_tags(result)}, summary_chart_metrics(summary))
            raise TrialFailed(result.failure_reason)
        if result.state == "PRUNED":
            trial.set_user_attr("pruned_at_epoch", result.stopped_epoch)
            note = run_note(shown, "PRUNED", summary, pruned_at_epoch=result.stopped_epoch)
            rec.end(end_status("PRUNED"), {STATE_TAG: "PRUNED", "pruned_at_epoch": result.stopped_epoch, NOTE_TAG: note,
                                           **summary_tags(summary)}, summary_chart_metrics(summary))
            raise optuna.TrialPruned(f"pruned at epoch {result.stopped_epoch}")
        if result.best_weights is not None and _is_best_so_far(trial.study, result.best_val_acc):
            save_weights(ctx.weights_dir / f"trial-{trial.number:04d}.npz", result.best_weights)
        rec.end(end_status("COMPLETE"), {STATE_TAG: "COMPLETE", NOTE_TAG: run_note(shown, "COMPLETE", summary),
                                         **summary_tags(summary)}, summary_chart_metrics(summary))
        return result.best_val_acc


def _record_timing(trial: optuna.Trial, result: RunResult, data: Mapping[str, np.ndarray]) -> None:
    """Median epoch seconds and the rows it took, for `sweep ablate`'s cost estimate (sweep.ablation.cost)."""
    from threadpoolctl import threadpool_info

    secs = sorted(e["epoch_seconds"] for e in result.epochs if "epoch_seconds" in e)
    if secs:
        # The BLAS threads this worker ran with (cores // jobs): an ablation on other workers scales by them.
        threads = max((i.get("num_threads", 1) for i in threadpool_info() if i.get("user_api") == "blas"), default=1)
        trial.set_user_attr("timing", {
            "epoch_seconds": float(secs[len(secs) // 2]), "num_train": int(data["X_train"].shape[0]),
            "num_val": int(data["X_val"].shape[0]), "input_dim": int(data["X_train"].shape[1]),
            "threads": int(threads),
        })


def _is_best_so_far(study: optuna.Study, value: float) -> bool:
    try:
        return value >= study.best_value
    except ValueError:  # no completed trial yet
        return True
