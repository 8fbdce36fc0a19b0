"""`sweep compare`: regularizers against each other, each tuned fairly, compared on the TEST split.

Named steps: the plan (base configuration, arms, the comparison's folder); each arm's
strength searched on the validation set with an equal budget (sweep.ablation.tuning)
unless given fixed; every arm re-trained on the same K seeds; the paired statistics
(sweep.analysis.arms) and the report (sweep.reporting.compare_report).

Pairing, as in `sweep ablate` (sweep.ablation.grid): run (arm, seed k) uses the init
and batch-order seeds of ablation seed k (`cell_seeds`) and the training subset of
seed k (`subset_seed`), so for seed k every arm starts from identical weights, sees
the same minibatches in the same order and the same rows; only the regularizer
differs (its masks, constraint or augmentation draw from their own seeded streams).
Each run keeps its best-validation-epoch weights and is then evaluated once on the
test split (accuracy), and on its own training rows (the train-test gap).

Resumable: finished runs are lines of ``runs.jsonl`` in ``.sweep/<study>/<name>/``;
the same command trains only what is missing. Each re-training run is also an
MLflow child run ``ARM-sK`` of the comparison's parent (sweep.ablation.compare_runs).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sweep.ablation.arms import Arm, arm_params, parse_fixed, resolve_arms
from sweep.ablation.claims import close_abandoned
from sweep.ablation.compare_runs import ArmTask, run_arm_task
from sweep.ablation.grid import subset_seed
from sweep.ablation.tuning import TuneTask, append_line, read_log, run_tune_task, tune_arm
from sweep.config.bounds import useful_jobs
from sweep.config.display import NOTE_TAG, readable_params
from sweep.config.domains import ConfigError
from sweep.config.sweep_file import SweepConfig, TrainParams, available_cores
from sweep.paths import paths_of_config
from sweep.search.pool import run_unordered, sigterm_as_interrupt
from sweep.search.progress import print_tracking_status
from sweep.search.recovery import say_to, stop_tracker
from sweep.tracking import spool
from sweep.tracking.store import default_tracking_uri
from sweep.tracking.tracker import ParentSpec, Tracker


@dataclass
class ComparePlan:
    """What one `sweep compare` trains and where it keeps it."""

    name: str
    base: TrainParams
    arms: list[Arm]
    fixed: dict[str, dict[str, Any]]
    budget: int
    seeds: int
    size: int | None
    data_seeds: list[int]
    folder: Path
    report_dir: Path
    tracking_uri: str
    parent: ParentSpec  # the comparison's MLflow parent run; its re-training runs are its children
    strengths: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class CompareOutcome:
    """How a comparison ended: its records, summary and report (None when interrupted before the end)."""

    name: str
    folder: Path
    records: list[dict[str, Any]]
    strengths: dict[str, dict[str, Any]]
    runs_total: int
    interrupted: bool = False
    summary: Any = None  # sweep.analysis.arms.CompareSummary
    report: Path | None = None
    seconds: float = 0.0


def plan_compare(cfg: SweepConfig, arms: Sequence[str] | None, budget: int, seeds: int, size: int | None,
                 fixed: Sequence[str] | Mapping[str, Mapping[str, Any]] | None, workdir: Path, out: TextIO) -> ComparePlan:
    """The arms (checked), the base configuration, the comparison's name and folder."""
    from sweep.ablation.runner import base_params

    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"must be an integer >= 1 (trials per arm's search), got {budget!r}", key="budget")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ConfigError(f"must be an integer >= 2 (paired intervals need two seeds), got {seeds!r}", key="seeds")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"must be an integer >= 1 (training rows), got {size!r}", key="size")
    chosen = resolve_arms(arms, cfg.dataset)
    fixed_table = parse_fixed(fixed, chosen)
    said = io.StringIO()  # base_params names the trial it takes in an ablation's words
    base = base_params(cfg, said)
    out.write(said.getvalue().replace("ablating the best trial", "base configuration: the best trial"))
    for arm in chosen:  # a fixed strength the data refuse (a flip on digits) fails now, not after the tuning
        if arm.name in fixed_table:
            arm_params(base, arm, fixed_table[arm.name], cfg.dataset, key=f"fix.{arm.name}")
    size = size if size is not None else cfg.num_train
    key = json.dumps({"p": base.to_flat(), "a": [a.name for a in chosen], "f": fixed_table, "b": budget,
                      "s": seeds, "n": size, "d": cfg.dataset, "u": cfg.grid.subsets, "v": cfg.num_val},
                     sort_keys=True, default=str)
    name = "compare-" + hashlib.sha1(key.encode()).hexdigest()[:8]
    paths = paths_of_config(workdir, cfg)
    arms_text = ",".join(a.name for a in chosen)
    parent = ParentSpec(
        f"compare:{name}", name,
        params={**readable_params(base.to_flat()), "arms": arms_text, "budget": budget, "seeds": seeds,
                "num_train": size or "all", "dataset": cfg.dataset},
        tags={"sweep.kind": "compare", "optuna.study": cfg.study_name, **paths.identity_tags,
              NOTE_TAG: f"sweep compare {name}: arms {arms_text}, each tuned on validation ({budget} trials), "
                        f"then {seeds} paired seeds per arm evaluated on the test split; children are the "
                        "re-training runs (arm-sSEED), report in reports/"},
    )
    return ComparePlan(name, base, chosen, fixed_table, budget, seeds, size,
                       [subset_seed(cfg.seed, k, cfg.grid.subsets) for k in range(seeds)],
                       paths.state_dir / name, paths.report_dir / name,
                       cfg.tracking_uri or default_tracking_uri(paths.workdir), parent)


def run_compare(cfg: SweepConfig, *, arms: Sequence[str] | None = None, budget: int = 8, seeds: int = 5,
                size: int | None = None, fixed: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
                workdir: Path | None = None, out: TextIO = sys.stdout) -> CompareOutcome:
    """Tune every arm, re-train every (arm, seed), then summarize on the test split and write the report."""
    started = time.monotonic()
    plan = plan_compare(cfg, arms, budget, seeds, size, fixed, workdir or Path.cwd(), out)
    jobs = useful_jobs(cfg.resolved_jobs(), len(plan.arms) * plan.seeds)
    threads = max(1, available_cores() // jobs)
    out.write(f"{plan.name}: arms {', '.join(a.name for a in plan.arms)}; {plan.budget} tuning trials per arm "
              f"on the validation set, then {plan.seeds} paired seeds per arm on the test set "
              f"({'all' if plan.size is None else plan.size} training rows, {jobs} worker(s))\n")
    announce_cost(cfg, plan, jobs, threads, workdir or Path.cwd(), out)
    records: list[dict[str, Any]] = []
    try:
        with sigterm_as_interrupt(), only_process(plan):
            plan.strengths = tune_all(cfg, plan, jobs, threads, out)
            records = retrain_all(cfg, plan, jobs, threads, out)
    except KeyboardInterrupt:
        out.write(f"\n{plan.name}: stopping; rerun the same command to continue where it stopped\n")
        done = read_log(plan.folder / "runs.jsonl")
        return CompareOutcome(plan.name, plan.folder, done, plan.strengths, len(plan.arms) * plan.seeds,
                              interrupted=True, seconds=time.monotonic() - started)
    outcome = CompareOutcome(plan.name, plan.folder, records, plan.strengths, len(plan.arms) * plan.seeds)
    summarize_and_report(cfg, plan, outcome, out)
    outcome.seconds = time.monotonic() - started
    return outcome


def announce_cost(cfg: SweepConfig, plan: ComparePlan, jobs: int, threads: int, workdir: Path, out: TextIO) -> None:
    """One line: the estimated wall and CPU time of the tuning trials and runs still to train
    (sweep.ablation.cost, scaled from the study's measured epoch or a one-epoch timing run)."""
    from sweep.ablation.cost import describe, estimate_cost, measure_epoch
    from sweep.ablation.runner import study_timing

    tuned = collections.Counter(r["arm"] for r in read_log(plan.folder / "tuning.jsonl"))
    todo = [arm_params(plan.base, a, {}, cfg.dataset) for a in plan.arms if a.knobs and a.name not in plan.fixed
            for _ in range(max(0, plan.budget - tuned.get(a.name, 0)))]
    done = {(r["arm"], r["seed"]) for r in read_log(plan.folder / "runs.jsonl")}
    todo += [arm_params(plan.base, a, {}, cfg.dataset) for a in plan.arms for k in range(plan.seeds)
             if (a.name, k) not in done]
    if not todo:
        return
    data = cfg.data.subset(plan.size, plan.data_seeds[0]).load()
    rows = int(data["X_train"].shape[0])
    measured = study_timing(cfg, workdir) or measure_epoch(plan.base, data, threads,
                                                           f"a one-epoch timing run on {rows} rows")
    est = estimate_cost(todo, lambda p: (p, rows), measured, workers=jobs, threads=threads)
    out.write(f"{plan.name}: {describe(est).replace('cell(s)', 'training run(s)')}\n")
    out.flush()


@contextlib.contextmanager
def only_process(plan: ComparePlan) -> Iterator[None]:
    """Hold the comparison's lock (flock: the kernel drops it when its holder dies) while training.

    Raises:
        ValueError: another `sweep compare` of the same comparison holds it (both would train every
            missing run and append it twice).
    """
    import fcntl

    plan.folder.mkdir(parents=True, exist_ok=True)
    with open(plan.folder / "compare.flock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ValueError(f"{plan.name}: another `sweep compare` of this comparison is running ({holder}); "
                             "wait for it, or stop it and run this command again to continue") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        yield


def _pool(fn: Callable[[Any], dict[str, Any]], jobs: int, threads: int) -> Callable[[list[Any]], Iterator[dict[str, Any]]]:
    """Run a batch of tasks with `fn` on the loky pool, yielding results as they end."""
    def run_batch(tasks: list[Any]) -> Iterator[dict[str, Any]]:
        return run_unordered(fn, tasks, jobs=jobs, threads=threads)
    return run_batch


def tune_all(cfg: SweepConfig, plan: ComparePlan, jobs: int, threads: int, out: TextIO) -> dict[str, dict[str, Any]]:
    """Each arm's strengths: fixed ones as given, the others from their own search (none: nothing to tune)."""
    data = cfg.data.subset(plan.size, plan.data_seeds[0])
    strengths: dict[str, dict[str, Any]] = {}
    out.write(f"{plan.name}: choosing each arm's strength on the validation set\n")
    for index, arm in enumerate(plan.arms):
        if not arm.knobs or arm.name in plan.fixed:
            strengths[arm.name] = dict(plan.fixed.get(arm.name, {}))
            if arm.knobs:
                out.write(f"  {arm.name}: fixed by --fix, "
                          + ", ".join(f"{k}={v}" for k, v in strengths[arm.name].items()) + "\n")
            continue

        def make_task(number: int, values: dict[str, Any], arm: Arm = arm) -> TuneTask:
            return TuneTask(arm.name, number, values, arm_params(plan.base, arm, values, cfg.dataset), data, cfg.seed)

        strengths[arm.name] = tune_arm(arm, index, plan.budget, make_task, plan.folder / "tuning.jsonl",
                                       _pool(run_tune_task, jobs, threads), jobs, out)
    return strengths


def retrain_all(cfg: SweepConfig, plan: ComparePlan, jobs: int, threads: int, out: TextIO) -> list[dict[str, Any]]:
    """Every (arm, seed) not in runs.jsonl, trained on the pool; returns every record, in plan order."""
    log = plan.folder / "runs.jsonl"
    done = {(r["arm"], r["seed"]): r for r in read_log(log)}
    spool_dir = plan.folder / "spool"
    tasks = [ArmTask(arm.name, k, arm_params(plan.base, arm, plan.strengths[arm.name], cfg.dataset),
                     cfg.data.subset(plan.size, plan.data_seeds[k]), cfg.seed, spool_dir, plan.parent.key)
             for k in range(plan.seeds) for arm in plan.arms if (arm.name, k) not in done]
    total = len(plan.arms) * plan.seeds
    out.write(f"{plan.name}: re-training {len(tasks)} of {total} runs (arm x seed; {total - len(tasks)} done before)\n")
    if not tasks:
        return [done[(a.name, k)] for a in plan.arms for k in range(plan.seeds)]
    tracker = Tracker(plan.tracking_uri, cfg.study_name, spool_dir, [plan.parent], say=say_to(out)).start()
    status = "KILLED"
    try:
        for rec in _pool(run_arm_task, jobs, threads)(tasks):
            append_line(log, rec)
            done[(rec["arm"], rec["seed"])] = rec
            out.write(f"[{len(done):>3}/{total}] {rec['arm']} seed {rec['seed']}: test acc {rec['test_acc']:.4f}, "
                      f"train-test gap {rec['gap']:+.4f} ({rec['seconds']:.1f} s)\n")
            out.flush()
        status = "FINISHED"
    finally:
        if status != "FINISHED":  # runs cut off mid-training: ended KILLED, continued by the same command
            spool.wait_writers_gone(spool_dir)
            close_abandoned(spool_dir, spool.end_status("FAIL", interrupted=True),
                            {spool.STATE_TAG: "FAIL", "failure_reason": "interrupted"})
        missing = stop_tracker(tracker, status, out)
        print_tracking_status(cfg.study_name, plan.tracking_uri, missing, tracker.health.last_error, out)
    return [done[(a.name, k)] for a in plan.arms for k in range(plan.seeds)]


def summarize_and_report(cfg: SweepConfig, plan: ComparePlan, outcome: CompareOutcome, out: TextIO) -> None:
    """Paired statistics on the test split (Holm over every comparison), report.md and its figures."""
    from sweep.analysis.arms import summarize_arms
    from sweep.reporting.compare_report import headline, write_compare_report

    outcome.summary = summarize_arms(outcome.records, [a.name for a in plan.arms], plan.strengths)
    setup = {"dataset": cfg.dataset, "size": plan.size, "budget": plan.budget, "seeds": plan.seeds,
             "base": plan.base.to_flat(), "fixed": sorted(plan.fixed), "subsets": cfg.grid.subsets}
    outcome.report = write_compare_report(outcome.summary, outcome.records, setup, plan.report_dir)
    out.write(f"{plan.name}: {headline(outcome.summary)}\n{plan.name}: report {outcome.report}\n")
    out.flush()
