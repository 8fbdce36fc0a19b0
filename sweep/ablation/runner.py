"""Seed-paired re-training of one configuration over keep_prob x training-set size (x more factors).

Paired design: for seed k, every keep_prob uses the same weight init, the same
minibatch order and the same nested training subset (the first n rows of one
seeded permutation); only the dropout masks differ. So a difference between
keep_prob 0.5 and 1.0 at seed k is dropout's effect, not init luck.

Which permutation: with ``subsets = "fixed"`` (the default) every seed uses the
sweep's data seed, so all seeds train on the same rows and the intervals say
how dropout does on those rows; with ``"per-seed"`` seed k draws its own
permutation (`subset_seed`), so the intervals also cover which rows were drawn.

More factors (`sweep.config.factors`, ``--vary normalization=none,batchnorm``) multiply
the grid: each level of each factor is the same paired design (seed k keeps its
init seed, batch order and subset at every level and keep_prob).

Each cell (size, keep_prob, seed, factor levels) is one MLflow child run of the ablation's
parent run, trained by the same `sweep.search.objective.train` loop as a sweep trial
and run on the same joblib workers. A rerun skips cells that finished (or
diverged, which is deterministic); cells that were interrupted run again.

Exactly once, like a sweep's trials: a cell's spool files, not MLflow, say
whether it is done, and a worker trains a cell only while it holds the cell's
claim in the spool folder (sweep.ablation.claims). So a second `sweep ablate` of
the same grid waits for the cells the first one trains instead of training
them again, and a cell a SIGKILL cut off continues in its own spool file:
MLflow keeps one run for it, ended when the rerun ends the cell.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sweep.ablation.claims import close_abandoned, settled_end, wait_for_claim
from sweep.ablation.cost import confirm, describe
from sweep.ablation.grid import (
    Cell,
    CellTask,
    ablation_name,
    check_grid_size,
    finished_cells,
    grid_cells,
    run_cell,
    subset_seed,
)
from sweep.ablation.workers import CellWorkers, adopt_events, cell_workers
from sweep.config.display import NOTE_TAG, ablation_note, mlflow_params, readable_params
from sweep.config.factors import level_text, vary_text
from sweep.config.sweep_file import (
    AblationConfig,
    SweepConfig,
    TrainParams,
)
from sweep.own_net import model_tags
from sweep.paths import SweepPaths, paths_of_config
from sweep.search.pool import (
    MAX_ROUNDS,
    cluster_threads,
    death_detail,
    run_unordered,
    sigterm_as_interrupt,
    worker_death_errors,
)
from sweep.search.progress import print_tracking_status
from sweep.search.recovery import say_to, stop_tracker
from sweep.tracking.spool import STATE_TAG, end_status
from sweep.tracking.store import (
    child_runs,
    default_tracking_uri,
    find_parent_run,
    make_client,
)
from sweep.tracking.tracker import ParentSpec, Tracker

if TYPE_CHECKING:
    from sweep.tracking.outage import Backlog


def base_params(cfg: SweepConfig, out: TextIO) -> TrainParams:
    """The configuration to ablate: explicit params, else the study's best trial."""
    grid = cfg.grid
    if grid.params is not None:
        return grid.base_params()
    from sweep.paths import SweepPaths, journal_file
    from sweep.search.model_record import check_model
    from sweep.search.study import make_storage, open_study

    paths = SweepPaths.for_study(Path.cwd(), cfg.study_name)
    journal = journal_file(cfg.storage, paths.journal)
    try:
        if journal is not None and not journal.exists():  # opening it would create an empty journal
            raise KeyError(f"no Optuna journal {journal}")
        study = open_study(cfg, make_storage(cfg.storage, paths.journal), create=False)
        check_model(study, cfg.model, record=False)  # the best trial of another net's study is not this net's
        best = study.best_trial
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"no configuration to ablate: study {cfg.study_name!r} has no completed trial ({exc}); "
            "run `sweep run` first, or give explicit params in [ablation.params] of a sweep file"
        ) from None
    out.write(f"ablating the best trial {best.number} of study {study.study_name!r} (val_acc {best.value:.4f})\n")
    return grid.base_params(cfg.space.params_from_trial(best.params))


@dataclass
class AblationOutcome:
    name: str
    experiment_id: str | None
    parent_run_id: str | None
    cells_total: int
    cells_done: int
    interrupted: bool
    untracked: Backlog | None = None  # what MLflow lacks; None: all there
    fault: str = ""  # why cells were left untrained (workers kept dying); "" when all were trained
    trained: int = 0  # cells this command trained (not those done before, nor by another process)
    estimated_seconds: float | None = None  # the wall time it estimated before training (None: nothing to train)
    seconds: float = 0.0  # the wall time it took, from the estimate to the end
    decisions: dict[Any, Any] | None = None  # --until-decided: comparison -> sweep.analysis.sequential.SequentialComparison


def study_timing(cfg: SweepConfig, workdir: Path) -> Any:
    """The best trial's measured epoch (sweep.ablation.cost.Measured), or None (explicit params, nothing recorded).

    From the trial's `timing` user attr, else the per-epoch `epoch_seconds` in its
    spool file (sweeps from before the attr existed, on this machine).
    """
    import statistics

    from sweep.ablation.cost import Measured
    from sweep.paths import paths_of_config
    from sweep.search.study import make_storage, open_study, spool_path
    from sweep.tracking.spool import read_state

    if cfg.grid.params is not None:
        return None  # not the configuration the study measured
    paths = paths_of_config(workdir, cfg)
    try:
        best = open_study(cfg, make_storage(cfg.storage, paths.journal), create=False).best_trial
    except (KeyError, ValueError):
        return None
    params = cfg.space.params_from_trial(best.params)
    source = f"trial {best.number} of study {cfg.study_name!r}"
    timing = best.user_attrs.get("timing")
    if timing:
        return Measured(float(timing["epoch_seconds"]), params, int(timing["num_train"]), int(timing["num_val"]),
                        int(timing["input_dim"]), source, timing.get("threads"))
    path = spool_path(paths.spool_dir, best.number)
    secs = [e["metrics"]["epoch_seconds"] for e in read_state(path).epochs] if path.exists() else []
    if not secs:
        return None

    data = cfg.data.load()
    return Measured(float(statistics.median(secs)), params, int(data["X_train"].shape[0]), int(data["X_val"].shape[0]),
                    int(data["X_train"].shape[1]), source)


def _estimate(cfg: SweepConfig, params: TrainParams, todo: list[Cell], data_seed: int, workdir: Path,
              jobs: int, threads: int) -> Any:
    """The cost of `todo` (sweep.ablation.cost.Estimate), from the study's measurement or a one-epoch timing run."""
    from sweep.ablation.cost import estimate_cost, measure_epoch

    measured = study_timing(cfg, workdir)
    if measured is None:
        n = max(c.size for c in todo)
        data = cfg.data.subset(n, data_seed).load()
        measured = measure_epoch(params, data, threads, f"a one-epoch timing run on {data['X_train'].shape[0]} rows",
                                 model=cfg.model)
    return estimate_cost(todo, lambda c: (c.train_params(params), c.size), measured,
                         workers=jobs, threads=threads)


def run_ablation(cfg: SweepConfig, *, name: str | None = None, out: TextIO = sys.stdout,
                 workdir: Path | None = None, yes: bool = False, stdin: TextIO | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 dask_scheduler: str | None = None) -> AblationOutcome:
    """Train every missing cell of the ablation grid; returns where it is logged.

    `yes` (``--yes``): run a grid of more than MAX_GRID_CELLS cells without
    refusing it, and one estimated at over 10 minutes of wall time without
    asking. Without it the estimate (sweep.ablation.cost, printed first) above 10
    minutes starts only with a 'y' typed on a terminal (`stdin`), else raises
    sweep.ablation.cost.NotConfirmed with nothing trained. `on_progress(done, total)`
    is called after every cell (a notebook's bar). `dask_scheduler`: the cells run on that
    Dask cluster's workers (sweep.ablation.workers).
    """
    from sweep.check.contract import checked_config

    cfg, model_line = checked_config(cfg)  # your own net (--model): its contract, before anything is created
    if dask_scheduler:
        cluster_threads(dask_scheduler)  # a wrong address: one line before anything is created
    if model_line:
        out.write(model_line + "\n")
    if cfg.grid.until is not None:  # --until-decided: seeds added in rounds (its own module)
        from sweep.ablation.sequential import run_until_decided

        return run_until_decided(cfg, name=name, out=out, workdir=workdir or Path.cwd(), yes=yes,
                                 stdin=stdin or sys.stdin, on_progress=on_progress, dask_scheduler=dask_scheduler)
    plan = plan_ablation(cfg, name, workdir or Path.cwd(), yes, out)
    prepare_subsets(cfg, plan)  # each (size, subset seed) cache written once, before workers open it
    todo = cells_to_train(plan)
    workers = cell_workers(cfg, len(todo), dask_scheduler)
    estimated = announce_and_confirm(cfg, plan, todo, workers, yes, stdin or sys.stdin, out)
    started = time.monotonic()
    tracker = Tracker(plan.tracking_uri, cfg.study_name, plan.spool_dir, [plan.parent], say=say_to(out)).start()
    with sigterm_as_interrupt():
        ended = train_cells(cfg, plan, todo, workers, out, on_progress)
    outcome = end_ablation(cfg, plan, tracker, todo, ended, out)
    outcome.estimated_seconds, outcome.seconds = estimated, time.monotonic() - started
    return outcome


@dataclass(frozen=True)
class AblationPlan:
    """What one `sweep ablate` trains: the configuration, the grid's cells, where it is logged."""

    name: str
    study: str
    params: TrainParams
    grid: AblationConfig
    sizes: tuple[int, ...]
    cells: list[Cell]
    data_seeds: list[int]  # the training subset's seed for seed index k
    paths: SweepPaths
    spool_dir: Path
    tracking_uri: str
    parent: ParentSpec


def plan_ablation(cfg: SweepConfig, name: str | None, workdir: Path, yes: bool, out: TextIO) -> AblationPlan:
    """The grid (refused when too large without `yes`), the configuration it re-trains, its parent run."""
    grid = cfg.grid
    sizes = grid.resolved_sizes(cfg.dataset)
    cells = grid_cells(grid, sizes)
    check_grid_size(grid, sizes, yes)
    params = base_params(cfg, out)
    name = name or ablation_name(params, grid, cfg.dataset, cfg.model)
    paths = paths_of_config(workdir, cfg)  # the study's own folder (sweep.paths)
    keeps, sizes_text = ",".join(f"{k:g}" for k in grid.keep_probs), ",".join(map(str, sizes))
    parent = ParentSpec(
        f"ablation:{name}", name,
        # Not the base configuration's keep_prob: the ablation varies it (keep_probs), and a param
        # keep_prob would fill the runs table's keep_prob column for the parent. It is a tag instead.
        params={**mlflow_params({k: v for k, v in params.to_flat().items() if k != "keep_prob"}),
                "keep_probs": keeps, "sizes": sizes_text, "seeds": grid.seeds,
                "dataset": cfg.dataset, "subsets": grid.subsets, **({"vary": vary_text(grid.vary)} if grid.vary else {})},
        tags={"sweep.kind": "ablation", "optuna.study": cfg.study_name, **paths.identity_tags, **model_tags(cfg.model),
              BASE_KEEP_PROB_TAG: readable_params({"keep_prob": params.keep_prob})["keep_prob"],
              NOTE_TAG: ablation_note(name, cfg.study_name, keeps, sizes_text, grid.seeds)},
    )
    return AblationPlan(name, cfg.study_name, params, grid, sizes, cells,
                        [subset_seed(cfg.seed, k, grid.subsets) for k in range(grid.seeds)], paths,
                        paths.state_dir / name / "spool", cfg.tracking_uri or default_tracking_uri(paths.workdir),
                        parent)


# The keep_prob of the configuration an ablation re-trains (the best trial's, or [ablation.params]').
BASE_KEEP_PROB_TAG = "base_keep_prob"


def prepare_subsets(cfg: SweepConfig, plan: AblationPlan) -> None:
    """Nested subsets: each (size, subset seed) cache once (a size that is the whole pool is one entry)."""
    for n in plan.sizes:
        for data_seed in dict.fromkeys(plan.data_seeds):
            cfg.data.subset(n, data_seed).load()


def cells_to_train(plan: AblationPlan) -> list[Cell]:
    """The cells neither MLflow nor the spool folder has as done (read before anything starts)."""
    client = make_client(plan.tracking_uri)
    exp = client.get_experiment_by_name(plan.study)
    done: set[Cell] = set()
    if exp is not None:
        parent_id = find_parent_run(client, exp.experiment_id, plan.parent.key, plan.paths.key)
        done = finished_cells(child_runs(client, exp.experiment_id, parent_id)) if parent_id else set()
    # The spool folder is ahead of MLflow (a killed run's last ends may never have been sent).
    done |= {c for c in plan.cells if settled_end(plan.spool_dir, c.run_name) is not None}
    return [c for c in plan.cells if c not in done]


def announce_and_confirm(cfg: SweepConfig, plan: AblationPlan, todo: list[Cell], workers: CellWorkers,
                         yes: bool, stdin: TextIO, out: TextIO) -> float | None:
    """The start line and the cost estimate; above 10 minutes it asks (or needs `yes`).
    Returns the estimated wall time (None: nothing to train)."""
    grid = plan.grid
    varied = "".join(f", {n} {[level_text(n, v) for v in values]}" for n, values in grid.vary)
    subsets = "one training subset per seed" if grid.subsets == "per-seed" else "the same training subset for every seed"
    out.write(f"{plan.name}: {len(plan.cells) - len(todo)}/{len(plan.cells)} cells done, training {len(todo)} "
              f"{workers.where} (sizes {list(plan.sizes)}, keep_prob {list(grid.keep_probs)}{varied}, "
              f"{grid.seeds} seeds, {subsets})\n")
    if todo:
        est = _estimate(cfg, plan.params, todo, plan.data_seeds[0], plan.paths.workdir, workers.in_flight,
                        workers.threads)
        out.write(f"{plan.name}: {describe(est)}\n")
        out.flush()
        confirm(est, yes=yes, stdin=stdin, out=out)
        return float(est.wall_seconds)
    return None


@dataclass
class CellsEnd:
    """How the rounds of cells ended."""

    interrupted: bool = False
    rounds: int = 0
    trained: int = 0  # cells this process trained (not settled by another process or an earlier run)


def train_cells(cfg: SweepConfig, plan: AblationPlan, todo: list[Cell], workers: CellWorkers, out: TextIO,
                on_progress: Callable[[int, int], None] | None) -> CellsEnd:
    """Rounds of the missing cells on the pool until none is left (at most MAX_ROUNDS after
    workers died); `todo` keeps what is still untrained. Ctrl-C/SIGTERM closes the cut-off runs."""
    total, finished = len(plan.cells), len(plan.cells) - len(todo)
    ended = CellsEnd()

    def task(c: Cell) -> CellTask:
        return CellTask(c, plan.params, cfg.data.subset(c.size, plan.data_seeds[c.seed]), cfg.seed,
                        plan.spool_dir, plan.name, cfg.model)

    try:
        while todo and ended.rounds < MAX_ROUNDS:
            ended.rounds += 1
            # A copy: joblib draws tasks from this generator while results arrive, and the
            # loop below removes cells from `todo` (iterating `todo` itself skipped every
            # other cell with one worker).
            batch = list(todo)
            busy: dict[Cell, str] = {}
            try:
                for res in run_unordered(run_cell, (task(c) for c in batch), jobs=workers.jobs,
                                         threads=workers.threads, dask_scheduler=workers.dask_scheduler):
                    adopt_events(plan.spool_dir, res)
                    if res["status"] == "BUSY":
                        busy[res["cell"]] = res["holder"]
                        continue
                    finished += 1
                    ended.trained += not res.get("settled")
                    todo.remove(res["cell"])
                    _say_cell(res, finished, total, out)
                    if on_progress is not None:
                        on_progress(finished, total)
            except worker_death_errors(dask=workers.dask_scheduler is not None) as exc:
                _close_dead_spools(plan.spool_dir, "worker process died")
                out.write(f"a worker process died{death_detail(exc)}; its cells run again\n")
            if busy:  # another `sweep ablate` of this grid trains them: wait for it, then take its results
                holders = ", ".join(sorted({_process_text(h) for h in busy.values()}))
                out.write(f"{plan.name}: waiting for {len(busy)} cell(s) another `sweep ablate` of this grid is "
                          f"training ({holders}); a cell is taken over if its process dies\n")
                out.flush()
                for c in busy:
                    wait_for_claim(plan.spool_dir, c.run_name)
    except KeyboardInterrupt:
        ended.interrupted = True
        out.write("\nstopping; rerun the same command to train the remaining cells\n")
        _close_dead_spools(plan.spool_dir, "interrupted", interrupted=True)
    return ended


def _say_cell(res: dict[str, Any], finished: int, total: int, out: TextIO) -> None:
    extra = f" val_acc={res['best_val_acc']:.4f}" if res["status"] == "FINISHED" else f" ({res['reason']})"
    by = " (trained by another process or an earlier run)" if res.get("settled") else ""
    out.write(f"[{finished:>3}/{total}] {res['cell'].run_name} {res['status'].lower()}{extra}{by}\n")
    out.flush()


def end_ablation(cfg: SweepConfig, plan: AblationPlan, tracker: Tracker, todo: list[Cell], ended: CellsEnd,
                 out: TextIO) -> AblationOutcome:
    """End the parent run (FINISHED, or KILLED/FAILED with cells left) and say what MLflow lacks;
    cells left untrained after every round (workers kept dying) are a fault, said in one line."""
    fault = ""
    if todo and not ended.interrupted:
        fault = (f"{len(todo)} cell(s) still untrained after {ended.rounds} rounds in which workers died; "
                 "run the same command to train them")
        out.write(f"{plan.name}: stopping: {fault}\n")
    status = "KILLED" if ended.interrupted else "FAILED" if todo else "FINISHED"
    missing = stop_tracker(tracker, status, out)
    print_tracking_status(cfg.study_name, plan.tracking_uri, missing, tracker.health.last_error, out)
    return AblationOutcome(plan.name, tracker.experiment_id, tracker.parent_run_ids.get(plan.parent.key),
                           len(plan.cells), len(plan.cells) - len(todo), ended.interrupted,
                           untracked=None if missing.empty else missing, fault=fault, trained=ended.trained)


def _process_text(holder: str) -> str:
    """"host:pid:start" (a claim's holder, sweep.tracking.spool.this_process) as "pid 123 on host"."""
    host, _, rest = holder.partition(":")
    return f"pid {rest.partition(':')[0]} on {host}" if rest else holder


def _close_dead_spools(spool_dir: Path, reason: str, *, interrupted: bool = False) -> None:
    """End the runs of cells whose worker is gone: FAILED (a dead worker), KILLED after an interrupt."""
    from sweep.tracking import spool

    spool.wait_writers_gone(spool_dir)
    close_abandoned(spool_dir, end_status("FAIL", interrupted=interrupted), {STATE_TAG: "FAIL", "failure_reason": reason})
