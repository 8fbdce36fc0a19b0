"""The worker side of a sweep: one task = one Optuna trial, in a loky process or on a Dask worker.

The parent (sweep.search.runner) submits `run_one_trial(ctx)` tasks; each opens the
study (cached per process), reaps trials whose worker died, checks the target
and the time budget, trains one trial and returns its outcome with its events.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from sweep.config.budget import over_deadline
from sweep.search.objective import TrialContext, TrialFailed, trial_objective
from sweep.search.recovery import disk_error, disk_error_text, fail_and_requeue, fault_outcome
from sweep.tracking import spool
from sweep.tracking.backpressure import mark_ended, wait_for_mirror

if TYPE_CHECKING:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage

_worker_cache: dict[tuple[Any, ...], Any] = {}


def _worker_study(ctx: TrialContext) -> Any:
    import optuna

    from sweep.search.study import make_pruner, make_sampler, make_storage

    key = ("study", ctx.storage_url, str(ctx.journal_path), ctx.study_name, ctx.reproducible_lag)
    if key not in _worker_cache:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        sampler: BaseSampler = make_sampler(ctx.seed)
        pruner: BasePruner = make_pruner(ctx.pruner, ctx.max_epochs)
        if ctx.reproducible_lag is not None:
            from sweep.search.reproducible import lagged

            # Owner first: a trial waiting for older ones must not look like a worker killed before its first record.
            sampler, pruner = lagged(sampler, pruner, ctx.reproducible_lag,
                                     on_wait=lambda study, trial: _record_owner(study._storage, trial._trial_id, ctx))
        _worker_cache[key] = optuna.load_study(
            study_name=ctx.study_name,
            storage=make_storage(ctx.storage_url, ctx.journal_path),
            sampler=sampler,
            pruner=pruner,
        )
    return _worker_cache[key]


def _record_owner(storage: BaseStorage, trial_id: int, ctx: TrialContext) -> None:
    """The trial's liveness record every machine can read (the spool file is on this one's disk)."""
    import socket

    from sweep.search.study import WORKER_ATTR

    pid = os.getpid()
    owner: dict[str, Any] = {"host": socket.gethostname(), "pid": pid, "proc_start": spool.process_start_time(pid),
             "sweep": ctx.sweep_process}
    storage.set_trial_system_attr(trial_id, WORKER_ATTR, owner)


def _worker_data(ctx: TrialContext) -> dict[str, np.ndarray]:
    key = ("data", ctx.data)
    if key not in _worker_cache:
        _worker_cache[key] = ctx.data.load()
    return _worker_cache[key]


def run_one_trial(ctx: TrialContext) -> dict[str, Any]:
    """Worker task: run one trial of the study, or none once the target is reached; returns its outcome.

    With `ctx.target_trials` set, the task first checks the storage at that
    moment (sweep.search.study.check_target): if counted plus RUNNING trials already
    reach the target (another `sweep run` on the same study got there) and no
    trial is WAITING, it creates no trial and returns a skipped outcome
    (`skipped` True, `state` "SKIPPED", `number` -1, no events). There is no
    lock: tasks that check at the same instant can still overshoot the target
    by at most (number of concurrently starting workers - 1).
    """
    from sweep.search.study import (
        check_target,
        is_storage_error,
        reap_stale_trials,
        short_storage_error,
        spool_path,
        with_storage_retry,
    )

    # MLflow behind on short trials: the parent's tracker holds new trials back (sweep.tracking.backpressure).
    wait_for_mirror(ctx.spool_dir, parent=ctx.sweep_process)
    if over_deadline(ctx.deadline):  # first: costs no storage read
        return _budget_skip()
    # A new worker's first storage connection may meet a restarting database too.
    study = with_storage_retry(_worker_study, ctx)
    # Dask re-runs the task of a worker that died (loky instead tells the parent,
    # which reaps): fail that worker's trial here and re-queue it, so this task
    # runs its params instead of leaving it RUNNING. Journal storage has no
    # heartbeat; with RDB this comes before the heartbeat's grace period.
    # Before any trial, the storage must answer: a restarting database is waited for (up to 2 min).
    with_storage_retry(reap_stale_trials, study, ctx.spool_dir, "worker process died", requeue_interrupted=False,
                       leave_sweep=ctx.sweep_process)
    if ctx.target_trials is not None:
        # After the reaping, so a dead worker's trial counts as re-queued, not as running.
        # Racy by design: a task that checks while another is between its check and
        # Optuna's ask sees one trial too few (overshoot <= concurrent starters - 1).
        check = with_storage_retry(check_target, study, ctx.target_trials)
        if not check.start:
            return {
                "skipped": True,
                "state": "SKIPPED",
                # No trial: -1 and no events, so the parent's spool adoption writes nothing.
                "number": -1,
                "value": None,
                "params": {},
                "reason": f"the study already has {check.counted + check.running}/{check.target} trials "
                          f"counted or running ({check.counted} counted + {check.running} running)",
                "counted": check.counted,
                "running": check.running,
                "pid": os.getpid(),
                "spool": "",
            }
    data = _worker_data(ctx)
    done: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        done["number"] = trial.number
        _record_owner(trial.study._storage, trial._trial_id, ctx)
        return trial_objective(trial, ctx, data)

    try:
        with trial_blas_threads(ctx):
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    except spool.SpoolWriteError as exc:
        # Nothing more can be recorded here: the parent stops the sweep (Optuna failed the trial).
        return fault_outcome(done.get("number", -1), exc.strerror or str(exc), stop=True)
    except Exception as exc:
        disk = disk_error(exc)
        if disk is not None:  # the journal's disk is full or read-only: nothing more can be recorded
            return fault_outcome(done.get("number", -1), disk_error_text(disk), stop=True)
        if not is_storage_error(exc):
            raise
        # The database went away under the trial (restarting?): once it answers again, fail
        # the trial with the reason and re-queue its params (the objective ended its spool run).
        reason = f"the Optuna storage failed: {short_storage_error(exc)}"
        if "number" in done:
            with_storage_retry(fail_and_requeue, study, done["number"], reason, ctx.spool_dir)
        return fault_outcome(done.get("number", -1), reason)
    if ctx.sweep_process is not None and "number" in done:  # loky: the parent's gate counts it (backpressure)
        mark_ended(spool_path(ctx.spool_dir, done["number"]))
    storage = study._storage
    frozen = with_storage_retry(
        lambda: storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, done["number"])))
    # The trial's events (a few kB) travel back with the outcome: a Dask worker on
    # another machine writes its spool file on its own disk, which the parent's tracker cannot read.
    events = spool_path(ctx.spool_dir, frozen.number)
    return {
        "number": frozen.number,
        "state": frozen.state.name,
        "value": frozen.value,
        "params": dict(frozen.params),
        "reason": frozen.user_attrs.get("failure_reason"),
        "pid": os.getpid(),
        "spool": events.read_text(encoding="utf-8") if events.exists() else "",
    }


def trial_blas_threads(ctx: TrialContext) -> Any:
    """One BLAS thread in the reproducible mode, whatever --jobs or the Dask worker says (see
    sweep.search.reproducible.BLAS_THREADS); else no change (cores // jobs, set by the parent)."""
    import contextlib

    if ctx.reproducible_lag is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    from sweep.search.reproducible import BLAS_THREADS

    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")


def _budget_skip() -> dict[str, Any]:
    """Outcome of a task that found the time budget over: no trial, no events (like a target skip)."""
    return {"skipped": True, "budget": True, "state": "SKIPPED", "number": -1, "value": None, "params": {},
            "reason": "the time budget is over", "pid": os.getpid(), "spool": ""}


# -- parent side ----------------------------------------------------------------
