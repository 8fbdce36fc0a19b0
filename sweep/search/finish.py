"""The end of a sweep: the best trial's test accuracy (once), the parent run's summary, the outcome.

Kept apart from the runner's rounds: what a finished (or interrupted) sweep
reports and keeps, read from the storage with a retry for a restarting database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sweep.config.budget import Budget
from sweep.config.sweep_file import SweepConfig
from sweep.paths import SweepPaths
from sweep.search.progress import SweepOutcome, print_summary
from sweep.search.recovery import stop_tracker
from sweep.tracking.store import summary_tags
from sweep.training import evaluate, load_weights, num_classes_of


def finish(
    cfg: SweepConfig, study: Any, data: dict[str, np.ndarray], paths: SweepPaths, tracker: Any,
    tracking_uri: str, interrupted: bool, out: TextIO, *, budget: Budget | None = None,
) -> SweepOutcome:
    from sweep.search.study import check_target, counted_trials, with_storage_retry

    best_number = best_value = best_params = test_acc = None
    # Every storage call here waits for a restarting database, as the sweep's own calls do.
    trials = with_storage_retry(study.get_trials, deepcopy=False)
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    if completed:
        best = max(completed, key=lambda t: t.value)
        best_number, best_value, best_params = best.number, best.value, dict(best.params)
        test_acc = with_storage_retry(_test_accuracy, study, best, data, paths, cfg.space, cfg.model)
    # After a full run every trial of this process has ended, so a trial still
    # RUNNING belongs to another `sweep run` of the study, which ends the shared
    # parent run when it finishes (the last one to finish sees none running).
    # After an interrupt a RUNNING trial may be this process's own, its worker
    # not gone yet: the parent is marked KILLED as before.
    others = 0 if interrupted else with_storage_retry(check_target, study, cfg.trials).running
    if others:
        out.write(f"{others} trial(s) of this study still run in another sweep process; "
                  "it will end the MLflow parent run\n")
    if best_number is not None:  # queued: sent with the final drain (or kept for `sweep sync`)
        # A Dask sweep has no test accuracy (the best weights stay on the worker): its best trial is still named.
        test_tag = summary_tags({"best_test_acc": test_acc}) if test_acc is not None else {}
        tracker.log_parent("study", tags={"best_trial": best_number, **test_tag})
    missing = stop_tracker(tracker, None if others else "KILLED" if interrupted else "FINISHED", out)
    outcome = SweepOutcome(
        study_name=study.study_name, experiment_id=tracker.experiment_id,
        parent_run_id=tracker.parent_run_ids.get("study"), tracking_uri=tracking_uri,
        best_number=best_number, best_value=best_value, best_params=best_params, test_acc=test_acc,
        interrupted=interrupted, counted=with_storage_retry(counted_trials, study),
        best_run_id=with_storage_retry(_run_id_of, study, best_number),
        untracked=None if missing.empty else missing, tracking_error=tracker.health.last_error,
    )
    if test_acc is not None and outcome.best_run_id and missing.empty and tracker.drained:
        mark_best(tracker, study.study_name, outcome.best_run_id, test_acc, out)
    if budget is not None and budget.over() and not interrupted and outcome.counted < cfg.trials:
        outcome.budget_seconds = budget.seconds  # the budget, not the target, ended this sweep
    print_summary(outcome, cfg, out)
    return outcome


def mark_best(tracker: Any, study_name: str, run_id: str, test_acc: float, out: TextIO) -> None:
    """The best trial's run says so, with its test accuracy (sweep.tracking.best); MLflow
    refusing it costs a warning line, not the sweep's end.

    Tried three times: two `sweep run`s of one study ending together mark the same run, and
    MLflow's SQLite tag write is read-then-insert (the second at the same moment: IntegrityError).
    """
    import time

    from sweep.tracking.best import mark_best_trial
    from sweep.tracking.outage import short_reason

    for attempt in range(3):
        try:
            mark_best_trial(tracker.client, tracker.experiment_id, tracker.parent_run_ids["study"], run_id,
                            study_name, test_acc)
            return
        except Exception as exc:
            if attempt == 2:
                out.write(f"warning: could not mark the best trial's MLflow run as the best ({short_reason(exc)})\n")
            else:
                time.sleep(0.5 * (attempt + 1))


def _run_id_of(study: Any, number: int | None) -> str | None:
    """The MLflow run id recorded for trial `number` (on the trial, or on the study for a finished one)."""
    if number is None:
        return None
    trial = study.get_trials(deepcopy=False)[number]
    return trial.user_attrs.get("mlflow_run_id") or study.user_attrs.get(f"mlflow_run_id:{number}")


def _test_accuracy(study: Any, best: Any, data: dict[str, np.ndarray], paths: SweepPaths, space: Any,
                   model: Any = None) -> float | None:
    """Test accuracy of the best trial, computed once and kept on the study."""
    stored = study.user_attrs.get("best_test_acc")
    if stored and stored.get("trial") == best.number:
        return float(stored["acc"])
    weights_file = paths.weights_dir / f"trial-{best.number:04d}.npz"
    if not weights_file.exists() or "X_test" not in data:
        return None
    params = space.params_from_trial(best.params)
    try:
        acc = evaluate(params, load_weights(weights_file), data["X_test"], data["y_test"], num_classes_of(data),
                       model=model)
    except Exception:
        if model is None:
            raise
        return None  # your own net raised in test mode: no test accuracy (its trials' records say why)
    study.set_user_attr("best_test_acc", {"trial": best.number, "acc": acc})
    remove_beaten_weights(study, best, paths.weights_dir)
    return acc


def remove_beaten_weights(study: Any, best: Any, weights_dir: Path) -> list[Path]:
    """Delete the saved weights of trials that can no longer be the best; returns what was deleted.

    Only the best trial's weights are worth keeping, but another `sweep run` on
    this study may have saved a newer best since `best` was read: so the trials
    are read again and a file goes only if its trial has finished with a value
    no higher than the best's (and is not the best). Files of trials still
    running, or finished after that read, stay.
    """
    from optuna.trial import TrialState

    finished = {t.number: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    removed = []
    for f in weights_dir.glob("trial-*.npz"):
        try:
            number = int(f.stem.removeprefix("trial-"))
        except ValueError:  # not a file this module wrote
            continue
        if number != best.number and number in finished and finished[number] <= best.value:
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed
