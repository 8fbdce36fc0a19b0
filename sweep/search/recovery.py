"""What a sweep does when one of its parts fails: the storage, the spool folder, the tracker.

Kept apart from the runner (which schedules the work): the worker's answer to a
database that went away under its trial, the outcome of a trial a fault ended,
and the parent's bounded end of tracking (sweep.tracking.outage says what is missing).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sweep.tracking import spool

if TYPE_CHECKING:
    import optuna

    from sweep.tracking.outage import Backlog
    from sweep.tracking.tracker import Tracker


def fail_and_requeue(study: optuna.Study, number: int, reason: str, spool_dir: Path) -> None:
    """Fail trial `number` (if still RUNNING) with `reason` and re-queue it, unless already re-queued;
    a trial cut before its first spool record still gets its (FAILED) MLflow run."""
    import optuna
    from optuna.trial import TrialState

    from sweep.search.study import record_lost_trial, requeue, retried_numbers, spool_path

    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    path = spool_path(spool_dir, number)
    if not path.exists() or spool.read_state(path).start is None:
        record_lost_trial(path, study.study_name, number, storage.get_trial(trial_id).params,
                          spool.end_status("FAIL"), {spool.STATE_TAG: "FAIL", "failure_reason": reason})
    if storage.get_trial(trial_id).state == TrialState.RUNNING:
        try:
            storage.set_trial_user_attr(trial_id, "failure_reason", reason)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)  # the claim (a row lock on RDB)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # failed meanwhile by Optuna's heartbeat, which re-queues it
    trial = storage.get_trial(trial_id)
    if trial.state == TrialState.FAIL and number not in retried_numbers(study.get_trials(deepcopy=False)):
        requeue(study, trial)


# A full disk, a quota, a read-only or forbidden folder: the user's to fix, never a traceback.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(exc: BaseException | None) -> OSError | None:
    """The OSError of a full or read-only disk behind `exc` (itself, its cause or context), if any.

    Optuna hides one: when its tell cannot write the journal, its `finally` raises
    `AssertionError: Should not reach.` with the write error only as the context.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def disk_error_text(exc: OSError) -> str:
    """'cannot write FILE: REASON', for a trial's failure reason and the user."""
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot write{where}: {exc.strerror or exc}"


def fault_outcome(number: int, reason: str, *, stop: bool = False) -> dict[str, Any]:
    """Outcome of a trial a fault ended (no spool text: the parent reads the shared disk or nothing)."""
    return {"number": number, "state": "FAIL", "value": None, "params": {}, "reason": reason,
            "pid": os.getpid(), "spool": "", "stop": stop}


def say_to(out: TextIO) -> Any:
    """A line printer for the tracker thread (its outage and catch-up lines)."""

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    return say


def stop_tracker(tracker: Tracker, parent_status: str | None, out: TextIO) -> Backlog:
    """End tracking within the stated wait (SWEEP_TRACKING_WAIT); returns what is not in MLflow."""
    from sweep.tracking.tracker import tracking_wait_seconds

    wait = tracking_wait_seconds()
    if tracker.health.down:
        out.write(f"waiting up to {wait:.0f} s for MLflow at {tracker.health.where} to come back "
                  "(SWEEP_TRACKING_WAIT=SECONDS changes this)\n")
        out.flush()
    return tracker.stop(parent_status=parent_status, timeout=wait)
