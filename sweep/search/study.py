"""Optuna side of a sweep: storage, sampler, pruner, counting and stale-trial recovery.

Storage: the default is a journal file (safe across processes, no server).
Journal storage has no heartbeat, so a worker killed mid-trial would leave a
RUNNING trial forever; `reap_stale_trials` detects those from the workers'
liveness records (the spool start record: host, pid, process start time),
fails them and re-queues their parameters. RDB URLs get Optuna's own
heartbeat, with `requeue` as its stale-trial callback, which also covers workers on
other machines. Both kinds of retry are recognised by `retried_numbers`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import optuna
from optuna.samplers import TPESampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweep.config.sweep_file import SweepConfig
from sweep.paths import STUDY_KEY_ATTR, journal_file, new_study_key
from sweep.search.journal import CheckedJournalFileBackend
from sweep.search.journal_lock import JournalFlock
from sweep.search.journal_storage import ScalingJournalStorage
from sweep.search.sampler_scale import BoundedHistoryMixin
from sweep.search.trial_counts import trial_counts
from sweep.tracking import spool

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_SECONDS = 10
_RDB_PREFIXES = ("sqlite:", "postgresql", "mysql", "oracle", "mssql")


MAX_RETRIES = 3
# How long the parent keeps retrying a storage that stopped answering (a database restart).
STORAGE_RETRY_SECONDS = 120.0


def is_storage_error(exc: BaseException) -> bool:
    """True for a failure to reach the Optuna storage (database down or restarting)."""
    import sqlalchemy.exc

    if isinstance(exc, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError,
                        sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_storage_error(cause)


def short_storage_error(exc: BaseException) -> str:
    """The database's own words, one line, e.g. 'server closed the connection unexpectedly'."""
    from sweep.redact import mask_text

    inner = exc
    while getattr(inner, "orig", None) is None and (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(getattr(inner, "orig", None) or inner).strip().splitlines()
    return mask_text(text[0] if text else type(exc).__name__)[:200]


T = TypeVar("T")


def with_storage_retry(fn: Callable[..., T], *args: Any, say: Callable[[str], object] | None = None,
                       seconds: float = STORAGE_RETRY_SECONDS, **kwargs: Any) -> T:
    """fn(*args, **kwargs), retried every 2 s while the storage is unreachable, for `seconds`.

    `say` gets one line when the retries start. Other errors, and the last storage error, are raised.
    """
    import time

    deadline = time.monotonic() + seconds
    told = False
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_storage_error(exc) or time.monotonic() > deadline:
                raise
            if say is not None and not told:
                say(f"the Optuna storage is unreachable ({short_storage_error(exc)}); "
                    f"retrying for up to {seconds:.0f} s")
                told = True
            time.sleep(2.0)
# What a retry must not inherit from the attempt it repeats.
# User attr set by a reaper before it fails a dead worker's trial: a FAIL trial with it
# and no retry was claimed by a process that died before re-queueing it (reap_stale_trials).
REAPED_ATTR = "reaped"
_OUTCOME_ATTRS = ("failure_reason", "interrupted", "summary", "gap", "pruned_at_epoch", "mlflow_run_id", "timing",
                  REAPED_ATTR)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again (also Optuna's heartbeat callback for RDB).

    Writes the same retry record as Optuna's RetryHeartbeatStaleTrialCallback
    (system attrs `failed_trial` = the original number, `retry_history`), so
    journal and RDB retries read alike, but drops the failed attempt's outcome
    attrs. At most MAX_RETRIES: a configuration that kills its worker every
    time (say, out of memory) ends as a failed trial instead of looping.
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRIES:
        return
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k not in _OUTCOME_ATTRS},
            system_attrs={**{k: v for k, v in trial.system_attrs.items() if k != WORKER_ATTR},
                          "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                          "retry_history": history},
        )
    )


def make_storage(url: str | None, journal_path: Path) -> BaseStorage:
    """Journal file at `journal_path` when `url` is None, else an RDB or journal URL."""
    path = journal_file(url, journal_path)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # flock: a worker killed while holding it stalls no one, and a slow holder
        # is waited for, never broken (sweep.search.journal_lock says why not Optuna's symlink lock).
        # Records are numbered and appended whole or not at all (sweep.search.journal).
        # Trial lists in time that does not grow with the study (sweep.search.journal_storage).
        return ScalingJournalStorage(CheckedJournalFileBackend(str(path), lock_obj=JournalFlock(path)))
    assert url is not None  # journal_file gives None only for a database URL
    if url.startswith(_RDB_PREFIXES):
        with warnings.catch_warnings():  # heartbeat_interval is flagged experimental, in every worker's stderr
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                # A database restarted under a sweep leaves every pooled connection dead:
                # test each before use, so only the statements in flight at the restart fail.
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=3 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=requeue,
            )
    raise ValueError(
        f"--storage: unsupported URL {url!r}; use an RDB URL (postgresql+psycopg2://..., "
        "sqlite:///file.db, mysql://...) or journal:PATH, or leave it unset for the default journal file"
    )


def repair_journal(path: Path) -> str | None:
    """Drop an incomplete last record of a journal file (a process killed while writing it).

    Optuna skips such a line when reading, but the next record appended would be
    glued to it and make the journal unreadable from there on. The cut record's
    change is lost (say, a trial's COMPLETE): that trial reads as RUNNING with a dead
    worker, so `reap_stale_trials` fails and re-queues it, and nothing is lost
    silently. The bytes dropped are kept in PATH.damaged. Held under Optuna's own
    journal lock, and only when the file has not grown for a second (not a write
    under way in another process).

    Returns:
        What was done, for the user (None: the journal was whole).
    """
    import time

    def partial() -> tuple[int, int] | None:
        if not path.exists() or path.stat().st_size == 0:
            return None
        with open(path, "rb") as f:
            data = f.read()
        if data.endswith(b"\n"):
            return None
        return len(data), data.rfind(b"\n") + 1

    first = partial()
    if first is None:
        return None
    time.sleep(1.0)
    lock = JournalFlock(path)
    if not lock.acquire():
        return None
    try:
        again = partial()
        if again != first:
            return None
        size, keep = again
        with open(path, "rb") as f:
            f.seek(keep)
            cut = f.read()
        with open(path.with_name(path.name + ".damaged"), "ab") as damaged:
            damaged.write(cut + b"\n")
        os.truncate(path, keep)
    finally:
        lock.release()
    return (f"{path}: dropped its incomplete last record ({size - keep} bytes, a process killed while writing it; "
            f"kept in {path.name}.damaged); a trial it belonged to is re-run")


class TrialSeededTPESampler(BoundedHistoryMixin, TPESampler):
    """TPE re-seeded from (study seed, trial number) before every trial.

    Each worker process holds its own sampler; seeded once, they would all draw
    the same start-up samples. Re-seeding per trial number keeps them apart and
    makes a one-process study reproducible. (Touches TPESampler's `_rng` and its
    inner random sampler's `_rng`; tests/test_study.py guards this.) Its estimators
    see a bounded history beyond 500 trials (sweep.search.sampler_scale).
    """

    def __init__(self, *, seed: int, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        state = int(np.random.SeedSequence([self._base_seed, trial.number]).generate_state(1)[0])
        self._rng.rng.seed(state)
        self._random_sampler._rng.rng.seed(state)
        super().before_trial(study, trial)


def make_sampler(seed: int) -> TPESampler:
    # group=True: depth decides which hidden_k exist (a conditional space);
    # constant_liar: parallel workers don't all sample next to the same best point.
    with warnings.catch_warnings():  # multivariate/group are flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return TrialSeededTPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of hyperband, median, none; got {name!r}")


#: The name of a trial's value, shown by optuna-dashboard (`sweep dashboard`) and Optuna's plots.
OBJECTIVE_NAME = "best val accuracy"


def open_study(cfg: SweepConfig, storage: BaseStorage, *, create: bool = True) -> optuna.Study:
    """Create the study (or load it) and check a resumed one matches the sweep file."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs: dict[str, Any] = dict(
        storage=storage,
        study_name=cfg.study_name,
        sampler=make_sampler(cfg.seed),
        pruner=make_pruner(cfg.pruner, cfg.space.max_epochs),
    )
    if not create:
        return optuna.load_study(**kwargs)
    created = False
    try:  # created here: its key first (sweep.paths: a new study of an old name gets its own files)
        study_id = storage.create_new_study([StudyDirection.MAXIMIZE], cfg.study_name)
    except optuna.exceptions.DuplicatedStudyError:
        pass  # an existing study (or one another process is creating now: study_key waits for its key)
    else:
        storage.set_study_system_attr(study_id, STUDY_KEY_ATTR, new_study_key())
        created = True
    study = optuna.create_study(direction="maximize", load_if_exists=True, **kwargs)
    if study.metric_names is None:  # optuna-dashboard shows the value as "Objective 0" without it
        with warnings.catch_warnings():  # flagged experimental, a warning in every sweep's output
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])
    identity = study_identity(cfg)
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", identity)
    elif stored != identity:
        changes = "; ".join(f"{key} {json.dumps(was)} -> {json.dumps(now)}"
                            for key, was, now in changed_settings(stored, identity))
        raise ValueError(
            f"study {study.study_name!r} was created with different settings: {changes} (stored -> now). "
            "Give the study's settings back, or another --study name to start a new study."
        )
    if created:  # only its creator: a resumed or joined study never queues a second one
        from sweep.search.baseline import enqueue_baseline

        enqueue_baseline(study, cfg.space)
    return study


def changed_settings(stored: Any, now: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf setting that differs, as (dotted key, stored, now), e.g. ("space.epochs", 1, 15).

    A resumed study's refusal names only what changed, not the whole identity of both.
    """
    if isinstance(stored, dict) and isinstance(now, dict):
        return [change for key in sorted(set(stored) | set(now))
                for change in changed_settings(stored.get(key), now.get(key), f"{prefix}{key}.")]
    return [] if stored == now else [(prefix.rstrip("."), stored, now)]


def study_identity(cfg: SweepConfig) -> dict[str, Any]:
    """What must not change when a study is resumed (else its trials don't compare)."""
    return {
        "dataset": cfg.dataset,
        "num_train": cfg.num_train,
        "num_val": cfg.num_val,
        "seed": cfg.seed,
        "space": cfg.space.to_dict(),
    }


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of failed trials whose parameters were queued again."""
    out: set[int] = set()
    count = 0
    for t in trials:
        count += 1
        # A trial's retry_history is written when it is created (`requeue`): read once per
        # trial object (every task of a worker reads them all; 10 000 at 10 000 trials).
        seen = _RETRY_HISTORY.get(id(t))
        if seen is None or seen[0] is not t:
            seen = _RETRY_HISTORY[id(t)] = (t, tuple(t.system_attrs.get("retry_history", ())))
        out.update(seen[1])
    if len(_RETRY_HISTORY) > 4 * max(count, 10_000):  # objects replaced by updates: drop the memo
        _RETRY_HISTORY.clear()
    return out


_RETRY_HISTORY: dict[int, tuple[FrozenTrial, tuple[int, ...]]] = {}  # id -> (the trial, its history)


def seed_index(trial: FrozenTrial) -> int:
    """Trial number that seeds a run: a retry reuses the original trial's seeds."""
    return int(trial.system_attrs.get("failed_trial", trial.number))


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards --trials: finished, pruned or failed, minus re-queued failures."""
    return trial_counts(study, study.get_trials(deepcopy=False)).counted


@dataclass(frozen=True)
class TargetCheck:
    """The study as a worker sees it just before it would start a trial (see `check_target`)."""

    target: int
    counted: int  # `counted_trials`: finished, pruned or failed, minus re-queued failures
    running: int  # RUNNING, owner alive or not known to be dead: they count when they end
    waiting: int  # WAITING (re-queued or enqueued): already in the study, Optuna's ask pops them first

    @property
    def start(self) -> bool:
        """Whether to run a trial: a WAITING one is always run, a new one only below the target."""
        return self.waiting > 0 or self.counted + self.running < self.target


def check_target(study: optuna.Study, target: int) -> TargetCheck:
    """Read, from the storage now, whether a worker should still start a trial.

    Several `sweep run` processes may work on one study (machines sharing an
    RDB storage, terminals sharing a journal file), each having computed its
    missing trials at its own start; this check, made by every task right
    before its trial, is what stops the study at `target`. The rule:

    - counted trials (`counted_trials`) plus RUNNING trials reach `target`:
      start nothing. A RUNNING trial counts unless its worker is known to be
      dead; the caller reaps first (`reap_stale_trials`: dead pid on this
      host), and with an RDB storage this fails heartbeat-stale trials first
      (Optuna's `fail_stale_trials`, which `requeue`s them). So a trial of a
      dead worker on another machine counts until its heartbeat goes stale
      (RDB), or, on a journal file shared across machines, until a sweep on
      that machine reaps it.
    - a WAITING trial is run whatever the count: it is already in the study
      (running it adds no trial), and re-queued trials are how a killed
      worker's slot is filled. A re-queued failure does not count and its
      WAITING retry does not either, so normally the count is below the
      target anyway while one waits.

    There is no lock: workers that check at the same instant all see the same
    count, so the study can overshoot the target by at most (number of workers
    starting a trial concurrently, across all processes) - 1 (plus any trials
    someone enqueued beyond the target, which are run as said above).
    """
    with warnings.catch_warnings():  # fail_stale_trials is flagged experimental; a no-op without heartbeat
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    counts = trial_counts(study, study.get_trials(deepcopy=False))  # reads only the unfinished end
    return TargetCheck(target=target, counted=counts.counted, running=counts.running, waiting=counts.waiting)


def spool_path(spool_dir: Path, number: int) -> Path:
    return spool_dir / f"trial-{number:04d}.jsonl"


# System attr a worker sets on its trial right after Optuna's ask: {"host", "pid",
# "proc_start"}. The spool start record says the same, but only on the worker's
# disk; this copy tells every machine that the trial belongs to a live worker elsewhere.
WORKER_ATTR = "sweep.worker"


# How long a RUNNING trial with no owner recorded yet is taken to be a worker between
# Optuna's ask and its first write, rather than one killed in that gap.
OWNERLESS_GRACE_SECONDS = 60.0


def record_lost_trial(path: Path, study_name: str, number: int, params: dict[str, Any], status: str,
                      tags: dict[str, Any]) -> None:
    """Give a trial that ended before its first spool record its MLflow run: a start and an end
    (`status`, `tags`) in its spool file, so every trial has one run, with the reason."""
    with spool.RunRecorder(path) as rec:
        rec.start(f"trial-{number:04d}", "study", params,
                  {"optuna.trial_number": number, "optuna.study": study_name, "sweep.kind": "trial"})
        rec.end(status, tags)


def reap_stale_trials(  # noqa: C901 - one branch per way a dead worker leaves a trial behind (docs/reliability.md)
    study: optuna.Study,
    spool_dir: Path,
    reason: str,
    *,
    min_age_seconds: float = OWNERLESS_GRACE_SECONDS,
    requeue_interrupted: bool = True,
    leave_sweep: str | None = None,
) -> list[int]:
    """Fail RUNNING trials whose worker is gone on this host, and re-queue them.

    Also re-queues, unless `requeue_interrupted` is False (workers leave those
    to the parent): trials a worker failed itself on an interrupt (user attr
    `interrupted`), and trials a reaper failed but did not live to re-queue
    (user attr REAPED_ATTR, no retry: loky kills every worker when one dies,
    so a worker reaping at that moment can be cut between the two steps). A RUNNING trial with no liveness record yet is left alone
    for `min_age_seconds` (its worker may be between ask and first write).
    Which worker owns a trial comes from its spool start record or, for a
    worker on another machine, from the trial's WORKER_ATTR. A trial whose
    WORKER_ATTR names `leave_sweep` as its sweep process is left to that
    process (a loky worker's sibling: the parent reaps its own workers).

    With an RDB storage, Optuna's heartbeat check (in any worker) may fail the
    same trial; whoever moves it RUNNING -> FAIL first re-queues it, the other
    sees UpdateFinishedTrialError and leaves it, so a trial is retried once.
    A trial the heartbeat failed gets its spool file closed here (Optuna's
    callback cannot know the file), so its MLflow run does not stay RUNNING.
    Returns the numbers of the trials re-queued.
    """

    def read(path: Path) -> spool.SpoolState | None:
        return spool.read_state(path) if path.exists() else None

    def owner_alive(start: dict[str, Any]) -> bool | None:  # None: on another host
        return spool.is_alive(start["host"], start["pid"], start.get("proc_start"))

    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    counts = trial_counts(study, trials)
    retried = counts.retried
    now = dt.datetime.now()
    requeued: list[int] = []
    # Without requeue_interrupted only RUNNING and FAIL trials matter: those after the settled
    # run of finished trials, and its FAIL ones (sweep.search.trial_counts), not all 10 000.
    for t in trials if requeue_interrupted else counts.unsettled:
        path = spool_path(spool_dir, t.number) if t.state in (TrialState.RUNNING, TrialState.FAIL) else None
        if path is None:  # COMPLETE, PRUNED, WAITING: nothing to reap (10 000 Paths a task at 10 000 trials)
            continue
        if t.number in retried:
            state = read(path) if t.state == TrialState.FAIL else None
            # Failed and re-queued by Optuna's heartbeat: end the run its dead worker left open.
            if (state is not None and state.start is not None and state.end is None
                    and owner_alive(state.start) is not True):
                    lost = {spool.STATE_TAG: "FAIL", "failure_reason": "worker stopped sending heartbeats"}
                    spool.append_end(path, spool.end_status("FAIL"), lost)
            continue
        state = None
        was_running = t.state == TrialState.RUNNING
        if was_running:
            if leave_sweep is not None and (t.system_attrs.get(WORKER_ATTR) or {}).get("sweep") == leave_sweep:
                continue
            state = read(path)
            owner = state.start if state is not None and state.start is not None else t.system_attrs.get(WORKER_ATTR)
            if owner is not None:
                if owner_alive(owner) is not False:  # alive, or on another host (heartbeat's job)
                    continue
            elif t.datetime_start and (now - t.datetime_start).total_seconds() < min_age_seconds:
                continue
            try:
                storage.set_trial_user_attr(t._trial_id, "failure_reason", reason)
                storage.set_trial_user_attr(t._trial_id, REAPED_ATTR, True)
                # The RUNNING -> FAIL move is the claim (a row lock on RDB): only its winner re-queues.
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # failed meanwhile by another process, which re-queues it
            t = storage.get_trial(t._trial_id)
        elif requeue_interrupted and t.state == TrialState.FAIL and (
                t.user_attrs.get("interrupted") or t.user_attrs.get(REAPED_ATTR)):
            state = read(path)
        else:
            continue
        # FAILED for a dead worker, KILLED only for a trial an interrupt cut off.
        orphan = t.state == TrialState.FAIL and bool(t.user_attrs.get(REAPED_ATTR)) and not was_running
        why = t.user_attrs.get("failure_reason", reason) if orphan else reason
        status = spool.end_status("FAIL", interrupted=bool(t.user_attrs.get("interrupted")) or why == "interrupted")
        lost = {spool.STATE_TAG: "FAIL", "failure_reason": why}
        try:  # a spool folder that cannot be written (disk full) must not stop the re-queue
            if state is None or state.start is None:
                # Died between taking the trial and its first record: still give the
                # trial its MLflow run, so every trial has one (with the reason).
                record_lost_trial(path, study.study_name, t.number, t.params, status, lost)
            elif state.end is None:
                spool.append_end(path, status, lost)
        except OSError:
            pass
        requeue(study, t)
        requeued.append(t.number)
    return requeued
