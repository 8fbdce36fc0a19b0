"""One re-training run of `sweep compare` (run in a worker), recorded in MLflow like an ablation cell.

Run (arm, seed k) uses ablation seed k's init and batch-order seeds (`cell_seeds`)
and seed k's training rows, keeps its best-validation-epoch weights and evaluates
them once on the test split and on its own training rows. Its per-epoch curve goes
to a spool file under the run's claim (sweep.ablation.claims: a run a SIGKILL cut
off continues in the same file, so MLflow keeps one run for it), mirrored into
MLflow as a child of the comparison's parent run by the tracker thread.

The comparison's own record of the run (its test accuracy) is the line the parent
appends to runs.jsonl. A run whose spool file says it ended but whose line is
missing (the command was killed in between) is trained again without recording
(deterministic: the same seeds give the same numbers), so MLflow keeps one run.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.ablation.grid import cell_seeds
from sweep.config.display import NOTE_TAG, readable_params, run_note
from sweep.config.space import TrainParams
from sweep.data.spec import DataSpec
from sweep.tracking.spool import STATE_TAG, RunRecorder, end_status
from sweep.tracking.store import summary_tags


@dataclass(frozen=True)
class ArmTask:
    """One re-training run (picklable): an arm's tuned params on seed k's subset with seed k's seeds."""

    arm: str
    seed: int
    params: TrainParams
    data: DataSpec
    base_seed: int
    spool_dir: Path | None = None  # None: not recorded in MLflow
    parent_key: str = ""

    @property
    def run_name(self) -> str:
        """``dropout-s3``: the arm and seed k (the MLflow run's name)."""
        return f"{self.arm}-s{self.seed}"


def run_arm_task(task: ArmTask) -> dict[str, Any]:
    """Worker: train (arm, seed k) under its claim, recording its curve; returns its record."""
    from sweep.ablation.claims import claim_cell

    if task.spool_dir is None:
        return train_and_measure(task, None)
    with claim_cell(task.spool_dir, task.run_name) as claim:
        if isinstance(claim, str) or claim.settled is not None or claim.path is None:
            return train_and_measure(task, None)  # recorded already (or by another process): numbers only
        with RunRecorder(claim.path) as rec:
            shown = readable_params({**task.params.to_flat(), "num_train": task.data.num_train or "all"})
            rec.start(task.run_name, task.parent_key, shown,
                      {"sweep.kind": "compare-run", "compare.arm": task.arm, "compare.seed": task.seed,
                       "ablation.data_seed": task.data.seed})
            try:
                record = train_and_measure(task, rec)
            except BaseException as exc:
                interrupted = isinstance(exc, KeyboardInterrupt)
                rec.end(end_status("FAIL", interrupted=interrupted),
                        {STATE_TAG: "FAIL", "failure_reason": "interrupted" if interrupted else repr(exc)})
                raise
            state = "COMPLETE" if record["status"] == "FINISHED" else "FAIL"
            figures = {k: record[k] for k in ("test_acc", "train_acc", "val_acc", "gap", "seconds")}
            note = f"arm {task.arm}, seed {task.seed}: " + run_note(shown, state, {}, failure_reason=None)
            rec.end(end_status(state), {STATE_TAG: state, NOTE_TAG: note, "sweep.init_seed": record["init_seed"],
                                        "sweep.order_seed": record["order_seed"], **summary_tags(figures)})
        return record


def train_and_measure(task: ArmTask, recorder: RunRecorder | None) -> dict[str, Any]:
    """Train, then evaluate the best-validation weights on test, validation and the run's own training rows."""
    from sweep.training import build_net, evaluate, num_classes_of, train

    data = task.data.load()
    seeds = cell_seeds(task.base_seed, task.seed)
    classes = num_classes_of(data)
    start = build_net(task.params, data["X_train"].shape[1], classes, seeds.init).params
    digest = hashlib.sha1(b"".join(start[k].tobytes() for k in sorted(start))).hexdigest()[:16]
    t0 = time.perf_counter()
    result = train(task.params, data, seeds, recorder=recorder, keep_best_weights=True)
    seconds = time.perf_counter() - t0
    rec: dict[str, Any] = {
        "arm": task.arm, "seed": task.seed, "status": result.status, "seconds": seconds,
        "init_seed": seeds.init, "order_seed": seeds.order, "data_seed": task.data.seed, "init_digest": digest,
        "curve": [{k: e[k] for k in ("train_acc", "val_acc", "epoch_seconds") if k in e} for e in result.epochs],
        "params": task.params.to_flat(),
    }
    nan = float("nan")
    w = result.best_weights
    rec["test_acc"] = nan if w is None else evaluate(task.params, w, data["X_test"], data["y_test"], classes)
    rec["train_acc"] = nan if w is None else evaluate(task.params, w, data["X_train"], data["y_train"], classes)
    rec["val_acc"] = nan if w is None else evaluate(task.params, w, data["X_val"], data["y_val"], classes)
    rec["gap"] = rec["train_acc"] - rec["test_acc"]
    return rec
