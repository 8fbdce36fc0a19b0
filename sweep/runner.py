"""Run a sweep: study creation/resume, joblib workers, tracking, stop/resume (the task: sweep.worker; lines: sweep.progress).

Process layout:

    parent  ── prepares the dataset cache, opens the study, reaps stale trials,
       │       starts the MLflow tracker thread, prints progress
       ├─ loky worker 1 ─┐ each task = one Optuna trial (study.optimize(n_trials=1)),
       └─ loky worker 2 ─┘ data memory-mapped, BLAS threads = cores // jobs

`--trials` is the study's total target: a rerun submits only the missing
trials. A worker killed mid-trial (TerminatedWorkerError) or a Ctrl-C/SIGTERM
leaves RUNNING trials; they are failed and their parameters re-queued, so the
same command resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sweep import spool
from sweep.budget import Budget, over_deadline
from sweep.config import SweepConfig, available_cores
from sweep.display import NOTE_TAG, study_note
from sweep.mlflow_store import summary_tags
from sweep.objective import TrialContext, evaluate, load_weights, num_classes_of
from sweep.progress import Progress, SweepOutcome, budget_start_line, print_summary
from sweep.recovery import journal_path, say_to, stop_tracker
from sweep.redact import mask_url
from sweep.worker import run_one_trial

MAX_ROUNDS = 10  # rounds of re-submission after workers died


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep keeps its files (all under the working folder by default)."""

    workdir: Path
    journal: Path  # Optuna journal (default storage), next to mlflow.db
    state_dir: Path  # per-study spool files and best weights

    @classmethod
    def for_study(cls, workdir: Path, study: str) -> SweepPaths:
        workdir = workdir.resolve()
        return cls(workdir, workdir / "optuna.journal", workdir / ".sweep" / study)

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def weights_dir(self) -> Path:
        return self.state_dir / "weights"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


class _BudgetOver(KeyboardInterrupt):
    """The time budget ended with --timeout-kill: running trials are stopped like on Ctrl-C."""


def _raise_budget_over(signum: int, frame: Any) -> None:
    raise _BudgetOver()


def _arm_budget_kill(budget: Budget | None) -> Any:
    """With --timeout-kill, SIGALRM at the deadline raises _BudgetOver in the parent; returns the old handler."""
    if budget is None or not budget.kill:
        return None
    old = signal.signal(signal.SIGALRM, _raise_budget_over)
    signal.setitimer(signal.ITIMER_REAL, max(budget.left(), 0.001))
    return old


def _disarm_budget_kill(old: Any) -> None:
    if old is not None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_sweep(
    cfg: SweepConfig,
    *,
    workdir: Path | None = None,
    out: TextIO = sys.stdout,
    dask_scheduler: str | None = None,
    timeout_kill: bool = False,
) -> SweepOutcome:
    """Run (or resume) the sweep described by `cfg` until `cfg.trials` trials count.

    With `cfg.timeout` no trial starts once that budget (from this call's start)
    is over; trials running then finish, or with `timeout_kill` are stopped and
    re-queued like an interrupt. The next call continues towards `cfg.trials`.
    """
    budget = Budget.start(cfg.timeout_seconds, kill=timeout_kill)  # counts from this invocation's start
    import optuna
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from sweep.data import load_dataset
    from sweep.status import mark_sweep_process, other_sweep_processes, record_experiment
    from sweep.study import (
        OWNERLESS_GRACE_SECONDS, check_target, counted_trials, make_storage, open_study, reap_stale_trials,
        repair_journal, spool_path, with_storage_retry,
    )
    from sweep.mlflow_store import default_tracking_uri
    from sweep.tracking import ParentSpec, Tracker

    name = cfg.study_name
    paths = SweepPaths.for_study(workdir or Path.cwd(), name)
    tracking_uri = cfg.tracking_uri or default_tracking_uri(paths.workdir)
    jobs = cfg.resolved_jobs()
    threads = max(1, available_cores() // jobs)

    # The parent writes the memory-mapped cache once; workers only open it.
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed)
    journal = journal_path(cfg.storage, paths.journal)
    if journal is not None:
        repaired = repair_journal(journal)
        if repaired:
            out.write(repaired + "\n")
    storage = make_storage(cfg.storage, paths.journal)
    try:
        study = open_study(cfg, storage)
    except ValueError as exc:  # a record damaged in the middle: Optuna stops reading there
        if journal is None or "study" in str(exc):
            raise
        raise ValueError(f"{journal}: cannot read the Optuna journal ({exc}); it is damaged before its last record. "
                         f"Move it aside and start again, or restore it from a copy") from None
    mark_sweep_process(study, cfg.trials)
    # A RUNNING trial with no owner yet was asked by a worker killed before it could say
    # so (or one that is between ask and that write now); with no other sweep process
    # of this study alive or on another host, it cannot be the latter, whatever its age.
    alone = not other_sweep_processes(study.user_attrs)
    requeued = reap_stale_trials(study, paths.spool_dir, "worker process died (found on resume)",
                                 min_age_seconds=0.0 if alone else OWNERLESS_GRACE_SECONDS)
    if requeued:
        out.write(f"re-queued trials left running by a stopped sweep: {requeued}\n")
    missing = cfg.trials - counted_trials(study)
    ctx = TrialContext(
        study_name=name, storage_url=cfg.storage, journal_path=paths.journal, seed=cfg.seed,
        space=cfg.space, spool_dir=paths.spool_dir, weights_dir=paths.weights_dir,
        dataset=cfg.dataset, data_dir=cfg.data_dir, num_train=cfg.num_train, num_val=cfg.num_val,
        pruner=cfg.pruner, max_epochs=cfg.space.max_epochs,
        target_trials=cfg.trials, deadline=budget.deadline if budget else None,
        sweep_process=None if dask_scheduler else spool.this_process(),
    )

    recorded: list[Any] = []
    links: list[Any] = []

    def record_run_id(start: dict[str, Any], run_id: str) -> None:
        # A storage object of its own: Optuna's journal storage holds its thread lock while it
        # waits for the file lock (the workers hold it most of the time on short trials), and the
        # main thread must not wait behind that to count a trial's end (the mirror's gate).
        if not links:
            links.append(make_storage(cfg.storage, paths.journal))
        link = links[0]
        number = int(start["tags"]["optuna.trial_number"])
        trial_id = link.get_trial_id_from_study_id_trial_number(study._study_id, number)
        try:
            # A short trial has mostly ended by now: asked first, since a journal writes
            # the refused record anyway (one more locked, fsynced append per run).
            if link.get_trial(trial_id).state.is_finished():
                raise optuna.exceptions.UpdateFinishedTrialError()
            link.set_trial_user_attr(trial_id, "mlflow_run_id", run_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            # The trial ended before MLflow was up (its start-up overlaps the
            # first trials instead of delaying them): keep the link on the study.
            link.set_study_user_attr(study._study_id, f"mlflow_run_id:{number}", run_id)
        if not recorded:  # once: where `sweep status` finds the runs without asking MLflow
            recorded.append(record_experiment(study, tracker.experiment_id, tracking_uri))

    tracker = Tracker(
        tracking_uri, name, paths.spool_dir,
        [ParentSpec("study", f"study {name}", params={"dataset": cfg.dataset, "seed": cfg.seed, "trials": cfg.trials,
                                           "storage": mask_url(cfg.storage) or f"journal:{paths.journal}"},
                    tags={"optuna.study": name, "sweep.kind": "study",
                          NOTE_TAG: study_note(name, cfg.dataset, cfg.trials)})],
        on_run_created=record_run_id, say=say_to(out),
        max_behind=None if dask_scheduler else jobs,  # MLflow at most ~2 x jobs runs behind
    ).start()

    in_flight = jobs  # trials that run at once, for the progress line's "running"
    if dask_scheduler:
        if cfg.jobs:
            in_flight, limit = cfg.jobs, f"at most {cfg.jobs} at a time"
        else:
            in_flight = _dask_threads(dask_scheduler)
            limit = f"one per worker thread: {in_flight} now"
        where = f"on the Dask cluster at {dask_scheduler} ({limit})"
    else:
        where = f"on {jobs} worker(s) x {threads} BLAS thread(s)"
    say = say_to(out)
    progress = Progress(cfg.trials, cfg.trials - max(missing, 0), in_flight, cfg.space, out,
                        count_done=lambda: with_storage_retry(counted_trials, study, say=say), budget=budget)
    out.write(
        f"study {name!r}: {cfg.trials - max(missing, 0)}/{cfg.trials} trials done, running {max(missing, 0)} more "
        f"{where}; dataset {cfg.dataset} "
        f"({data['X_train'].shape[0]} train / {data['X_val'].shape[0]} val)\n"
    )
    out.write(budget_start_line(budget, cfg.timeout or ""))
    worker_died: tuple[type[BaseException], ...] = (TerminatedWorkerError,)
    if dask_scheduler:
        from distributed import KilledWorker  # Dask's word for a task whose workers kept dying

        worker_died += (KilledWorker,)
    old_term = signal.signal(signal.SIGTERM, _raise_terminated)
    old_alarm = None
    interrupted = budget_killed = False
    fault = ""  # why the sweep stopped itself (a spool folder it cannot write)
    try:
        old_alarm = _arm_budget_kill(budget)  # inside the try: a budget already over fires at once
        rounds = 0
        while missing > 0 and rounds < MAX_ROUNDS and not fault and not (budget and budget.over()):
            rounds += 1
            skipped_before = progress.skipped
            try:
                # On Dask, --jobs (when given) caps the trials in flight; 0 = the whole cluster.
                trials = _parallel_trials(ctx, missing, cfg.jobs if dask_scheduler else jobs, threads, dask_scheduler)
                for res in trials:
                    if res.get("number", -1) >= 0:  # the mirror's gate counts it at once (sweep.backpressure)
                        tracker.trial_ended(spool_path(paths.spool_dir, res["number"]).name)
                    progress.update(res)
                    if res.get("stop"):
                        fault = res["reason"]
                        trials.close()  # no new trials: nothing more could be recorded
                        break
            except worker_died as exc:
                spool.wait_writers_gone(paths.spool_dir)
                requeued = with_storage_retry(reap_stale_trials, study, paths.spool_dir, "worker process died",
                                              min_age_seconds=0, say=say)
                out.write(f"a worker process died{_death_detail(exc)}; re-queued trial(s) {requeued}\n")
            if fault:
                out.write(f"stopping the sweep: {fault}. What was recorded before is kept; "
                          "free space there and run the same command to resume.\n")
                spool.wait_writers_gone(paths.spool_dir)
                with contextlib.suppress(OSError):  # its runs cannot be closed there: the next run reaps them
                    reap_stale_trials(study, paths.spool_dir, "stopped: the spool folder cannot be written",
                                      min_age_seconds=0)
                break
            missing = cfg.trials - with_storage_retry(counted_trials, study, say=say)
            if missing > 0 and progress.skipped > skipped_before:
                # Tasks found the target reached counting trials RUNNING in another sweep
                # process: those count when they end, so resubmit only for what is still
                # open (e.g. trials re-queued meanwhile), not again for them.
                check = with_storage_retry(check_target, study, cfg.trials, say=say)
                missing = max(cfg.trials - check.counted - check.running, check.waiting)
                if missing <= 0:
                    out.write(f"{check.running} trial(s) towards the target of {cfg.trials} are still running "
                              f"in another sweep process; they count when they end\n")
    except KeyboardInterrupt as exc:
        # --timeout-kill at the deadline takes the interrupt path: running trials
        # failed as "interrupted" and re-queued; but the sweep ended as asked.
        budget_killed = isinstance(exc, _BudgetOver)
        interrupted = not budget_killed
        out.write("\ntime budget over: stopping the running trials (--timeout-kill); they are re-queued\n"
                  if budget_killed else
                  "\nstopping: marking running trials as interrupted (rerun the same command to resume)\n")
        spool.wait_writers_gone(paths.spool_dir)
        reap_stale_trials(study, paths.spool_dir, "interrupted", min_age_seconds=0)
    finally:
        _disarm_budget_kill(old_alarm)
        signal.signal(signal.SIGTERM, old_term)
    if not interrupted and not budget_killed:  # close runs of trials Optuna's heartbeat failed in the last round
        with contextlib.suppress(OSError):  # a full spool folder (fault above): the next run reaps
            with_storage_retry(reap_stale_trials, study, paths.spool_dir, "worker process died", say=say)

    outcome = _finish(cfg, study, data, paths, tracker, tracking_uri, interrupted, out, budget=budget)
    outcome.fault = fault
    with_storage_retry(mark_sweep_process, study, cfg.trials, ended=True)
    return outcome


def _dask_threads(scheduler: str) -> int:
    """Worker threads of the Dask cluster at `scheduler` now (joblib runs one trial per thread)."""
    from distributed import Client

    with Client(scheduler) as client:
        return sum(client.nthreads().values())


def _death_detail(exc: BaseException) -> str:
    """What loky knows of a dead worker (its exit code, e.g. SIGKILL(-9)), as ' (...)'; '' if nothing."""
    match = re.search(r"exit codes of the workers are (.+)", str(exc))
    return f" (exit codes {match.group(1).strip()})" if match else ""


def _parallel_trials(
    ctx: TrialContext, n: int, jobs: int, threads: int, dask_scheduler: str | None
) -> Iterator[dict[str, Any]]:
    """Run `n` trials on `jobs` loky processes (or a Dask cluster); yields each outcome as it ends.

    On Dask, joblib's backend runs as many tasks as the cluster has threads
    whatever `n_jobs` says, so `jobs` > 0 caps the tasks in flight instead
    (joblib's pre-dispatch: `jobs` submitted, then one more per outcome) and
    `jobs` = 0 leaves the whole cluster to the sweep. Every task is one trial
    of seconds or more: never batched.

    A worker's spool file is copied into ctx.spool_dir only when it is missing or
    shorter there (the worker ran on another machine's disk), so the tracker
    mirrors every trial; on a shared disk nothing is written twice.
    """
    from joblib import Parallel, delayed, parallel_config

    from sweep.study import spool_path

    def adopt_spool(res: dict[str, Any]) -> dict[str, Any]:
        spool.adopt(spool_path(ctx.spool_dir, res["number"]), res.pop("spool", ""))
        return res

    # Lazily consumed by joblib (pre-dispatch): once the budget is over no task is
    # even submitted; the few already dispatched find it over in the worker.
    tasks = (delayed(run_one_trial)(ctx) for _ in range(n) if not over_deadline(ctx.deadline))
    if dask_scheduler:
        from distributed import Client

        with Client(dask_scheduler), parallel_config(backend="dask"):
            pre_dispatch = str(jobs) if jobs > 0 else "2*n_jobs"
            for res in Parallel(n_jobs=-1, pre_dispatch=pre_dispatch, batch_size=1,
                                return_as="generator_unordered")(tasks):
                yield adopt_spool(res)
        return
    with parallel_config(backend="loky", inner_max_num_threads=threads):
        for res in Parallel(n_jobs=jobs, batch_size=1, return_as="generator_unordered")(tasks):
            yield adopt_spool(res)


def _finish(
    cfg: SweepConfig, study: Any, data: dict[str, np.ndarray], paths: SweepPaths, tracker: Any,
    tracking_uri: str, interrupted: bool, out: TextIO, *, budget: Budget | None = None,
) -> SweepOutcome:
    from sweep.study import check_target, counted_trials, with_storage_retry

    best_number = best_value = best_params = test_acc = None
    # Every storage call here waits for a restarting database, as the sweep's own calls do.
    trials = with_storage_retry(study.get_trials, deepcopy=False)
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    if completed:
        best = max(completed, key=lambda t: t.value)
        best_number, best_value, best_params = best.number, best.value, dict(best.params)
        test_acc = with_storage_retry(_test_accuracy, study, best, data, paths, cfg.space)
    # After a full run every trial of this process has ended, so a trial still
    # RUNNING belongs to another `sweep run` of the study, which ends the shared
    # parent run when it finishes (the last one to finish sees none running).
    # After an interrupt a RUNNING trial may be this process's own, its worker
    # not gone yet: the parent is marked KILLED as before.
    others = 0 if interrupted else with_storage_retry(check_target, study, cfg.trials).running
    if others:
        out.write(f"{others} trial(s) of this study still run in another sweep process; "
                  "it will end the MLflow parent run\n")
    if test_acc is not None:  # queued: sent with the final drain (or kept for `sweep sync`)
        tracker.log_parent("study", tags={"best_trial": best_number, **summary_tags({"best_test_acc": test_acc})})
    missing = stop_tracker(tracker, None if others else "KILLED" if interrupted else "FINISHED", out)
    outcome = SweepOutcome(
        study_name=study.study_name, experiment_id=tracker.experiment_id,
        parent_run_id=tracker.parent_run_ids.get("study"), tracking_uri=tracking_uri,
        best_number=best_number, best_value=best_value, best_params=best_params, test_acc=test_acc,
        interrupted=interrupted, counted=with_storage_retry(counted_trials, study),
        best_run_id=with_storage_retry(_run_id_of, study, best_number),
        untracked=None if missing.empty else missing, tracking_error=tracker.health.last_error,
    )
    if budget is not None and budget.over() and not interrupted and outcome.counted < cfg.trials:
        outcome.budget_seconds = budget.seconds  # the budget, not the target, ended this sweep
    print_summary(outcome, cfg, out)
    return outcome


def _run_id_of(study: Any, number: int | None) -> str | None:
    """The MLflow run id recorded for trial `number` (on the trial, or on the study for a finished one)."""
    if number is None:
        return None
    trial = study.get_trials(deepcopy=False)[number]
    return trial.user_attrs.get("mlflow_run_id") or study.user_attrs.get(f"mlflow_run_id:{number}")


def _test_accuracy(study: Any, best: Any, data: dict[str, np.ndarray], paths: SweepPaths, space: Any) -> float | None:
    """Test accuracy of the best trial, computed once and kept on the study."""
    stored = study.user_attrs.get("best_test_acc")
    if stored and stored.get("trial") == best.number:
        return float(stored["acc"])
    weights_file = paths.weights_dir / f"trial-{best.number:04d}.npz"
    if not weights_file.exists() or "X_test" not in data:
        return None
    params = space.params_from_trial(best.params)
    acc = evaluate(params, load_weights(weights_file), data["X_test"], data["y_test"], num_classes_of(data))
    study.set_user_attr("best_test_acc", {"trial": best.number, "acc": acc})
    remove_beaten_weights(study, best, paths.weights_dir)
    return acc


def remove_beaten_weights(study: Any, best: Any, weights_dir: Path) -> list[Path]:
    """Delete the saved weights of trials that can no longer be the best; returns what was deleted.

    Only the best trial's weights are worth keeping, but another `sweep run` on
    this study may have saved a newer best since `best` was read: so the trials
    are read again and a file goes only if its trial has finished with a value
    no higher than the best's (and is not the best). Files of trials still
    running, or finished after that read, stay.
    """
    from optuna.trial import TrialState

    finished = {t.number: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    removed = []
    for f in weights_dir.glob("trial-*.npz"):
        try:
            number = int(f.stem.removeprefix("trial-"))
        except ValueError:  # not a file this module wrote
            continue
        if number != best.number and number in finished and finished[number] <= best.value:
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed
