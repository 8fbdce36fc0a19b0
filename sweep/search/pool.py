"""The worker pool a sweep and an ablation share: where tasks run, which signals stop it,
and how often a round is retried after workers die.

One task is one trial or one ablation cell (seconds or more of training: never
batched). On one machine the tasks run in loky processes, each with
`threads` BLAS threads; with a Dask scheduler they run on its workers through
joblib's Dask backend. Both entry points read the results as they arrive
(unordered) and start another round for what a dead worker left undone, at
most `MAX_ROUNDS` times; SIGTERM stops either like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sweep.search.stops import signals_deferred

if TYPE_CHECKING:
    from types import FrameType

T = TypeVar("T")

# Rounds of re-submission after workers died (a sweep's trials, an ablation's cells).
MAX_ROUNDS = 10
# How long `--dask-scheduler` is given to answer at most (Dask's own default waits 30 s, then a
# traceback); a shorter distributed.comm.timeouts.connect in Dask's config wins.
CONNECT_SECONDS = 10


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""

    signal_name = "SIGTERM"


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` (a KeyboardInterrupt): one stop path for both signals."""
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def worker_death_errors(dask: bool) -> tuple[type[BaseException], ...]:
    """What the pool raises when a worker died under its task (loky's, and Dask's KilledWorker on a cluster)."""
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    if not dask:
        return (TerminatedWorkerError,)
    from distributed import (
        KilledWorker,  # Dask's word for a task whose workers kept dying
    )

    return (TerminatedWorkerError, KilledWorker)


def cluster_threads(scheduler: str) -> int:
    """Worker threads of the Dask cluster at `scheduler` now (joblib runs one task per thread).

    Raises:
        ValueError: one line naming --dask-scheduler when no scheduler answers there.
    """
    import dask.config
    from dask.utils import parse_timedelta

    from sweep.search.dask_versions import dask_client

    configured = dask.config.get("distributed.comm.timeouts.connect", default=None)  # None: distributed not imported
    timeout = min(CONNECT_SECONDS, parse_timedelta(configured, "s") or CONNECT_SECONDS)
    try:
        with dask_client(scheduler, timeout=timeout) as client:
            return sum(client.nthreads().values())
    except (OSError, ValueError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"--dask-scheduler: no Dask scheduler answers at {scheduler!r} ({reason}); start one "
                         "(`dask scheduler`, then `dask worker ADDRESS`), or leave the flag out to run on this "
                         "machine") from None


def death_detail(exc: BaseException) -> str:
    """What loky knows of a dead worker (its exit code, e.g. SIGKILL(-9)), as ' (...)'; '' if nothing."""
    match = re.search(r"exit codes of the workers are (.+)", str(exc))
    return f" (exit codes {match.group(1).strip()})" if match else ""


def run_unordered(fn: Callable[[T], dict[str, Any]], tasks: Iterable[T], *, jobs: int, threads: int,
                  dask_scheduler: str | None = None) -> Iterator[dict[str, Any]]:
    """`fn(task)` for every task on `jobs` loky processes (or a Dask cluster); yields each result as it ends.

    `tasks` is read lazily (joblib's pre-dispatch), so a generator can stop
    submitting (e.g. at a time budget). On Dask, joblib runs as many tasks as
    the cluster has threads whatever `n_jobs` says, so `jobs` > 0 caps the
    tasks in flight instead (`jobs` submitted, then one more per result) and
    `jobs` = 0 leaves the whole cluster to the caller.
    """
    from joblib import Parallel, delayed, parallel_config

    calls = (delayed(fn)(t) for t in tasks)
    if dask_scheduler:
        from sweep.search.dask_versions import dask_client

        with dask_client(dask_scheduler), parallel_config(backend="dask"):
            pre_dispatch = str(jobs) if jobs > 0 else "2*n_jobs"
            yield from Parallel(n_jobs=-1, pre_dispatch=pre_dispatch, batch_size=1,
                                return_as="generator_unordered")(calls)
        return
    with parallel_config(backend="loky", inner_max_num_threads=threads):
        with signals_deferred():  # a signal in loky's start-up left a broken pool and a traceback (sweep.search.stops)
            try:
                results = Parallel(n_jobs=jobs, batch_size=1, return_as="generator_unordered")(calls)
            except BrokenPipeError:
                # loky's resource tracker (it removes the pool's temporary folders) died as
                # it was launched: its first message meets a closed pipe. loky relaunches a
                # tracker it finds dead only when it probes an old one, so do that once here.
                _forget_dead_resource_tracker()
                results = Parallel(n_jobs=jobs, batch_size=1, return_as="generator_unordered")(calls)
        yield from results


def _forget_dead_resource_tracker() -> None:
    """Reap loky's resource tracker whose pipe broke, so the next pool launches a new one; say so once."""
    import os
    import sys

    from joblib.externals.loky.backend import resource_tracker

    tracker = resource_tracker._resource_tracker
    if tracker._fd is None:
        return
    with contextlib.suppress(OSError):
        os.close(tracker._fd)
    if tracker._pid is not None:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            if os.waitpid(tracker._pid, os.WNOHANG) == (0, 0):  # alive, yet its pipe is closed: end it
                os.kill(tracker._pid, signal.SIGKILL)
                os.waitpid(tracker._pid, 0)
    tracker._fd = tracker._pid = tracker._exitcode = None
    print("note: loky's resource tracker died as the worker pool started; started a new one", file=sys.stderr)
