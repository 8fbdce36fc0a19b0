"""The ablation grid and one cell's training (run in a worker).

A cell is (size, keep_prob, seed k, factor levels). Paired design: for seed k
every keep_prob uses the same weight init, minibatch order and nested
training subset (`cell_seeds`, `subset_seed`); only the dropout masks differ.
A worker trains a cell only while it holds the cell's claim (sweep.ablation.claims).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sweep.config.display import NOTE_TAG, mlflow_params, run_note
from sweep.config.factors import (
    FACTOR_TAG_PREFIX,
    MAX_GRID_CELLS,
    Levels,
    cell_levels,
    grid_size,
    level_text,
    level_value,
)
from sweep.config.model_spec import ModelSpec
from sweep.config.sweep_file import AblationConfig, TrainParams
from sweep.data.spec import DataSpec
from sweep.own_net import model_tags, traceback_tags
from sweep.tracking.spool import STATE_TAG, RunRecorder, end_status
from sweep.tracking.store import summary_chart_metrics, summary_tags
from sweep.training import RunSeeds, train

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
    data: DataSpec  # the cell's training subset: its size and its seed's rows
    base_seed: int
    spool_dir: Path  # the attempt's file is chosen under the cell's claim (sweep.ablation.claims)
    ablation: str
    model: ModelSpec | None = None  # your own net (--model), checked by the parent; None: the built-in one


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
    from sweep.ablation.claims import claim_cell

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
    from sweep.tracking.store import summary_key

    tags = end.get("tags", {})
    best = tags.get(summary_key("best_val_acc"))
    return {"cell": c, "status": end.get("status", "FINISHED"), "best_val_acc": float(best) if best else float("nan"),
            "reason": tags.get("failure_reason"), "settled": True}


def _train_cell(task: CellTask, spool_path: Path) -> dict[str, Any]:

    c = task.cell
    data = task.data.load()
    params = c.train_params(task.params)
    seeds = cell_seeds(task.base_seed, c.seed)
    tags = {
        "sweep.kind": "cell", "sweep.ablation": task.ablation, "ablation.size": c.size,
        "ablation.keep_prob": c.keep_prob, "ablation.seed": c.seed,
        "sweep.init_seed": seeds.init, "sweep.order_seed": seeds.order, "ablation.data_seed": task.data.seed,
        **{FACTOR_TAG_PREFIX + n: v for n, v in c.levels}, **model_tags(task.model),
    }
    with RunRecorder(spool_path) as rec:
        shown = mlflow_params({**params.to_flat(), "num_train": c.size})
        rec.start(c.run_name, f"ablation:{task.ablation}", shown, tags)
        try:
            result = train(params, data, seeds, recorder=rec, model=task.model)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            rec.end(end_status("FAIL", interrupted=interrupted),
                    {STATE_TAG: "FAIL", "failure_reason": "interrupted" if interrupted else repr(exc)})
            raise
        end_tags = {STATE_TAG: result.state, NOTE_TAG: f"{c.size} training rows, seed {c.seed}; "
                    + run_note(shown, result.state, result.summary, failure_reason=result.failure_reason)}
        if result.failure_reason:
            end_tags["failure_reason"] = result.failure_reason
        rec.end(end_status(result.state), {**end_tags, **summary_tags(result.summary), **traceback_tags(result)},
                summary_chart_metrics(result.summary))
    # The cell's events (a few kB) travel back with the result: a Dask worker on another
    # machine wrote them on its own disk, which the parent's tracker cannot read.
    return {"cell": c, "status": result.status, "best_val_acc": result.best_val_acc, "reason": result.failure_reason,
            "pid": os.getpid(), "spool_file": spool_path.name, "spool": spool_path.read_text(encoding="utf-8")}


def ablation_name(params: TrainParams, grid: AblationConfig, dataset: str, model: ModelSpec | None = None) -> str:
    """Stable name for (config, grid, net): the same command finds its parent run again."""
    fields: dict[str, Any] = {"p": params.to_flat(), "k": list(grid.keep_probs),
                              "n": list(grid.resolved_sizes(dataset)), "s": grid.seeds, "d": dataset}
    if grid.subsets != "fixed":  # absent for "fixed": ablations made before the option keep their names
        fields["u"] = grid.subsets
    if grid.vary:  # absent without --vary, for the same reason; sorted: the same cells whatever the order given
        fields["v"] = {n: sorted(level_text(n, v) for v in values) for n, values in grid.vary}
    if grid.until is not None:  # a sequential ablation (sweep.ablation.sequential) is its own parent run
        fields["q"] = {"until": grid.until, "precision": grid.precision, "max_seeds": grid.max_seeds}
    if model is not None:  # absent for the built-in net, for the same reason: your own net's cells are its own
        fields["m"] = f"{model.module}:{model.class_name}"
    key = json.dumps(fields, sort_keys=True)
    return "ablation-" + hashlib.sha1(key.encode()).hexdigest()[:8]


def finished_cells(runs: list[Any]) -> set[Cell]:
    """Cells that need no rerun: finished, or failed by divergence (deterministic)."""
    from sweep.tracking.store import run_state

    out: set[Cell] = set()
    for r in runs:
        t = r.data.tags
        state = run_state(r)
        if state == "COMPLETE" or (state == "FAIL" and t.get("failure_reason", "").startswith("diverged")):
            out.add(Cell(int(t["ablation.size"]), float(t["ablation.keep_prob"]), int(t["ablation.seed"]),
                         cell_levels(t)))
    return out


