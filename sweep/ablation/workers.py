"""Where an ablation's cells run: this machine's loky processes, or a Dask cluster (`--dask-scheduler`).

The same shared pool as a sweep's trials (sweep.search.pool). On Dask the
cells run on the cluster's worker threads: `jobs` (``--jobs``) caps the cells in
flight, 0 leaves the whole cluster to them. A cell's spool events travel back
with its result (`adopt_events`), so the parent's tracker mirrors cells a
worker trained on another machine's disk; on a shared disk nothing is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.config.bounds import useful_jobs
from sweep.config.sweep_file import SweepConfig, available_cores
from sweep.search.pool import cluster_threads
from sweep.tracking import spool

# BLAS threads of a Dask worker process: Dask's nanny sets OMP/OPENBLAS/MKL_NUM_THREADS=1
# (distributed.nanny.pre-spawn-environ), so the cost estimate scales to one.
DASK_BLAS_THREADS = 1


@dataclass(frozen=True)
class CellWorkers:
    """Where the cells run: `jobs` processes of `threads` BLAS threads, or a Dask cluster."""

    jobs: int  # loky processes; on Dask, the cap on cells in flight (0: the whole cluster)
    threads: int  # BLAS threads of each worker
    in_flight: int  # cells trained at once (the estimate's workers)
    where: str  # how the start line says it: "on 2 worker(s)", "on the Dask cluster at ..."
    dask_scheduler: str | None = None


def cell_workers(cfg: SweepConfig, cells: int, dask_scheduler: str | None = None) -> CellWorkers:
    """No more local workers than cells (an idle worker still costs a process and its memory);
    on Dask, as many as `--jobs` allows, else one per worker thread of the cluster now.

    Raises:
        ValueError: naming --dask-scheduler when no scheduler answers there.
    """
    if not dask_scheduler:
        jobs = useful_jobs(cfg.resolved_jobs(), cells)
        return CellWorkers(jobs, max(1, available_cores() // jobs), jobs, f"on {jobs} worker(s)")
    threads = cluster_threads(dask_scheduler)
    if cfg.jobs:
        in_flight, limit = cfg.jobs, f"at most {cfg.jobs} at a time"
    else:
        in_flight, limit = threads, f"one per worker thread: {threads} now"
    return CellWorkers(cfg.jobs or 0, DASK_BLAS_THREADS, max(1, min(in_flight, cells)),
                       f"on the Dask cluster at {dask_scheduler} ({limit})", dask_scheduler)


def adopt_events(spool_dir: Path, res: dict[str, Any]) -> None:
    """Write the cell's events a worker sent back into this machine's spool folder, if it lacks them."""
    name, text = res.pop("spool_file", ""), res.pop("spool", "")
    if name and text:
        spool.adopt(Path(spool_dir) / name, text)
