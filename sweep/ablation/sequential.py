"""`sweep ablate --until-decided`: seeds added in rounds, only to the comparisons still undecided.

Each round reads what the ablation has recorded (MLflow once at the start, the
spool folder every round: it is ahead of MLflow), replays the stopping rule
(`sweep.analysis.sequential`: anytime-valid intervals of the paired
differences, Bonferroni over the grid's comparisons) and trains the next
seeds of the open comparisons: the treated cell and, when not yet trained,
the keep 1.0 cell of the same seed. It ends when no comparison is open.

The cells are those of the fixed grid with `max_seeds` seeds (same names,
init seeds, batch orders and subsets), trained by the same `train_cells`
under the same per-cell claims, so resuming is the same command: the cells
recorded are read back, the rule is replayed on them (it is deterministic),
and the round that was cut off trains only what it still lacks. No cell is
trained twice, and the result is the one an uninterrupted run gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from sweep.ablation.claims import settled_end
from sweep.ablation.cost import confirm, describe
from sweep.ablation.grid import Cell
from sweep.ablation.runner import (
    AblationOutcome,
    AblationPlan,
    CellsEnd,
    _estimate,
    end_ablation,
    plan_ablation,
    train_cells,
)
from sweep.ablation.workers import CellWorkers, cell_workers
from sweep.analysis.sequential import (
    BASELINE,
    ComparisonKey,
    Rule,
    SequentialComparison,
    comparison_keys,
    comparison_name,
    first_look,
    replay,
    seeds_to_add,
)
from sweep.config.sweep_file import SweepConfig
from sweep.config.until import DEFAULT_MAX_SEEDS
from sweep.search.recovery import say_to
from sweep.tracking.tracker import Tracker

CellKey = tuple[int, float, int, tuple[tuple[str, str], ...]]
ALPHA = 0.05  # family-wise over the grid's comparisons, as the report's 95 % intervals


def rule_of(cfg: SweepConfig) -> Rule:
    """The stopping rule the sweep file / flags ask for."""
    grid = cfg.grid
    return Rule(ALPHA, grid.precision, grid.max_seeds or DEFAULT_MAX_SEEDS)


def run_until_decided(cfg: SweepConfig, *, name: str | None, out: TextIO, workdir: Path, yes: bool,
                      stdin: TextIO, on_progress: Callable[[int, int], None] | None,
                      dask_scheduler: str | None = None) -> AblationOutcome:
    """Rounds of seeds for the open comparisons until none is open (or it is stopped);
    on the Dask cluster at `dask_scheduler` if given (sweep.ablation.workers)."""
    import time

    rule = rule_of(cfg)
    plan = sequential_plan(cfg, rule, name, workdir, yes, out)
    keys = comparison_keys(plan.sizes, list(dict.fromkeys(c.levels for c in plan.cells)), plan.grid.keep_probs)
    values = recorded_values(plan, from_mlflow=True)
    state = replay(values, keys, rule)
    say_start(plan, rule, keys, values, out)
    todo = next_round(plan, state, values, rule, len(keys))
    estimated = announce_round_cost(cfg, plan, rule, keys, todo, cell_workers(cfg, max(1, len(todo)), dask_scheduler),
                                    yes, stdin, out)
    started = time.monotonic()
    tracker = Tracker(plan.tracking_uri, cfg.study_name, plan.spool_dir, [plan.parent], say=say_to(out)).start()
    ended, trained, rounds = CellsEnd(), 0, 0
    while True:
        say_round(plan.name, rounds, state, todo, out)
        if not todo:
            break
        rounds += 1
        for c in todo:  # nested subsets: each (size, subset seed) cache written once, before workers open it
            cfg.data.subset(c.size, plan.data_seeds[c.seed]).load()
        round_plan = replace(plan, cells=[c for c in plan.cells if key_of(c) in values or c in todo])
        ended = train_cells(cfg, round_plan, todo, cell_workers(cfg, len(todo), dask_scheduler), out, on_progress)
        trained += ended.trained
        values = recorded_values(plan, base=values)
        state = replay(values, keys, rule)
        if ended.interrupted or todo:  # stopped, or workers kept dying: `todo` keeps what is untrained
            break
        todo = next_round(plan, state, values, rule, len(keys))
    say_end(plan.name, state, out)
    final_plan = replace(plan, cells=[c for c in plan.cells if key_of(c) in values or c in todo])
    outcome = end_ablation(cfg, final_plan, tracker, todo, replace(ended, trained=trained), out)
    outcome.estimated_seconds, outcome.seconds = estimated, time.monotonic() - started
    outcome.decisions = state
    return outcome


def sequential_plan(cfg: SweepConfig, rule: Rule, name: str | None, workdir: Path, yes: bool,
                    out: TextIO) -> AblationPlan:
    """The plan of the fixed grid at the cap (its cells and seeds), with the rule in its parent's params."""
    capped = replace(cfg, ablation=replace(cfg.grid, seeds=rule.max_seeds))
    plan = plan_ablation(capped, name, workdir, yes, out)
    params = {**plan.parent.params, "until": "decided", "max_seeds": rule.max_seeds, "alpha": rule.alpha,
              "precision": "none" if rule.precision is None else f"{rule.precision:g}"}
    return replace(plan, parent=replace(plan.parent, params=params))


def key_of(c: Cell) -> CellKey:
    return (c.size, c.keep_prob, c.seed, c.levels)


def recorded_values(plan: AblationPlan, *, from_mlflow: bool = False,
                    base: dict[CellKey, float] | None = None) -> dict[CellKey, float]:
    """Best val acc of every cell that needs no rerun (NaN: it diverged), from the spool folder
    (and MLflow, which has the cells of a spool folder that was removed)."""
    values = dict(base or {})
    if from_mlflow:
        values.update(_mlflow_values(plan))
    from sweep.tracking.rounding import exact_summary
    from sweep.tracking.store import SUMMARY_PREFIX

    for c in plan.cells:
        if key_of(c) in values:
            continue
        end = settled_end(plan.spool_dir, c.run_name)
        if end is not None:
            # The same exact k/n the report reads back from MLflow (the tags are rounded for people),
            # so the rounds decided here and the report's replay of them see the same numbers.
            tags = {k.removeprefix(SUMMARY_PREFIX): v for k, v in end.get("tags", {}).items()
                    if k.startswith(SUMMARY_PREFIX) and v not in (None, "")}
            summary = exact_summary({k: float(v) for k, v in tags.items() if _is_number(v)})
            values[key_of(c)] = summary.get("best_val_acc", math.nan)
    return values


def _is_number(text: object) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _mlflow_values(plan: AblationPlan) -> dict[CellKey, float]:
    from sweep.config.factors import cell_levels
    from sweep.tracking.store import child_runs, find_parent_run, make_client, run_state, summary_metrics

    client = make_client(plan.tracking_uri)
    exp = client.get_experiment_by_name(plan.study)
    parent_id = find_parent_run(client, exp.experiment_id, plan.parent.key, plan.paths.key) if exp else None
    out: dict[CellKey, float] = {}
    for r in child_runs(client, exp.experiment_id, parent_id) if exp is not None and parent_id else []:
        t, state = r.data.tags, run_state(r)
        key = (int(t["ablation.size"]), float(t["ablation.keep_prob"]), int(t["ablation.seed"]), cell_levels(t))
        if state == "COMPLETE":
            out[key] = float(summary_metrics(r).get("best_val_acc", math.nan))
        elif state == "FAIL" and t.get("failure_reason", "").startswith("diverged"):
            out[key] = math.nan
    return out


def next_round(plan: AblationPlan, state: dict[ComparisonKey, SequentialComparison],
               values: dict[CellKey, float], rule: Rule, m: int) -> list[Cell]:
    """The cells the open comparisons' next seeds need (treated and keep 1.0), in the grid's order."""
    wanted: set[CellKey] = set()
    for (size, levels, keep), comp in state.items():
        for k in seeds_to_add(comp, rule, m):
            wanted |= {(size, keep, k, levels), (size, BASELINE, k, levels)}
    return [c for c in plan.cells if key_of(c) in wanted and key_of(c) not in values]


def _tally(state: dict[ComparisonKey, SequentialComparison]) -> dict[str, int]:
    counts = dict.fromkeys(("open", "decided", "precise", "capped"), 0)
    for comp in state.values():
        counts[comp.status] += 1
    return counts


def say_start(plan: AblationPlan, rule: Rule, keys: list[ComparisonKey], values: dict[CellKey, float],
              out: TextIO) -> None:
    m = len(keys)
    target = "excludes 0" + ("" if rule.precision is None else f" or is at most {rule.precision:g} points wide")
    out.write(f"{plan.name}: until decided: {m} comparison(s) (keep_prob vs 1.0 at each size"
              f"{' and level' if any(k[1] for k in keys) else ''}, best val acc); each gets seeds until its "
              f"anytime-valid interval at {100 * (1 - rule.alpha / m):.4g} % (Bonferroni: 95 % over all {m}) {target}, "
              f"first look at {first_look(rule.alpha / m)} seeds, at most {rule.max_seeds} seeds; "
              f"{len(values)} cell(s) recorded before\n")


def announce_round_cost(cfg: SweepConfig, plan: AblationPlan, rule: Rule, keys: list[ComparisonKey],
                        todo: list[Cell], workers: CellWorkers, yes: bool, stdin: TextIO, out: TextIO) -> float | None:
    """The first round's cost estimate (asked above 10 minutes, as a fixed grid) and the cap's size."""
    if not todo:
        return None
    est = _estimate(cfg, plan.params, todo, plan.data_seeds[0], plan.paths.workdir, workers.in_flight,
                    workers.threads)
    out.write(f"{plan.name}: first round {workers.where}: {describe(est)}; later rounds add one seed to each open comparison "
              f"(at most {len(plan.cells)} cells in all, the fixed grid at {rule.max_seeds} seeds)\n")
    out.flush()
    confirm(est, yes=yes, stdin=stdin, out=out)
    return float(est.wall_seconds)


def say_round(name: str, round_no: int, state: dict[ComparisonKey, SequentialComparison], todo: list[Cell],
              out: TextIO) -> None:
    t = _tally(state)
    stopped = ", ".join(f"{t[s]} {s}" for s in ("decided", "precise", "capped"))
    what = f"round {round_no + 1}: training {len(todo)} cell(s)" if todo else "no cell left to train"
    out.write(f"{name}: {t['open']} of {len(state)} comparison(s) still open ({stopped}); {what}\n")
    out.flush()


def say_end(name: str, state: dict[ComparisonKey, SequentialComparison], out: TextIO) -> None:
    """One line per comparison: its status, seeds and why it stopped."""
    for comp in _ordered(state.values()):
        out.write(f"  {comparison_name(comp.key)}: {comp.status} after {comp.seeds} seed(s): {comp.decision.reason}\n")
    out.flush()


def _ordered(comps: Iterable[SequentialComparison]) -> list[SequentialComparison]:
    return sorted(comps, key=lambda c: c.key)

