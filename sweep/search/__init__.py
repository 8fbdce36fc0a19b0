"""The Optuna side of a sweep: the study, its workers and what a person reads while it runs.

- `runner`: `run_sweep` (the parent: open the study, start the tracker, run the trials, finish)
- `worker`: one task = one trial, in a loky process or on a Dask worker
- `objective`: the Optuna objective around the one training loop (`sweep.training`)
- `study`: storage, sampler, pruner, counting and stale-trial recovery
- `journal`, `journal_lock`: the journal file written whole and numbered, under an flock
- `recovery`: what a sweep does when the storage, the spool folder or the tracker fails
- `pool`: the worker pool with its signal and retry policy, shared by sweep and ablation
- `stops`: signals deferred and held, and what a stopped command says
- `reproducible`: `--reproducible` (trial n sees only trials before n - k)
- `progress`, `status`: the progress lines and summary; `sweep status`
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .runner import run_sweep

__all__ = ['run_sweep']

__getattr__, __dir__ = lazy_exports(__name__, {'run_sweep': '.runner'})
