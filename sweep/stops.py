"""What a command says when a signal stops it where there is no trial to mark: after the
sweep's last trial, or while `sweep report` writes its folder.

A signal (Ctrl-C, SIGTERM) arriving while `sweep run` ends (the best trial's test
accuracy, the wait for MLflow, the summary) used to exit 130/143 in silence, with
the runs maybe not in MLflow yet. `stopped_ending` stops waiting, records the parent
run's end for `sweep sync`, and says what MLflow lacks, in the NOT ALL IN MLFLOW lines
of a tracking outage.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any, TextIO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (every `sweep` command: see sweep.cli.main)."""

    signal_name = "SIGTERM"


def raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def signal_name(exc: BaseException) -> str:
    """'SIGTERM' for the sweep's SIGTERM exception, else 'Ctrl-C (SIGINT)'."""
    return getattr(exc, "signal_name", "Ctrl-C (SIGINT)")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (a few lines to print, a rename): a second
    signal lands after it, not in the middle."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stopped_ending(exc: BaseException, study: str, tracker: Any, tracking_uri: str, out: TextIO) -> Any:
    """A signal stopped `sweep run` after its last trial: say so and what MLflow lacks; the
    SweepOutcome (interrupted)."""
    from sweep.progress import SweepOutcome, print_stopped_ending

    with signals_held():
        untracked = tracker.abandon("KILLED")  # the parent run's end, for `sweep sync`
        print_stopped_ending(signal_name(exc), study, tracking_uri, untracked, out)
    return SweepOutcome(
        study_name=study, experiment_id=tracker.experiment_id, parent_run_id=tracker.parent_run_ids.get("study"),
        tracking_uri=tracking_uri, best_number=None, best_value=None, best_params=None, test_acc=None,
        interrupted=True, counted=0, untracked=None if untracked.empty else untracked,
    )
