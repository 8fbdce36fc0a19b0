"""What an ablation grid will cost before it starts: CPU and wall time from a measured epoch.

The measurement is one configuration's wall seconds per epoch on `num_train`
rows (a sweep trial's median `epoch_seconds`, or a short timing run). A cell's
epoch is scaled from it by

- rows: one epoch trains every row (forward + backward, ~3 forward passes) and
  then evaluates, in test mode, up to 1 000 training rows and all validation
  rows (model.Solver's defaults), so its work is 3 n + min(n, 1000) + n_val;
- the net: work per row is proportional to its weights, sum of d_in * d_out;
- BLAS threads: measured with t threads, run on t' -> x t / t' (perfect scaling
  assumed, so fewer threads than measured are not underestimated);

and multiplied by the cell's epochs. Wall time is the cells, in the order they
are submitted, each to the first free worker (joblib's order); CPU time counts
every worker's BLAS threads as busy. Works on any list of cells: the caller says
what each cell trains (`work_of_cell`).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from sweep.config.sweep_file import TrainParams

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

CONFIRM_ABOVE_SECONDS = 600.0  # wall time above which `sweep ablate` asks first (or needs --yes)
TRAIN_ACC_ROWS = 1000  # model.Solver's num_train_samples default
NUM_CLASSES = 10


@dataclass(frozen=True)
class Measured:
    """One measured configuration: `epoch_seconds` per epoch of `params` on `num_train` rows."""

    epoch_seconds: float
    params: TrainParams
    num_train: int
    num_val: int
    input_dim: int
    source: str  # for the person reading the estimate, e.g. "trial 7 of the study"
    threads: int | None = None  # BLAS threads it ran with; None: unknown (taken as the cells')


@dataclass(frozen=True)
class Estimate:
    cells: int
    cell_seconds: tuple[float, ...]  # per cell, in submission order
    wall_seconds: float
    cpu_seconds: float
    workers: int
    threads: int
    source: str


def epoch_work(num_train: int, num_val: int) -> float:
    """Work of one epoch in forward-pass row units (see the module docstring)."""
    return 3.0 * num_train + min(num_train, TRAIN_ACC_ROWS) + num_val


def net_weights(params: TrainParams, input_dim: int, num_classes: int = NUM_CLASSES) -> int:
    """Weights of the net `params` builds: sum of d_in * d_out over its affine layers."""
    dims = [input_dim, *params.hidden_dims, num_classes]
    return sum(a * b for a, b in itertools.pairwise(dims))


def cell_seconds(params: TrainParams, num_train: int, measured: Measured, threads: int = 1,
                 num_val: int | None = None) -> float:
    """Estimated wall seconds of one training run of `params` on `num_train` rows with `threads` BLAS threads."""
    num_val = measured.num_val if num_val is None else num_val
    thread_factor = (measured.threads or threads) / threads
    per_epoch = (measured.epoch_seconds
                 * epoch_work(num_train, num_val) / epoch_work(measured.num_train, measured.num_val)
                 * net_weights(params, measured.input_dim) / net_weights(measured.params, measured.input_dim)
                 * thread_factor)
    return per_epoch * params.epochs


def estimate_cost(
    cells: Sequence[Any],
    work_of_cell: Callable[[Any], tuple[TrainParams, int]],
    measured: Measured,
    *,
    workers: int,
    threads: int = 1,
) -> Estimate:
    """CPU and wall time of training `cells` on `workers` processes of `threads` BLAS threads.

    Args:
        cells: the cells to run, in the order they are submitted.
        work_of_cell: cell -> (its training parameters, its training rows).
        measured: the measured epoch every cell is scaled from.
    """
    seconds = tuple(cell_seconds(*work_of_cell(c), measured, threads) for c in cells)
    free = [0.0] * max(1, workers)  # when each worker is next free
    for s in seconds:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += s
    return Estimate(len(seconds), seconds, max(free), sum(seconds) * threads, max(1, workers), threads,
                    measured.source)


def describe(est: Estimate) -> str:
    from sweep.search.progress import hms

    return (f"estimated {hms(est.wall_seconds)} wall, {hms(est.cpu_seconds)} CPU for {est.cells} cell(s) "
            f"on {est.workers} worker(s) x {est.threads} BLAS thread(s) (scaled from {est.source})")


def measure_epoch(params: TrainParams, data: Mapping[str, np.ndarray], threads: int, source: str,
                  model: Any = None) -> Measured:
    """A short timing run: one epoch of `params` on `data` with `threads` BLAS threads, as a worker has."""
    from dataclasses import replace

    from threadpoolctl import threadpool_limits

    from sweep.training import RunSeeds, train

    one = replace(params, epochs=1)
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        result = train(one, data, RunSeeds.derive(0, 0), model=model)
        elapsed = time.perf_counter() - t0
    seconds = result.epochs[0]["epoch_seconds"] if result.epochs else elapsed
    return Measured(float(seconds), one, int(data["X_train"].shape[0]), int(data["X_val"].shape[0]),
                    int(data["X_train"].shape[1]), source, threads)


class NotConfirmed(ValueError):
    """A grid over the threshold, not confirmed: nothing was started (`sweep ablate` exits 2)."""


def confirm(est: Estimate, *, yes: bool, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout,
            threshold: float = CONFIRM_ABOVE_SECONDS) -> None:
    """Return if the grid may start: under `threshold` wall seconds, `yes`, or a 'y' typed on a terminal.

    Raises:
        NotConfirmed: over the threshold without --yes, and stdin is not a terminal or the answer was not yes.
    """
    from sweep.search.progress import hms

    if est.wall_seconds <= threshold or yes:
        return
    over = f"the grid is estimated at {hms(est.wall_seconds)} wall, over {hms(threshold)}"
    if not stdin.isatty():
        raise NotConfirmed(f"{over}; pass --yes to start it without a terminal (nothing was trained)")
    out.write(f"{over}. Start it? [y/N] ")
    out.flush()
    answer = stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise NotConfirmed(f"{over}; not confirmed, nothing was trained")
