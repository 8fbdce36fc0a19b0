"""Seed-paired re-training of one configuration over keep_prob x training-set size (x more factors).

Paired design: for seed k, every keep_prob uses the same weight init, the same
minibatch order and the same nested training subset (the first n rows of one
seeded permutation); only the dropout masks differ. So a difference between
keep_prob 0.5 and 1.0 at seed k is dropout's effect, not init luck.

Which permutation: with ``subsets = "fixed"`` (the default) every seed uses the
sweep's data seed, so all seeds train on the same rows and the intervals say
how dropout does on those rows; with ``"per-seed"`` seed k draws its own
permutation (`subset_seed`), so the intervals also cover which rows were drawn.

More factors (`sweep.factors`, ``--vary normalization=none,batchnorm``) multiply
the grid: each level of each factor is the same paired design (seed k keeps its
init seed, batch order and subset at every level and keep_prob).

Each cell (size, keep_prob, seed, factor levels) is one MLflow child run of the ablation's
parent run, trained by the same `sweep.objective.train` loop as a sweep trial
and run on the same joblib workers. A rerun skips cells that finished (or
diverged, which is deterministic); cells that were interrupted run again.

Exactly once, like a sweep's trials: a cell's spool files, not MLflow, say
whether it is done, and a worker trains a cell only while it holds the cell's
claim in the spool folder (sweep.cell_claims). So a second `sweep ablate` of
the same grid waits for the cells the first one trains instead of training
them again, and a cell a SIGKILL cut off continues in its own spool file:
MLflow keeps one run for it, ended when the rerun ends the cell.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sweep.config import AblationConfig, SweepConfig, TrainParams
from sweep.factors import (
    FACTOR_TAG_PREFIX,
    MAX_GRID_CELLS,
    Levels,
    cell_levels,
    grid_size,
    level_text,
    level_value,
    vary_text,
)
from sweep.display import NOTE_TAG, ablation_note, readable_params, run_note
from sweep.mlflow_store import summary_tags
from sweep.objective import RunSeeds, train
from sweep.cell_claims import close_abandoned, settled_end, wait_for_claim
from sweep.spool import STATE_TAG, RunRecorder, end_status

# Ablation seeds live apart from trial seeds (trial k uses index k).
ABLATION_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class Cell:
    """One run of the grid: training-set size, keep_prob, seed k and the level of every varied factor."""

    size: int
    keep_prob: float
    seed: int  # 0..K-1
    levels: Levels = ()

    @property
    def run_name(self) -> str:
        """``cell-n500-k0.5-s0``, plus ``@normalization=batchnorm,...`` for the varied factors."""
        name = f"cell-n{self.size}-k{self.keep_prob:g}-s{self.seed}"
        return name + "@" + ",".join(f"{n}={v}" for n, v in self.levels) if self.levels else name

    def train_params(self, base: TrainParams) -> TrainParams:
        """`base` with this cell's keep_prob and factor levels."""
        return replace(base, keep_prob=self.keep_prob, **{n: level_value(n, v) for n, v in self.levels})


def grid_cells(grid: AblationConfig, sizes: tuple[int, ...]) -> list[Cell]:
    """Every cell of the grid, in training order: size, then factor levels, then seed, then keep_prob.

    Cells of one (size, levels, seed) are adjacent, so an interrupted ablation has
    as many complete pairs as possible.
    """
    combos: list[Levels] = [()]
    for name, values in grid.vary:
        combos = [(*c, (name, level_text(name, v))) for c in combos for v in values]
    combos = [tuple(sorted(c)) for c in combos]
    return [Cell(n, k, s, lv) for n in sizes for lv in combos for s in range(grid.seeds) for k in grid.keep_probs]


def check_grid_size(grid: AblationConfig, sizes: tuple[int, ...], yes: bool) -> int:
    """Number of cells; refuses a grid over MAX_GRID_CELLS unless `yes` (nothing is trained then).

    Raises:
        ValueError: naming how the grid is made up and the flag that allows it.
    """
    total, how = grid_size(len(grid.keep_probs), len(sizes), grid.vary, grid.seeds)
    if total > MAX_GRID_CELLS and not yes:
        raise ValueError(f"the ablation grid has {total} cells ({how}), more than {MAX_GRID_CELLS} training runs: "
                         "pass --yes to run them all, or give fewer values")
    return total


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to train one cell (picklable)."""

    cell: Cell
    params: TrainParams
    dataset: str
    data_dir: str | None
    num_val: int | None
    data_seed: int
    base_seed: int
    spool_dir: Path  # the attempt's file is chosen under the cell's claim (sweep.cell_claims)
    ablation: str


def subset_seed(data_seed: int, k: int, subsets: str) -> int:
    """Seed of the training-subset permutation of ablation seed k (every keep_prob and size share it)."""
    if subsets == "fixed":
        return data_seed
    # One 32-bit draw of a SeedSequence: independent of data_seed's neighbours, stable across versions.
    return int(np.random.SeedSequence([data_seed, ABLATION_SEED_OFFSET + k]).generate_state(1)[0])


def cell_seeds(base_seed: int, k: int) -> RunSeeds:
    """Init/order seeds of seed k: shared by every keep_prob and size (the pairing)."""
    return RunSeeds.derive(base_seed, ABLATION_SEED_OFFSET + k)


def run_cell(task: CellTask) -> dict[str, Any]:
    """Worker task: train one cell under its claim, recording it in its spool file.

    Returns status BUSY (and the holder) when another process holds the cell's
    claim; the cell's recorded outcome, untrained, when its spool files settle it.
    """
    from sweep.cell_claims import claim_cell

    c = task.cell
    with claim_cell(task.spool_dir, c.run_name) as claim:
        if isinstance(claim, str):
            return {"cell": c, "status": "BUSY", "holder": claim}
        if claim.settled is not None:
            return _settled_result(c, claim.settled)
        assert claim.path is not None
        return _train_cell(task, claim.path)


def _settled_result(c: Cell, end: dict[str, Any]) -> dict[str, Any]:
    """The result of a cell from its spool end record (trained by another process or an earlier run)."""
    from sweep.mlflow_store import summary_key

    tags = end.get("tags", {})
    best = tags.get(summary_key("best_val_acc"))
    return {"cell": c, "status": end.get("status", "FINISHED"), "best_val_acc": float(best) if best else float("nan"),
            "reason": tags.get("failure_reason"), "settled": True}


def _train_cell(task: CellTask, spool_path: Path) -> dict[str, Any]:
    from sweep.data import load_dataset

    c = task.cell
    data = load_dataset(task.dataset, data_dir=task.data_dir, num_train=c.size, num_val=task.num_val, seed=task.data_seed)
    params = c.train_params(task.params)
    seeds = cell_seeds(task.base_seed, c.seed)
    tags = {
        "sweep.kind": "cell", "sweep.ablation": task.ablation, "ablation.size": c.size,
        "ablation.keep_prob": c.keep_prob, "ablation.seed": c.seed,
        "sweep.init_seed": seeds.init, "sweep.order_seed": seeds.order, "ablation.data_seed": task.data_seed,
        **{FACTOR_TAG_PREFIX + n: v for n, v in c.levels},
    }
    with RunRecorder(spool_path) as rec:
        shown = readable_params({**params.to_flat(), "num_train": c.size})
        rec.start(c.run_name, f"ablation:{task.ablation}", shown, tags)
        try:
            result = train(params, data, seeds, recorder=rec)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            rec.end(end_status("FAIL", interrupted=interrupted),
                    {STATE_TAG: "FAIL", "failure_reason": "interrupted" if interrupted else repr(exc)})
            raise
        end_tags = {STATE_TAG: result.state, NOTE_TAG: f"{c.size} training rows, seed {c.seed}; "
                    + run_note(shown, result.state, result.summary, failure_reason=result.failure_reason)}
        if result.failure_reason:
            end_tags["failure_reason"] = result.failure_reason
        rec.end(end_status(result.state), {**end_tags, **summary_tags(result.summary)})
    return {"cell": c, "status": result.status, "best_val_acc": result.best_val_acc, "reason": result.failure_reason}


def ablation_name(params: TrainParams, grid: AblationConfig, dataset: str) -> str:
    """Stable name for (config, grid): the same command finds its parent run again."""
    fields: dict[str, Any] = {"p": params.to_flat(), "k": list(grid.keep_probs),
                              "n": list(grid.resolved_sizes(dataset)), "s": grid.seeds, "d": dataset}
    if grid.subsets != "fixed":  # absent for "fixed": ablations made before the option keep their names
        fields["u"] = grid.subsets
    if grid.vary:  # absent without --vary, for the same reason; sorted: the same cells whatever the order given
        fields["v"] = {n: sorted(level_text(n, v) for v in values) for n, values in grid.vary}
    key = json.dumps(fields, sort_keys=True)
    return "ablation-" + hashlib.sha1(key.encode()).hexdigest()[:8]


def base_params(cfg: SweepConfig, out: TextIO) -> TrainParams:
    """The configuration to ablate: explicit params, else the study's best trial."""
    grid = cfg.ablation or AblationConfig()
    if grid.params is not None:
        return grid.base_params()
    from sweep.runner import SweepPaths
    from sweep.study import make_storage, open_study

    paths = SweepPaths.for_study(Path.cwd(), cfg.study_name)
    journal = Path(cfg.storage.removeprefix("journal:")) if cfg.storage and cfg.storage.startswith("journal:") \
        else paths.journal if cfg.storage is None else None
    try:
        if journal is not None and not journal.exists():  # opening it would create an empty journal
            raise KeyError(f"no Optuna journal {journal}")
        study = open_study(cfg, make_storage(cfg.storage, paths.journal), create=False)
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
    untracked: Any = None  # sweep.outage.Backlog of what MLflow lacks; None: all there
    trained: int = 0  # cells this command trained (not those done before, nor by another process)
    estimated_seconds: float | None = None  # the wall time it estimated before training (None: nothing to train)
    seconds: float = 0.0  # the wall time it took, from the estimate to the end


def study_timing(cfg: SweepConfig, workdir: Path) -> Any:
    """The best trial's measured epoch (sweep.cost.Measured), or None (explicit params, nothing recorded).

    From the trial's `timing` user attr, else the per-epoch `epoch_seconds` in its
    spool file (sweeps from before the attr existed, on this machine).
    """
    import statistics

    from sweep.cost import Measured
    from sweep.runner import SweepPaths
    from sweep.spool import read_state
    from sweep.study import make_storage, open_study, spool_path

    if (cfg.ablation or AblationConfig()).params is not None:
        return None  # not the configuration the study measured
    paths = SweepPaths.for_study(workdir, cfg.study_name)
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
    from sweep.data import load_dataset  # the sweep's own cached arrays: how many rows the trial had

    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed)
    return Measured(float(statistics.median(secs)), params, int(data["X_train"].shape[0]), int(data["X_val"].shape[0]),
                    int(data["X_train"].shape[1]), source)


def _estimate(cfg: SweepConfig, params: TrainParams, todo: list[Cell], data_seed: int, workdir: Path,
              jobs: int, threads: int) -> Any:
    """The cost of `todo` (sweep.cost.Estimate), from the study's measurement or a one-epoch timing run."""
    from sweep.cost import estimate_cost, measure_epoch
    from sweep.data import load_dataset

    measured = study_timing(cfg, workdir)
    if measured is None:
        n = max(c.size for c in todo)
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, num_train=n, num_val=cfg.num_val, seed=data_seed)
        measured = measure_epoch(params, data, threads, f"a one-epoch timing run on {data['X_train'].shape[0]} rows")
    return estimate_cost(todo, lambda c: (c.train_params(params), c.size), measured,
                         workers=jobs, threads=threads)


def run_ablation(cfg: SweepConfig, *, name: str | None = None, out: TextIO = sys.stdout,
                 workdir: Path | None = None, yes: bool = False, stdin: TextIO | None = None) -> AblationOutcome:
    """Train every missing cell of the ablation grid; returns where it is logged.

    `yes` (``--yes``): run a grid of more than MAX_GRID_CELLS cells without
    refusing it, and one estimated at over 10 minutes of wall time without
    asking. Without it the estimate (sweep.cost, printed first) above 10
    minutes starts only with a 'y' typed on a terminal (`stdin`), else raises
    sweep.cost.NotConfirmed with nothing trained.
    """
    from joblib import Parallel, delayed, parallel_config
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from sweep.data import load_dataset
    from sweep.config import available_cores
    from sweep.progress import print_tracking_status
    from sweep.recovery import say_to, stop_tracker
    from sweep.runner import SweepPaths, _death_detail, _raise_terminated
    from sweep.cost import confirm, describe
    from sweep.mlflow_store import child_runs, find_parent_run, make_client, default_tracking_uri
    from sweep.tracking import ParentSpec, Tracker

    grid = cfg.ablation or AblationConfig()
    sizes = grid.resolved_sizes(cfg.dataset)
    cells = grid_cells(grid, sizes)
    check_grid_size(grid, sizes, yes)
    params = base_params(cfg, out)
    name = name or ablation_name(params, grid, cfg.dataset)
    study = cfg.study_name
    paths = SweepPaths.for_study(workdir or Path.cwd(), study)
    spool_dir = paths.state_dir / name / "spool"
    tracking_uri = cfg.tracking_uri or default_tracking_uri(paths.workdir)
    jobs = cfg.resolved_jobs()
    threads = max(1, available_cores() // jobs)

    # Nested subsets: write each (size, subset seed) cache once before workers open it
    # (a size that is the whole pool is one entry whatever the seed).
    data_seeds = [subset_seed(cfg.seed, k, grid.subsets) for k in range(grid.seeds)]
    for n in sizes:
        for data_seed in dict.fromkeys(data_seeds):
            load_dataset(cfg.dataset, data_dir=cfg.data_dir, num_train=n, num_val=cfg.num_val, seed=data_seed)

    parent = ParentSpec(
        f"ablation:{name}", name,
        params={**readable_params(params.to_flat()), "keep_probs": ",".join(f"{k:g}" for k in grid.keep_probs),
                "sizes": ",".join(map(str, sizes)), "seeds": grid.seeds, "dataset": cfg.dataset,
                "subsets": grid.subsets, **({"vary": vary_text(grid.vary)} if grid.vary else {})},
        tags={"sweep.kind": "ablation", "optuna.study": study,
              NOTE_TAG: ablation_note(name, study, ",".join(f"{k:g}" for k in grid.keep_probs),
                                      ",".join(map(str, sizes)), grid.seeds)},
    )
    # Cells already done, read before anything is started (the estimate and its confirmation come first).
    client = make_client(tracking_uri)
    exp = client.get_experiment_by_name(study)
    parent_id = find_parent_run(client, exp.experiment_id, parent.key) if exp is not None else None
    done = _finished_cells(child_runs(client, exp.experiment_id, parent_id)) if parent_id else set()
    # The spool folder is ahead of MLflow (a killed run's last ends may never have been sent).
    done |= {c for c in cells if settled_end(spool_dir, c.run_name) is not None}
    todo = [c for c in cells if c not in done]
    varied = "".join(f", {n} {[level_text(n, v) for v in values]}" for n, values in grid.vary)
    out.write(f"{name}: {len(cells) - len(todo)}/{len(cells)} cells done, training {len(todo)} "
              f"on {jobs} worker(s) (sizes {list(sizes)}, keep_prob {list(grid.keep_probs)}{varied}, {grid.seeds} seeds, "
              f"{'one training subset per seed' if grid.subsets == 'per-seed' else 'the same training subset for every seed'})\n")
    est = None
    if todo:
        est = _estimate(cfg, params, todo, data_seeds[0], paths.workdir, jobs, threads)
        out.write(f"{name}: {describe(est)}\n")
        out.flush()
        confirm(est, yes=yes, stdin=stdin or sys.stdin, out=out)
    started = time.monotonic()
    trained = 0
    tracker = Tracker(tracking_uri, study, spool_dir, [parent], say=say_to(out)).start()

    def task(c: Cell) -> CellTask:
        return CellTask(c, params, cfg.dataset, cfg.data_dir, cfg.num_val, data_seeds[c.seed], cfg.seed,
                        spool_dir, name)

    old_term = signal.signal(signal.SIGTERM, _raise_terminated)
    interrupted = False
    finished = len(cells) - len(todo)
    deaths = 0
    try:
        while todo and deaths < 5:
            # A copy: joblib draws tasks from this generator while results arrive, and the
            # loop below removes cells from `todo` (iterating `todo` itself skipped every
            # other cell with one worker).
            batch = list(todo)
            busy: dict[Cell, str] = {}
            try:
                with parallel_config(backend="loky", inner_max_num_threads=threads):
                    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(delayed(run_cell)(task(c)) for c in batch)
                    for res in results:
                        if res["status"] == "BUSY":
                            busy[res["cell"]] = res["holder"]
                            continue
                        finished += 1
                        trained += not res.get("settled")
                        todo.remove(res["cell"])
                        extra = f" val_acc={res['best_val_acc']:.4f}" if res["status"] == "FINISHED" else f" ({res['reason']})"
                        by = " (trained by another process or an earlier run)" if res.get("settled") else ""
                        out.write(f"[{finished:>3}/{len(cells)}] {res['cell'].run_name} {res['status'].lower()}{extra}{by}\n")
                        out.flush()
            except TerminatedWorkerError as exc:
                deaths += 1
                _close_dead_spools(spool_dir, "worker process died")
                out.write(f"a worker process died{_death_detail(exc)}; its cells run again\n")
            if busy:  # another `sweep ablate` of this grid trains them: wait for it, then take its results
                holders = ", ".join(sorted({_process_text(h) for h in busy.values()}))
                out.write(f"{name}: waiting for {len(busy)} cell(s) another `sweep ablate` of this grid is "
                          f"training ({holders}); a cell is taken over if its process dies\n")
                out.flush()
                for c in busy:
                    wait_for_claim(spool_dir, c.run_name)
    except KeyboardInterrupt:
        interrupted = True
        out.write("\nstopping; rerun the same command to train the remaining cells\n")
        _close_dead_spools(spool_dir, "interrupted", interrupted=True)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        missing = stop_tracker(tracker, "KILLED" if interrupted else "FAILED" if todo else "FINISHED", out)
    print_tracking_status(study, tracking_uri, missing, tracker.health.last_error, out)
    return AblationOutcome(name, tracker.experiment_id, tracker.parent_run_ids.get(parent.key),
                           len(cells), len(cells) - len(todo), interrupted,
                           untracked=None if missing.empty else missing, trained=trained,
                           estimated_seconds=est.wall_seconds if est is not None else None,
                           seconds=time.monotonic() - started)


def _process_text(holder: str) -> str:
    """"host:pid:start" (a claim's holder, sweep.spool.this_process) as "pid 123 on host"."""
    host, _, rest = holder.partition(":")
    return f"pid {rest.partition(':')[0]} on {host}" if rest else holder


def _finished_cells(runs: list[Any]) -> set[Cell]:
    """Cells that need no rerun: finished, or failed by divergence (deterministic)."""
    from sweep.mlflow_store import run_state

    out: set[Cell] = set()
    for r in runs:
        t = r.data.tags
        state = run_state(r)
        if state == "COMPLETE" or (state == "FAIL" and t.get("failure_reason", "").startswith("diverged")):
            out.add(Cell(int(t["ablation.size"]), float(t["ablation.keep_prob"]), int(t["ablation.seed"]),
                         cell_levels(t)))
    return out


def _close_dead_spools(spool_dir: Path, reason: str, *, interrupted: bool = False) -> None:
    """End the runs of cells whose worker is gone: FAILED (a dead worker), KILLED after an interrupt."""
    from sweep import spool

    spool.wait_writers_gone(spool_dir)
    close_abandoned(spool_dir, end_status("FAIL", interrupted=interrupted), {STATE_TAG: "FAIL", "failure_reason": reason})
