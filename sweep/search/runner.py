"""Run a sweep: study creation/resume, joblib workers, tracking, stop/resume (the task: sweep.search.worker; lines: sweep.search.progress).

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
import signal
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from sweep.config.bounds import useful_jobs
from sweep.config.budget import Budget, over_deadline
from sweep.config.display import NOTE_TAG, study_note
from sweep.config.sweep_file import SweepConfig, available_cores
from sweep.own_net import model_tags
from sweep.paths import SweepPaths, journal_file, study_paths
from sweep.redact import mask_url
from sweep.search.dask_lost import requeue_lost_dask_trials
from sweep.search.finish import finish
from sweep.search.objective import TrialContext
from sweep.search.pool import (
    MAX_ROUNDS,
    cluster_threads,
    death_detail,
    run_unordered,
    sigterm_as_interrupt,
    worker_death_errors,
)
from sweep.search.progress import (
    Progress,
    SweepOutcome,
    budget_start_line,
)
from sweep.search.recovery import say_to
from sweep.search.stops import stopped_ending
from sweep.search.worker import run_one_trial, trial_blas_threads
from sweep.tracking import spool
from sweep.tracking.backpressure import release_worker

if TYPE_CHECKING:
    from types import FrameType

    import optuna

    from sweep.tracking.tracker import Tracker


class _BudgetOver(KeyboardInterrupt):
    """The time budget ended with --timeout-kill: running trials are stopped like on Ctrl-C."""


def _raise_budget_over(signum: int, frame: FrameType | None) -> None:
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
    on_progress: Callable[[int, int], None] | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep described by `cfg` until `cfg.trials` trials count.

    With `cfg.timeout` no trial starts once that budget (from this call's start)
    is over; trials running then finish, or with `timeout_kill` are stopped and
    re-queued like an interrupt. The next call continues towards `cfg.trials`.
    `on_progress(done, target)` is called after every finished trial (a notebook's bar).
    """
    from sweep.check.contract import checked_config
    from sweep.search.study import counted_trials

    budget = Budget.start(cfg.timeout_seconds, kill=timeout_kill)  # counts from this invocation's start
    cfg, model_line = checked_config(cfg)  # your own net (--model): its contract, before anything is created
    if dask_scheduler:
        cluster_threads(dask_scheduler)  # a wrong address: one line before anything is created
    data = prepare_data(cfg)  # the parent writes the memory-mapped cache once; workers only open it
    study, paths = open_sweep_study(cfg, workdir or Path.cwd(), out)
    if model_line:
        out.write(model_line + "\n")
    missing = cfg.trials - counted_trials(study)
    plan = plan_workers(cfg, missing, dask_scheduler)
    ctx = trial_context(cfg, paths, budget, dask_scheduler)
    tracker = start_tracker(cfg, study, paths, out, plan)
    progress = announce(cfg, study, data, plan, missing, budget, out, on_progress)
    with sigterm_as_interrupt():
        ended = run_rounds(cfg, study, ctx, plan, progress, missing, budget, paths, out, tracker)
        return end_sweep(cfg, study, data, paths, tracker, ctx, ended, budget, out)


def prepare_data(cfg: SweepConfig) -> dict[str, np.ndarray]:
    """The sweep's dataset (its memory-mapped cache written here, once, before any worker opens it)."""
    return cfg.data.load()


def open_sweep_study(cfg: SweepConfig, workdir: Path, out: TextIO) -> tuple[Any, SweepPaths]:
    """Open (or create) the study with its journal repaired, find its own folder, mark this process,
    and re-queue trials a stopped sweep left RUNNING; returns the study and its paths."""
    from sweep.search.journal import JournalDamaged
    from sweep.search.reproducible import check_study
    from sweep.search.status import mark_sweep_process, other_sweep_processes
    from sweep.search.study import (
        OWNERLESS_GRACE_SECONDS,
        make_storage,
        open_study,
        reap_stale_trials,
        repair_journal,
    )

    paths = SweepPaths.for_study(workdir, cfg.study_name)
    journal = journal_file(cfg.storage, paths.journal)
    if journal is not None:
        repaired = repair_journal(journal)
        if repaired:
            out.write(repaired + "\n")
    try:
        study = open_study(cfg, make_storage(cfg.storage, paths.journal))
    except ValueError as exc:  # a record damaged in the middle: Optuna stops reading there
        if journal is None or "study" in str(exc) or isinstance(exc, JournalDamaged):
            raise  # JournalDamaged names the file and the line already
        raise ValueError(f"{journal}: cannot read the Optuna journal ({exc}); it is damaged before its last record. "
                         f"Move it aside and start again, or restore it from a copy") from None
    # The study's own folder: another study of this name (a new journal or database) has its own.
    paths = study_paths(paths.workdir, study, cfg.storage, claim=True)
    from sweep.search.model_record import check_model

    check_model(study, cfg.model)  # before this process marks it or reaps anything
    mark_sweep_process(study, cfg.trials)
    # A RUNNING trial with no owner yet was asked by a worker killed before it could say
    # so (or one that is between ask and that write now); with no other sweep process
    # of this study alive or on another host, it cannot be the latter, whatever its age.
    alone = not other_sweep_processes(study.user_attrs)
    requeued = reap_stale_trials(study, paths.spool_dir, "worker process died (found on resume)",
                                 min_age_seconds=0.0 if alone else OWNERLESS_GRACE_SECONDS)
    if requeued:
        out.write(f"re-queued trials left running by a stopped sweep: {requeued}\n")
    mixed = check_study(study, cfg.reproducible_lag)  # a resume that changes the mode breaks the promise: say so
    if mixed:
        out.write(mixed + "\n")
    return study, paths


@dataclass(frozen=True)
class WorkerPlan:
    """Where the trials run: `jobs` processes of `threads` BLAS threads (or a Dask cluster)."""

    jobs: int  # loky processes; on Dask, the cap on trials in flight (0: the whole cluster)
    threads: int
    in_flight: int  # trials that run at once, for the progress line's "running"
    where: str  # how the start line says it
    dask_scheduler: str | None = None


def plan_workers(cfg: SweepConfig, missing: int, dask_scheduler: str | None) -> WorkerPlan:
    """No more workers than trials left (an idle worker still costs a process and its memory)."""
    jobs = useful_jobs(cfg.resolved_jobs(), missing)
    threads = max(1, available_cores() // jobs)
    if cfg.reproducible_lag is not None:  # OpenBLAS rounds differently with 2 threads (sweep.search.reproducible)
        threads = 1
    if not dask_scheduler:
        return WorkerPlan(jobs, threads, jobs, f"on {jobs} worker(s) x {threads} BLAS thread(s)")
    if cfg.jobs:
        in_flight, limit = cfg.jobs, f"at most {cfg.jobs} at a time"
    else:
        in_flight = cluster_threads(dask_scheduler)
        limit = f"one per worker thread: {in_flight} now"
    return WorkerPlan(cfg.jobs or 0, threads, in_flight, f"on the Dask cluster at {dask_scheduler} ({limit})",
                      dask_scheduler)


def trial_context(cfg: SweepConfig, paths: SweepPaths, budget: Budget | None, dask_scheduler: str | None
                  ) -> TrialContext:
    """Everything a worker needs to run one trial of this sweep (sent with every task)."""
    return TrialContext(
        study_name=cfg.study_name, storage_url=cfg.storage, journal_path=paths.journal, seed=cfg.seed,
        space=cfg.space, spool_dir=paths.spool_dir, weights_dir=paths.weights_dir, data=cfg.data,
        pruner=cfg.pruner, max_epochs=cfg.space.max_epochs,
        target_trials=cfg.trials, deadline=budget.deadline if budget else None,
        sweep_process=None if dask_scheduler else spool.this_process(),
        reproducible_lag=cfg.reproducible_lag, model=cfg.model,
    )


def start_tracker(cfg: SweepConfig, study: optuna.Study, paths: SweepPaths, out: TextIO, plan: WorkerPlan) -> Tracker:
    """The MLflow tracker thread: the study's parent run, and each trial's run id recorded on its trial.
    With local workers it holds them back while MLflow is `plan.jobs` runs behind (at most ~2 x jobs)."""
    from sweep.search.run_links import RunLinks
    from sweep.search.status import record_experiment
    from sweep.tracking.store import default_tracking_uri
    from sweep.tracking.tracker import ParentSpec, Tracker

    name = cfg.study_name
    tracking_uri = cfg.tracking_uri or default_tracking_uri(paths.workdir)
    record_run_id = RunLinks(study, cfg.storage, paths.journal,
                             on_first=lambda: record_experiment(study, tracker.experiment_id, tracking_uri))
    parent = ParentSpec("study", f"study {name}",
                        params={"dataset": cfg.dataset, "seed": cfg.seed, "trials": cfg.trials,
                                "storage": mask_url(cfg.storage) or f"journal:{paths.journal}"},
                        tags={"optuna.study": name, "sweep.kind": "study", **paths.identity_tags, **model_tags(cfg.model),
                              NOTE_TAG: study_note(name, cfg.dataset, cfg.trials)})
    tracker = Tracker(tracking_uri, name, paths.spool_dir, [parent], on_run_created=record_run_id,
                      say=say_to(out), max_behind=None if plan.dask_scheduler else plan.jobs).start()
    return tracker


def announce(cfg: SweepConfig, study: optuna.Study, data: dict[str, np.ndarray], plan: WorkerPlan, missing: int,
             budget: Budget | None, out: TextIO, on_progress: Callable[[int, int], None] | None) -> Progress:
    """The start line (what is done, what runs where, on what data) and the progress counter."""
    from sweep.search.study import counted_trials, with_storage_retry

    say = say_to(out)
    done = cfg.trials - max(missing, 0)
    out.write(f"study {cfg.study_name!r}: {done}/{cfg.trials} trials done, running {max(missing, 0)} more "
              f"{plan.where}; dataset {cfg.dataset} "
              f"({data['X_train'].shape[0]} train / {data['X_val'].shape[0]} val)\n")
    out.write(budget_start_line(budget, cfg.timeout or ""))
    return Progress(cfg.trials, done, plan.in_flight, cfg.space, out,
                    count_done=lambda: with_storage_retry(counted_trials, study, say=say), budget=budget,
                    on_progress=on_progress)


@dataclass(frozen=True)
class RoundsEnd:
    """How the rounds of trials ended."""

    interrupted: bool = False  # Ctrl-C or SIGTERM
    budget_killed: bool = False  # --timeout-kill at the deadline
    fault: str = ""  # why the sweep stopped itself (a spool folder it cannot write)


def run_rounds(cfg: SweepConfig, study: optuna.Study, ctx: TrialContext, plan: WorkerPlan, progress: Progress, missing: int,
               budget: Budget | None, paths: SweepPaths, out: TextIO, tracker: Tracker | None = None) -> RoundsEnd:
    """Rounds of trials until the target counts: a round re-submits what dead workers left,
    at most MAX_ROUNDS times; Ctrl-C/SIGTERM (or --timeout-kill) fails and re-queues the running ones."""
    from sweep.search.study import check_target, counted_trials, reap_stale_trials, spool_path, with_storage_retry

    say = say_to(out)
    worker_died = worker_death_errors(dask=plan.dask_scheduler is not None)
    old_alarm = None
    fault = ""
    try:
        old_alarm = _arm_budget_kill(budget)  # inside the try: a budget already over fires at once
        rounds = 0
        while missing > 0 and rounds < MAX_ROUNDS and not fault and not (budget and budget.over()):
            rounds += 1
            skipped_before = progress.skipped
            try:
                trials = _parallel_trials(ctx, missing, plan.jobs, plan.threads, plan.dask_scheduler)
                for res in trials:
                    if res.get("number", -1) >= 0:
                        ended = spool_path(paths.spool_dir, res["number"]).name
                        if tracker is not None:  # counted by the mirror's gate at once
                            tracker.trial_ended(ended)
                        release_worker(paths.spool_dir, ended)  # then its worker may start another trial
                    progress.update(res)
                    if res.get("stop"):
                        fault = res["reason"]
                        trials.close()  # no new trials: nothing more could be recorded
                        break
            except worker_died as exc:
                spool.wait_writers_gone(paths.spool_dir)
                requeued = with_storage_retry(reap_stale_trials, study, paths.spool_dir, "worker process died",
                                              min_age_seconds=0, say=say)
                out.write(f"a worker process died{death_detail(exc)}; re-queued trial(s) {requeued}\n")
            if fault:
                _stop_for_fault(study, fault, paths, out)
                break
            missing = cfg.trials - with_storage_retry(counted_trials, study, say=say)
            if missing > 0 and progress.skipped > skipped_before:
                # Tasks found the target reached counting RUNNING trials: another process's count when they end;
                # a vanished Dask worker's are re-queued here. Resubmit only for what is still open.
                requeue_lost_dask_trials(study, plan.dask_scheduler, out, say)
                check = with_storage_retry(check_target, study, cfg.trials, say=say)
                missing = max(cfg.trials - check.counted - check.running, check.waiting)
                if missing <= 0:
                    out.write(f"{check.running} trial(s) towards the target of {cfg.trials} are still running "
                              f"in another sweep process; they count when they end\n")
    except KeyboardInterrupt as exc:
        # --timeout-kill at the deadline takes the interrupt path: running trials
        # failed as "interrupted" and re-queued; but the sweep ended as asked.
        budget_killed = isinstance(exc, _BudgetOver)
        out.write("\ntime budget over: stopping the running trials (--timeout-kill); they are re-queued\n"
                  if budget_killed else
                  "\nstopping: marking running trials as interrupted (rerun the same command to resume)\n")
        spool.wait_writers_gone(paths.spool_dir)
        reap_stale_trials(study, paths.spool_dir, "interrupted", min_age_seconds=0)
        return RoundsEnd(interrupted=not budget_killed, budget_killed=budget_killed)
    finally:
        _disarm_budget_kill(old_alarm)
    return RoundsEnd(fault=fault)


def _stop_for_fault(study: optuna.Study, fault: str, paths: SweepPaths, out: TextIO) -> None:
    from sweep.search.study import reap_stale_trials

    out.write(f"stopping the sweep: {fault}. What was recorded before is kept; "
              "free space there and run the same command to resume.\n")
    spool.wait_writers_gone(paths.spool_dir)
    with contextlib.suppress(OSError):  # its runs cannot be closed there: the next run reaps them
        reap_stale_trials(study, paths.spool_dir, "stopped: the spool folder cannot be written", min_age_seconds=0)


def end_sweep(cfg: SweepConfig, study: optuna.Study, data: dict[str, np.ndarray], paths: SweepPaths, tracker: Tracker,
              ctx: TrialContext, ended: RoundsEnd, budget: Budget | None, out: TextIO) -> SweepOutcome:
    """Close what the last round left, the best trial's test accuracy, the parent run, the summary.

    A signal from here on stops the ending and says what MLflow lacks (sweep.search.stops)."""
    from sweep.search.reproducible import given_up_line
    from sweep.search.status import mark_sweep_process
    from sweep.search.study import reap_stale_trials, with_storage_retry

    say = say_to(out)
    tracking_uri = tracker.tracking_uri
    try:
        if not ended.interrupted and not ended.budget_killed:  # runs of trials the heartbeat failed at the end
            with contextlib.suppress(OSError):  # a full spool folder (a fault): the next run reaps
                with_storage_retry(reap_stale_trials, study, paths.spool_dir, "worker process died", say=say)
        given_up = with_storage_retry(given_up_line, study, say=say) if cfg.reproducible_lag is not None else None
        if given_up:  # never silently wrong: these trials saw another past than a rerun would
            out.write(given_up + "\n")
        with trial_blas_threads(ctx):  # the best trial's test accuracy too, in the reproducible mode
            outcome = finish(cfg, study, data, paths, tracker, tracking_uri, ended.interrupted, out, budget=budget)
        outcome.fault = ended.fault
        with_storage_retry(mark_sweep_process, study, cfg.trials, ended=True)
    except KeyboardInterrupt as exc:
        outcome = stopped_ending(exc, cfg.study_name, tracker, tracking_uri, out)
    return outcome


def _parallel_trials(
    ctx: TrialContext, n: int, jobs: int, threads: int, dask_scheduler: str | None
) -> Generator[dict[str, Any], None, None]:
    """Run `n` trials on the pool (sweep.search.pool); yields each outcome as it ends.

    A worker's spool file is copied into ctx.spool_dir only when it is missing or
    shorter there (the worker ran on another machine's disk), so the tracker
    mirrors every trial; on a shared disk nothing is written twice.
    """
    from sweep.search.study import spool_path

    # Lazily consumed by joblib (pre-dispatch): once the budget is over no task is
    # even submitted; the few already dispatched find it over in the worker.
    tasks = (ctx for _ in range(n) if not over_deadline(ctx.deadline))
    for res in run_unordered(run_one_trial, tasks, jobs=jobs, threads=threads, dask_scheduler=dask_scheduler):
        spool.adopt(spool_path(ctx.spool_dir, res["number"]), res.pop("spool", ""))
        yield res
