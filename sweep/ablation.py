"""Seed-paired re-training of one configuration over keep_prob x training-set size.

Paired design: for seed k, every keep_prob uses the same weight init, the same
minibatch order and the same nested training subset (the first n rows of one
seeded permutation); only the dropout masks differ. So a difference between
keep_prob 0.5 and 1.0 at seed k is dropout's effect, not init luck.

Which permutation: with ``subsets = "fixed"`` (the default) every seed uses the
sweep's data seed, so all seeds train on the same rows and the intervals say
how dropout does on those rows; with ``"per-seed"`` seed k draws its own
permutation (`subset_seed`), so the intervals also cover which rows were drawn.

Each cell (size, keep_prob, seed) is one MLflow child run of the ablation's
parent run, trained by the same `sweep.objective.train` loop as a sweep trial
and run on the same joblib workers. A rerun skips cells that finished (or
diverged, which is deterministic); cells that were interrupted run again.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sweep.config import AblationConfig, SweepConfig, TrainParams
from sweep.objective import RunSeeds, train
from sweep.spool import RunRecorder

# Ablation seeds live apart from trial seeds (trial k uses index k).
ABLATION_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class Cell:
    size: int
    keep_prob: float
    seed: int  # 0..K-1

    @property
    def run_name(self) -> str:
        return f"cell-n{self.size}-k{self.keep_prob:g}-s{self.seed}"


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
    spool_path: Path
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
    """Worker task: train one cell, recording it in its spool file."""
    from sweep.data import load_dataset

    c = task.cell
    data = load_dataset(task.dataset, data_dir=task.data_dir, num_train=c.size, num_val=task.num_val, seed=task.data_seed)
    params = replace(task.params, keep_prob=c.keep_prob)
    seeds = cell_seeds(task.base_seed, c.seed)
    tags = {
        "sweep.kind": "cell", "sweep.ablation": task.ablation, "ablation.size": c.size,
        "ablation.keep_prob": c.keep_prob, "ablation.seed": c.seed,
        "sweep.init_seed": seeds.init, "sweep.order_seed": seeds.order, "ablation.data_seed": task.data_seed,
    }
    with RunRecorder(task.spool_path) as rec:
        rec.start(c.run_name, f"ablation:{task.ablation}", {**params.to_flat(), "num_train": c.size}, tags)
        try:
            result = train(params, data, seeds, recorder=rec)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            rec.end("KILLED" if interrupted else "FAILED", {"failure_reason": "interrupted" if interrupted else repr(exc)})
            raise
        end_tags = {"failure_reason": result.failure_reason} if result.failure_reason else {}
        rec.end(result.status, end_tags, result.summary)
    return {"cell": c, "status": result.status, "best_val_acc": result.best_val_acc, "reason": result.failure_reason}


def ablation_name(params: TrainParams, grid: AblationConfig, dataset: str) -> str:
    """Stable name for (config, grid): the same command finds its parent run again."""
    fields: dict[str, Any] = {"p": params.to_flat(), "k": list(grid.keep_probs),
                              "n": list(grid.resolved_sizes(dataset)), "s": grid.seeds, "d": dataset}
    if grid.subsets != "fixed":  # absent for "fixed": ablations made before the option keep their names
        fields["u"] = grid.subsets
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


def run_ablation(cfg: SweepConfig, *, name: str | None = None, out: TextIO = sys.stdout,
                 workdir: Path | None = None) -> AblationOutcome:
    """Train every missing cell of the ablation grid; returns where it is logged."""
    from joblib import Parallel, delayed, parallel_config
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from sweep.data import load_dataset
    from sweep.config import available_cores
    from sweep.progress import print_tracking_status
    from sweep.redact import mask_url
    from sweep.recovery import say_to, stop_tracker
    from sweep.runner import SweepPaths, _death_detail, _raise_terminated
    from sweep.mlflow_store import child_runs, default_tracking_uri
    from sweep.tracking import ParentSpec, Tracker

    grid = cfg.ablation or AblationConfig()
    params = base_params(cfg, out)
    sizes = grid.resolved_sizes(cfg.dataset)
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
        params={**params.to_flat(), "keep_probs": ",".join(f"{k:g}" for k in grid.keep_probs),
                "sizes": ",".join(map(str, sizes)), "seeds": grid.seeds, "dataset": cfg.dataset,
                "subsets": grid.subsets},
        tags={"sweep.kind": "ablation", "optuna.study": study},
    )
    tracker = Tracker(tracking_uri, study, spool_dir, [parent], say=say_to(out)).start()
    # Which cells are done is read from MLflow: it must answer (preflight checked it a moment ago).
    if not tracker.wait_ready(60):
        raise ValueError(f"--tracking-uri: MLflow at {mask_url(tracking_uri)} did not answer within 60 s "
                         f"({tracker.health.last_error}); nothing was trained")
    done = _finished_cells(child_runs(tracker.client, tracker.experiment_id, tracker.parent_run_ids[parent.key]))
    cells = [Cell(n, k, s) for n in sizes for s in range(grid.seeds) for k in grid.keep_probs]
    todo = [c for c in cells if c not in done]
    out.write(f"{name}: {len(cells) - len(todo)}/{len(cells)} cells done, training {len(todo)} "
              f"on {jobs} worker(s) (sizes {list(sizes)}, keep_prob {list(grid.keep_probs)}, {grid.seeds} seeds, "
              f"{'one training subset per seed' if grid.subsets == 'per-seed' else 'the same training subset for every seed'})\n")

    def task(c: Cell) -> CellTask:
        attempt = len(list(spool_dir.glob(f"{c.run_name}-a*.jsonl")))
        return CellTask(c, params, cfg.dataset, cfg.data_dir, cfg.num_val, data_seeds[c.seed], cfg.seed,
                        spool_dir / f"{c.run_name}-a{attempt}.jsonl", name)

    old_term = signal.signal(signal.SIGTERM, _raise_terminated)
    interrupted = False
    finished = len(cells) - len(todo)
    try:
        for _ in range(5):
            if not todo:
                break
            try:
                with parallel_config(backend="loky", inner_max_num_threads=threads):
                    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(delayed(run_cell)(task(c)) for c in todo)
                    for res in results:
                        finished += 1
                        todo.remove(res["cell"])
                        extra = f" val_acc={res['best_val_acc']:.4f}" if res["status"] == "FINISHED" else f" ({res['reason']})"
                        out.write(f"[{finished:>3}/{len(cells)}] {res['cell'].run_name} {res['status'].lower()}{extra}\n")
                        out.flush()
            except TerminatedWorkerError as exc:
                _close_dead_spools(spool_dir, "worker process died")
                out.write(f"a worker process died{_death_detail(exc)}; its cells run again\n")
    except KeyboardInterrupt:
        interrupted = True
        out.write("\nstopping; rerun the same command to train the remaining cells\n")
        _close_dead_spools(spool_dir, "interrupted")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        missing = stop_tracker(tracker, "KILLED" if interrupted or todo else "FINISHED", out)
    print_tracking_status(study, tracking_uri, missing, tracker.health.last_error, out)
    return AblationOutcome(name, tracker.experiment_id, tracker.parent_run_ids.get(parent.key),
                           len(cells), len(cells) - len(todo), interrupted,
                           untracked=None if missing.empty else missing)


def _finished_cells(runs: list[Any]) -> set[Cell]:
    """Cells that need no rerun: finished, or failed by divergence (deterministic)."""
    out: set[Cell] = set()
    for r in runs:
        t = r.data.tags
        if r.info.status == "FINISHED" or (r.info.status == "FAILED" and t.get("failure_reason", "").startswith("diverged")):
            out.add(Cell(int(t["ablation.size"]), float(t["ablation.keep_prob"]), int(t["ablation.seed"])))
    return out


def _close_dead_spools(spool_dir: Path, reason: str) -> None:
    """End the runs of cells whose worker is gone, so MLflow shows them KILLED."""
    from sweep import spool

    spool.wait_writers_gone(spool_dir)
    for path, st in spool.unfinished(spool_dir):
        if spool.writer_alive(st) is False:
            spool.append_end(path, "KILLED", {"failure_reason": reason})
