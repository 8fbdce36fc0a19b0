"""Reproducible parallel sweeps (`sweep run --reproducible`): trial n sees only trials < n - k.

Why a parallel study is not reproducible otherwise: trial n's sampler and
pruner read every trial in the storage at the moment they run, so what they
see depends on which of the other workers' trials happened to finish (or to
report an epoch) first. Here, with a fixed lag k (`reproducible_lag`, the
same at any --jobs and on Dask):

- before trial n samples, its worker waits until every trial numbered
  < n - k has finished (COMPLETE, PRUNED or FAIL);
- its sampler and its pruner (at every epoch) see exactly those trials, plus
  trial n itself, through a filtered view of the storage (`PastStorage`);
  writes go to the real storage;
- its sampler is already seeded from (study seed, n) and its training from the
  same (sweep.search.study.TrialSeededTPESampler, sweep.search.objective.RunSeeds);
- it trains on one BLAS thread (BLAS_THREADS), as the float sums depend on it.

By induction on n, trial n's params, pruning decisions and curve are then a
function of (study seed, n) alone. What they cost: a worker idles while a
trial more than k numbers older still runs, so jobs > k + 1 cannot all be busy,
and the sampler's model lags k trials behind (docs/benchmarks.md measures it).

Not covered, and said so: a trial re-queued after its worker died or an
interrupt runs its parameters again under a new number (its seeds are the
original's), so the trials after it see a different history than in a sweep
without the crash; and a wait that gives up (below) is recorded on the trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage

DEFAULT_LAG = 4
# Every trial of the mode runs on one BLAS thread: OpenBLAS's threaded sgemm sums in another
# order (a 500x64 @ 64x62 float32 product differs by up to 1e-5 between 1 and 2 threads), so
# curves would depend on cores // jobs. The default --jobs (all cores) runs one thread anyway.
BLAS_THREADS = 1
# System attr on every trial run in the mode: {"lag": k, "waited_seconds": idle time before it
# sampled}, plus "waited_out": [numbers] when it gave up waiting for those trials (they were
# left out of its view: not reproducible).
ATTR = "sweep.reproducible"
STUDY_ATTR = "sweep.reproducible_lag"  # the lag the study's trials ran with ("mixed" after a change)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# A RUNNING trial is waited for up to this long (it may be a long CIFAR-10 trial; a dead
# worker's trial is failed by the reaping or the RDB heartbeat long before).
WAIT_RUNNING_SECONDS = 6 * 3600.0
# A WAITING (queued) trial older than trial n has no worker on it; only a race leaves one
# behind (Optuna's ask pops queued trials first), so it is waited for briefly.
WAIT_QUEUED_SECONDS = 60.0
POLL_SECONDS = 0.2


class PastStorage:
    """A storage as trial `own` sees it in the mode: trials numbered < `cutoff`, and itself.

    Only the trial lists are filtered; every other call (writes included) goes
    to `inner`. Not a BaseStorage subclass: Optuna's `get_storage` passes any
    other object through, so Study and Hyperband's bracket study take it as is.
    """

    def __init__(self, inner: BaseStorage, cutoff: int, own: int) -> None:
        self._inner = inner
        self._cutoff = cutoff
        self._own = own

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        trials = self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if t.number < self._cutoff or t.number == self._own]

    def get_n_trials(self, study_id: int, state: TrialState | Sequence[TrialState] | None = None) -> int:
        states = None if state is None else (state,) if isinstance(state, TrialState) else tuple(state)
        return len(self.get_all_trials(study_id, deepcopy=False, states=states))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def past_view(study: optuna.Study, trial: FrozenTrial, lag: int, sampler: BaseSampler,
              pruner: BasePruner) -> optuna.Study:
    """`study` as `trial` (number n) sees it (trials < n - lag, and itself), with the inner sampler and pruner.

    With a Hyperband pruner the view is also cut to the trial's bracket, as
    Optuna does for the sampler (optuna.pruners._filter_study), so the mode
    keeps Optuna's own behaviour apart from the lag.
    """
    # Duck-typed, not a BaseStorage subclass (PastStorage says why): the cast says so to the type checker.
    storage = cast("BaseStorage", PastStorage(study._storage, trial.number - lag, trial.number))
    view = optuna.Study(study_name=study.study_name, storage=storage, sampler=sampler, pruner=pruner)
    return optuna.pruners._filter_study(view, trial)


def wait_for_past(study: optuna.Study, trial: FrozenTrial, lag: int, *,
                  running_seconds: float | None = None, queued_seconds: float | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """Block until every trial numbered < trial.number - lag has finished; returns those given up on.

    While it waits, the trial's heartbeat is kept (RDB storages: a long wait
    must not look like a dead worker), and stale trials of dead workers are
    failed (Optuna's fail_stale_trials, which re-queues them here).
    """
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage, cutoff = study._storage, trial.number - lag
    running_seconds = WAIT_RUNNING_SECONDS if running_seconds is None else running_seconds
    queued_seconds = WAIT_QUEUED_SECONDS if queued_seconds is None else queued_seconds
    start = time.monotonic()
    heartbeat = storage if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage) else None
    while True:
        open_ = [t for t in storage.get_all_trials(study._study_id, deepcopy=False)
                 if t.number < cutoff and t.state not in FINISHED]
        waited = time.monotonic() - start
        if not open_:
            return []
        if waited > running_seconds or (waited > queued_seconds and all(t.state == TrialState.WAITING for t in open_)):
            return sorted(t.number for t in open_)
        if heartbeat is not None:
            heartbeat.record_heartbeat(trial._trial_id)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        sleep(POLL_SECONDS)


class LaggedSampler(BaseSampler):
    """Runs `inner` on trial n's past view, after waiting for that past to finish (see the module docstring).

    `on_wait(study, trial)` runs first: the worker records itself as the trial's
    owner there, so a long wait is not taken for a worker killed before its first record.
    """

    def __init__(self, inner: BaseSampler, pruner: BasePruner, lag: int,
                 on_wait: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
        if lag < 0:
            raise ValueError(f"reproducible_lag must be an integer >= 0, got {lag!r}")
        self.inner, self.pruner, self.lag, self._on_wait = inner, pruner, lag, on_wait
        self._views: dict[int, optuna.Study] = {}

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> optuna.Study:
        view = self._views.get(trial._trial_id)
        if view is None:
            self._views = {trial._trial_id: past_view(study, trial, self.lag, self.inner, self.pruner)}
            view = self._views[trial._trial_id]
        return view

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._on_wait is not None:
            self._on_wait(study, trial)
        start = time.monotonic()
        given_up = wait_for_past(study, trial, self.lag)
        record: dict[str, Any] = {"lag": self.lag, "waited_seconds": round(time.monotonic() - start, 3)}
        if given_up:
            record["waited_out"] = given_up
        study._storage.set_trial_system_attr(trial._trial_id, ATTR, record)
        self._views.pop(trial._trial_id, None)  # the past is final only now
        self.inner.before_trial(self._view(study, trial), trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.inner.sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(self._view(study, trial), trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._views.pop(trial._trial_id, None)
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class LaggedPruner(BasePruner):
    """Runs `inner` at every epoch of trial n on its past view: trials < n - lag (all finished), and itself."""

    def __init__(self, inner: BasePruner, sampler: BaseSampler, lag: int) -> None:
        self.inner, self.sampler, self.lag = inner, sampler, lag

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        storage = cast("BaseStorage", PastStorage(study._storage, trial.number - self.lag, trial.number))  # duck-typed
        view = optuna.Study(study_name=study.study_name, storage=storage, sampler=self.sampler, pruner=self.inner)
        return self.inner.prune(view, trial)


def lagged(sampler: BaseSampler, pruner: BasePruner, lag: int,
           on_wait: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> tuple[LaggedSampler, LaggedPruner]:
    """The (sampler, pruner) pair of the mode, wrapping a study's usual ones."""
    return LaggedSampler(sampler, pruner, lag, on_wait), LaggedPruner(pruner, sampler, lag)


def check_study(study: optuna.Study, lag: int | None) -> str | None:
    """Record the lag the study's trials run with; a line for the user when it changed on a resume."""
    # Queued trials (the new study's baseline, re-queued ones) have not run with any setting yet.
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
    stored = study.user_attrs.get(STUDY_ATTR, "unset")
    if not trials:
        study.set_user_attr(STUDY_ATTR, lag)
        return None
    if stored == "unset":  # trials from before this was recorded: without the mode
        stored = None
    if stored == lag:
        return None
    study.set_user_attr(STUDY_ATTR, "mixed")

    def said(k: Any) -> str:
        return "without --reproducible" if k is None else "with mixed settings" if k == "mixed" else f"with lag {k}"
    return (f"note: the study's {len(trials)} earlier trial(s) ran {said(stored)}, this run {said(lag)}: "
            "the study as a whole is not reproducible (use a new --study for that)")


def given_up_line(study: optuna.Study) -> str | None:
    """The line that names the trials that stopped waiting for older ones (not reproducible); None: none did."""
    given_up = {t.number: t.system_attrs[ATTR]["waited_out"] for t in study.get_trials(deepcopy=False)
                if "waited_out" in (t.system_attrs.get(ATTR) or {})}
    if not given_up:
        return None
    return (f"not reproducible: trial(s) {sorted(given_up)} stopped waiting for older trials "
            f"{sorted({n for v in given_up.values() for n in v})} and ran without them")
