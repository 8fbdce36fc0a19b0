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
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from types import FrameType

    from sweep.search.progress import SweepOutcome
    from sweep.tracking.tracker import Tracker

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (every `sweep` command: see sweep.cli.main)."""

    signal_name = "SIGTERM"


def raise_terminated(signum: int, frame: FrameType | None) -> None:
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


def stopped_ending(exc: BaseException, study: str, tracker: Tracker, tracking_uri: str, out: TextIO) -> SweepOutcome:
    """A signal stopped `sweep run` after its last trial: say so and what MLflow lacks; the
    SweepOutcome (interrupted)."""
    from sweep.search.progress import SweepOutcome, print_stopped_ending

    with signals_held():
        untracked = tracker.abandon("KILLED")  # the parent run's end, for `sweep sync`
        print_stopped_ending(signal_name(exc), study, tracking_uri, untracked, out)
    return SweepOutcome(
        study_name=study, experiment_id=tracker.experiment_id, parent_run_id=tracker.parent_run_ids.get("study"),
        tracking_uri=tracking_uri, best_number=None, best_value=None, best_params=None, test_acc=None,
        interrupted=True, counted=0, untracked=None if untracked.empty else untracked,
    )


# Signals whose Python handlers raise in the sweep process: Ctrl-C, SIGTERM, and the
# --timeout-kill alarm (sweep.search.runner).
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGALRM wait until the block ends, then act as they would have.

    For starting joblib's loky pool (`Parallel(...)(tasks)`: the executor, its manager
    thread, the resource tracker, the worker processes and their first tasks). That code
    is not safe against an exception raised in the middle of it by a signal handler: the
    pool is left half made, and joblib's abort then fails on it with another error
    (RuntimeError 'cannot join thread before it is started'; BrokenPipeError writing to
    the resource tracker or to a worker whose pipe is already closed), a traceback instead
    of the interrupt, while workers cut before their start-up data print tracebacks of
    their own (EOFError). Deferred, the signal lands once the pool is whole, and joblib
    shuts it down cleanly. Python-level only (no signal mask): the worker processes
    started meanwhile inherit nothing. Main thread only, as signal handlers are.
    """
    pending: list[int] = []

    def defer(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    old = {sig: signal.signal(sig, defer) for sig in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:  # the first one, as it would have acted (its handler raises, or its default action)
            handler = old[signal.Signals(pending[0])]
            if callable(handler):
                handler(pending[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(pending[0])
