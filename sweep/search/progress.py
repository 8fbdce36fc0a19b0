"""What the person running a sweep reads: one progress line per finished trial, and the summary.

Kept apart from the runner (which schedules the work) so the wording of
every line a person reads lives in one place.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from sweep.config.display import format_number, scale_of
from sweep.config.sweep_file import SweepConfig
from sweep.redact import mask_url
from sweep.tracking.store import ui_url

if TYPE_CHECKING:
    from sweep.config.budget import Budget
    from sweep.config.space import SearchSpace
    from sweep.tracking.outage import Backlog


@dataclass
class Progress:
    """Counts and ETA printed after every finished trial."""

    target: int
    already: int
    jobs: int
    space: SearchSpace
    out: TextIO = sys.stdout
    started: float = field(default_factory=time.monotonic)
    states: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    skipped: int = 0  # tasks that started no trial: the target was reached (run_one_trial)
    # Trials counted in the whole study, read from the storage (the sweep passes
    # sweep.search.study.counted_trials): other `sweep run`s of the study count too, and a
    # dead worker's re-queued trial does not. None: this process's own count.
    count_done: Callable[[], int] | None = None
    budget: Budget | None = None  # of `--timeout`
    budget_skipped: int = 0  # tasks that started no trial: the budget was over
    ended_after_budget: int = 0  # trials that ended after the deadline: none replaces them
    on_progress: Callable[[int, int], None] | None = None  # (done, target) after each trial: a notebook's bar

    def done(self) -> int:
        if self.count_done is not None:
            return self.count_done()
        return self.already + sum(self.states.values())

    def update(self, res: dict[str, Any]) -> None:
        if res.get("budget"):  # the time budget is over: quietly, the summary says it
            self.budget_skipped += 1
            return
        if res.get("skipped"):
            # No trial ran: not in the counts, the ETA or the best.
            self.skipped += 1
            self.out.write(f"skipped a task: {res['reason']}; no trial started\n")
            self.out.flush()
            return
        self.states[res["state"]] = self.states.get(res["state"], 0) + 1
        if res["state"] == "COMPLETE" and (self.best_value is None or res["value"] > self.best_value):
            self.best_value, self.best_params = res["value"], res["params"]
        elapsed = time.monotonic() - self.started
        new = sum(self.states.values())
        done = self.done()
        remaining = max(0, self.target - done)
        # The study's pace since this process started (other sweeps' trials included).
        gained = done - self.already if done > self.already else new
        eta = elapsed / gained * remaining if gained else float("nan")
        eta_text = budget_eta(eta, self.budget)
        running = min(self.jobs, max(0, remaining))
        if self.budget is not None and self.budget.over():
            self.ended_after_budget += 1
            running = max(0, running - self.ended_after_budget)
        outcome = f"{res['state'].lower()}"
        if res["state"] == "COMPLETE":
            outcome += f" val_acc={res['value']:.4f}"
        elif res.get("reason"):
            outcome += f" ({res['reason']})"
        best = "-" if self.best_value is None else f"{self.best_value:.4f} {format_params(self.space, self.best_params or {})}"
        self.out.write(
            f"[{done:>3}/{self.target}] trial {res['number']} {outcome} | running {running}, "
            f"pruned {self.states.get('PRUNED', 0)}, failed {self.states.get('FAIL', 0)} | best {best} | "
            f"{hms(elapsed)} elapsed, ETA {eta_text}\n"
        )
        self.out.flush()
        if self.on_progress is not None:
            self.on_progress(done, self.target)


def budget_start_line(budget: Budget | None, timeout: str) -> str:
    """The start line of a budgeted sweep: when the last trial may start (local time, to the second)."""
    if budget is None:
        return ""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(budget.deadline))
    then = "stopped and re-queued (--timeout-kill)" if budget.kill else "finished"
    return f"time budget {timeout}: no trial starts after {at}; trials running then are {then}\n"


def budget_eta(eta: float, budget: Budget | None) -> str:
    """The progress line's ETA, bounded by the time budget: 'H:MM:SS', or with a budget
    'H:MM:SS (budget H:MM:SS left)'; when the budget ends first the ETA is the time left,
    marked '(budget ends first)'. Trials running at the deadline may still finish after it."""
    if budget is None:
        return hms(eta)
    left = budget.left()
    if not np.isfinite(eta) or eta > left:
        return f"{hms(left)} (budget ends first)"
    return f"{hms(eta)} (budget {hms(left)} left)"


def format_params(space: SearchSpace, params: dict[str, Any]) -> str:
    """Short human form of a trial's params, e.g. keep=0.55 hidden=256-128 norm=batchnorm lr=1.234e-3
    (numbers as in MLflow's params: sweep.config.display.format_number)."""
    try:
        p = space.params_from_trial(params)
    except ValueError:
        return str(params)
    hidden = "-".join(str(h) for h in p.hidden_dims)
    keep = format_number(p.keep_prob, **scale_of("keep_prob", space))
    lr = format_number(p.learning_rate, **scale_of("learning_rate", space))
    # The other regularizers, only when on (absent from to_flat when off).
    extra = "".join(f" {short}={format_number(v, **scale_of(name, space))}" for name, short in (
        ("input_keep_prob", "input_keep"), ("max_norm", "max_norm"), ("augment_flip", "flip"),
        ("augment_shift", "shift")) if (v := p.to_flat().get(name)) is not None)
    return f"keep={keep} hidden={hidden} norm={p.normalization} lr={lr}{extra}"


def hms(seconds: float) -> str:
    """Seconds as H:MM:SS ('?' when unknown)."""
    if not np.isfinite(seconds):
        return "?"
    s = round(float(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"



@dataclass
class SweepOutcome:
    study_name: str
    experiment_id: str | None
    parent_run_id: str | None
    tracking_uri: str
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    test_acc: float | None
    interrupted: bool
    counted: int
    budget_seconds: float | None = None  # set when the time budget (not the target) ended the sweep
    best_run_id: str | None = None  # the best trial's MLflow run
    untracked: Backlog | None = None  # what MLflow lacks at the end; None: all there
    tracking_error: str = ""  # the tracker's last failure, if any
    fault: str = ""  # why the sweep stopped itself before its target (e.g. a full spool folder)


def budget_summary(o: SweepOutcome, cfg: SweepConfig) -> str:
    """The summary's line when the time budget ended the sweep ('' otherwise)."""
    if o.budget_seconds is None:
        return ""
    return (f"time budget of {cfg.timeout} ended the sweep with {o.counted}/{cfg.trials} trials done; "
            f"run the same command to continue towards {cfg.trials}.\n")


def print_summary(o: SweepOutcome, cfg: SweepConfig, out: TextIO) -> None:
    out.write("\n")
    out.write(budget_summary(o, cfg))
    if o.interrupted:
        out.write(f"interrupted with {o.counted}/{cfg.trials} trials counted; run the same command to resume.\n")
    if o.best_number is None:
        out.write("no completed trial yet.\n")
    else:
        test = "n/a" if o.test_acc is None else f"{o.test_acc:.4f}"
        out.write(
            f"best trial {o.best_number}: val_acc {o.best_value:.4f}, test_acc {test}\n"
            f"  params: {format_params(cfg.space, o.best_params or {})}\n"
        )
    if print_tracking_status(o.study_name, o.tracking_uri, o.untracked, o.tracking_error, out):
        return
    server = o.tracking_uri.startswith(("http://", "https://"))

    def link(run_id: str | None = None) -> str:
        if server:
            return ui_url("", 0, o.experiment_id, run_id=run_id, base=mask_url(o.tracking_uri))
        return ui_url("127.0.0.1", 5000, o.experiment_id, run_id=run_id)

    if server:
        out.write(f"look at the curves on the tracking server:\n  {link()}\n")
    else:
        out.write(
            f"look at the curves: `sweep ui --study {o.study_name}` (runs `mlflow ui` on this store), then open\n"
            f"  {link()}\n"
        )
    if o.experiment_id is not None:
        if o.parent_run_id:
            out.write(f"  the study's parent run (its trials are the rows under it): {link(o.parent_run_id)}\n")
        if o.best_run_id and o.best_number is not None:
            out.write(f"  the best trial's run, trial-{o.best_number:04d}: {link(o.best_run_id)}\n")
    if not server:
        out.write(f"  tracking URI: {mask_url(o.tracking_uri)}\n")
    own = "" if cfg.model is None else f" --model {cfg.model.module}:{cfg.model.class_name}" + (
        f" --model-path {cfg.model.path}" if cfg.model.path else "")  # else the ablation refuses the study
    out.write(
        f"then answer the dropout question: `sweep ablate --study {o.study_name}{own}` and `sweep report --study {o.study_name}`\n"
    )


# -- what is not in MLflow (tracking outages; sweep.tracking.outage) -------------------------

# Exit code of run/ablate when the work is done but not all of it is in MLflow yet.
EXIT_UNTRACKED = 3
# Exit code of run when a fault (a spool folder it cannot write) stopped it before its target.
EXIT_FAULT = 4


def print_tracking_status(study: str, tracking_uri: str, untracked: Backlog | None, error: str, out: TextIO) -> bool:
    """The last lines when MLflow lacks part of the sweep: what, where it is kept, how to upload it.

    Returns True if it printed them (the caller then points at no curves, which are incomplete).
    """
    if untracked is None or untracked.empty:
        return False
    shown = mask_url(tracking_uri)
    why = f" (last error: {error})" if error else ""
    uri_flag = f" --tracking-uri {shown}" if shown != default_tracking_uri_for(untracked.spool_dir) else ""
    out.write(
        f"NOT ALL IN MLFLOW: {untracked.describe()} are not at {shown}{why}.\n"
        f"  they are kept in {untracked.spool_dir}\n"
        f"  upload them once MLflow is reachable: sweep sync --study {study}{uri_flag}\n"
    )
    return True


def print_stopped_ending(signal_name: str, study: str, tracking_uri: str, untracked: Backlog | None, out: TextIO) -> None:
    """The lines of a sweep a signal stopped after its last trial (while it tested the best
    trial, sent the runs to MLflow or summed up): what happened and what MLflow lacks."""
    out.write(f"\nstopped by {signal_name} after the last trial, while the sweep was ending; every trial "
              "that ended is in the Optuna study (the same command finishes the ending).\n")
    if not print_tracking_status(study, tracking_uri, untracked, "", out):
        out.write(f"MLflow at {mask_url(tracking_uri)} has every run of this sweep.\n")
    out.flush()


def default_tracking_uri_for(spool_dir: Any) -> str:
    """The tracking URI `sweep sync` uses without --tracking-uri, run from the sweep's folder."""
    from sweep.paths import default_mlflow_db, workdir_of

    return f"sqlite:///{default_mlflow_db(workdir_of(spool_dir))}"
