"""Trials a Dask sweep lost with their worker (a container killed, a machine gone).

When a Dask worker disappears mid-trial, Dask runs its task again on another
worker, but that task cannot tell that the RUNNING trial it finds is dead (it
ran on another host), so it counts it towards `--trials` and starts nothing.
Once every task of the sweep has returned and no other `sweep run` process
works on the study, a trial still RUNNING can only be one of those. Optuna's
heartbeat (RDB storages) then marks it stale within its grace period: this
waits for that, fails it and queues its parameters again (the storage's
`requeue` callback), so the sweep's next round trains it.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, TextIO

import optuna

from sweep.search.study import HEARTBEAT_SECONDS

# Optuna fails a trial whose heartbeat is older than its grace period (3 beats);
# one more beat of margin, then the trial is left to the next `sweep run`.
LOST_WAIT_SECONDS = 4 * HEARTBEAT_SECONDS


def reclaim_lost_trials(study: Any, *, wait_seconds: float = LOST_WAIT_SECONDS) -> list[int]:
    """Fail and re-queue the study's RUNNING trials once their heartbeat is stale (at most
    `wait_seconds`); returns their numbers ([] when none was running or none went stale)."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    deadline = time.monotonic() + wait_seconds
    while running and time.monotonic() < deadline:
        time.sleep(1.0)
        with warnings.catch_warnings():  # flagged experimental; a no-op without a heartbeat
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        still = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        if not still & running:
            return sorted(running)
    return sorted(running - {t.number for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))})


def requeue_lost_dask_trials(study: Any, dask_scheduler: str | None, out: TextIO, say: Any) -> None:
    """In a Dask sweep (`dask_scheduler` set) that no other sweep process shares, fail and
    re-queue the trials a vanished worker left RUNNING, saying which."""
    from sweep.search.status import other_sweep_processes
    from sweep.search.study import with_storage_retry

    if dask_scheduler is None or other_sweep_processes(study.user_attrs):
        return  # another process's RUNNING trials are alive
    lost = with_storage_retry(reclaim_lost_trials, study, say=say)
    if lost:
        out.write(f"trial(s) {lost} ran on a Dask worker that is gone (no heartbeat within "
                  f"{LOST_WAIT_SECONDS} s): failed and re-queued\n")
