"""Each arm's strength, chosen by a small Optuna search of its own on the validation set.

Fair by construction: every arm gets the same number of trials (the budget), trial i
of every arm trains with the same seeds (init, batch order) on the same training
rows, and the search sees only validation accuracy (the test split is read once, in
the re-training after every arm is tuned). The search is over the arm's knob(s)
only; the rest of the configuration stays at the base. TPE, seeded per arm.

Resumable: every finished trial is a line of ``tuning.jsonl`` in the comparison's
folder; a rerun gives those back to a fresh study (``add_trial``) and runs only the
missing ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sweep.ablation.arms import Arm
from sweep.config.domains import DOMAINS
from sweep.config.space import TrainParams
from sweep.data.spec import DataSpec
from sweep.training import RunSeeds

# Tuning seeds live apart from trial (k) and ablation (1 000 000 + k) seeds.
TUNING_SEED_OFFSET = 2_000_000


@dataclass(frozen=True)
class TuneTask:
    """One tuning trial (picklable): the arm's params for this trial's strength, its data and seeds."""

    arm: str
    number: int
    strengths: dict[str, Any]
    params: TrainParams
    data: DataSpec
    base_seed: int


def run_tune_task(task: TuneTask) -> dict[str, Any]:
    """Worker: train one tuning trial; its value is the best validation accuracy (NaN when it diverged)."""
    from sweep.training import train

    seeds = RunSeeds.derive(task.base_seed, TUNING_SEED_OFFSET + task.number)
    result = train(task.params, task.data.load(), seeds)
    value = result.best_val_acc if result.status == "FINISHED" else float("nan")
    return {"arm": task.arm, "number": task.number, "strengths": task.strengths, "value": value}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The finished tuning trials (a torn last line, from a kill, is ignored)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, flushed and fsynced (a kill leaves at most a torn last line, which
    `read_log` skips; the next line starts on a line of its own, else it would be lost with it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        torn = False
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
        fh.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())


def _distributions(arm: Arm) -> dict[str, Any]:
    import optuna

    out: dict[str, Any] = {}
    for name, r in arm.knobs:
        if DOMAINS[name].kind is int:
            out[name] = optuna.distributions.IntDistribution(int(r.low), int(r.high), step=int(r.step or 1))
        else:
            out[name] = optuna.distributions.FloatDistribution(float(r.low), float(r.high), log=r.log)
    return out


def tune_arm(arm: Arm, arm_index: int, budget: int, make_task: Callable[[int, dict[str, Any]], TuneTask],
             log: Path, run_batch: Callable[[list[TuneTask]], Iterator[dict[str, Any]]], batch: int,
             out: TextIO) -> dict[str, Any]:
    """Search `arm`'s knobs for `budget` trials (those in `log` count) and return the best strengths.

    Args:
        make_task: (trial number, strengths) -> the task that trains it.
        run_batch: runs tasks on the pool, yielding each result as it ends.
        batch: trials asked at once (the workers); TPE sees the results of earlier batches.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = _distributions(arm)
    sampler = optuna.samplers.TPESampler(seed=int(np.random.SeedSequence([arm_index, 7]).generate_state(1)[0]),
                                         n_startup_trials=max(1, budget // 2))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    done = [r for r in read_log(log) if r["arm"] == arm.name]
    for r in done:
        state = optuna.trial.TrialState.COMPLETE if _finite(r["value"]) else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(params=r["strengths"], distributions=dists, state=state,
                                                  value=r["value"] if _finite(r["value"]) else None))
    number = len(done)
    while number < budget:
        asked = [study.ask(dists) for _ in range(min(batch, budget - number))]
        tasks = [make_task(number + i, dict(t.params)) for i, t in enumerate(asked)]
        by_number = {task.number: trial for task, trial in zip(tasks, asked, strict=True)}
        for res in run_batch(tasks):
            append_line(log, res)
            ok = _finite(res["value"])
            study.tell(by_number[res["number"]], res["value"] if ok else None,
                       state=None if ok else optuna.trial.TrialState.FAIL)
        number += len(tasks)
    best = _best(study)
    shown = ", ".join(f"{k}={_short(v)}" for k, v in best.items())
    out.write(f"  {arm.name}: {budget} trials, chosen {shown} (best val acc {study.best_value:.4f})\n")
    out.flush()
    return best


def _best(study: Any) -> dict[str, Any]:
    try:
        return dict(study.best_trial.params)
    except ValueError:
        raise ValueError("every tuning trial of an arm diverged: lower the base learning rate") from None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and np.isfinite(value)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
