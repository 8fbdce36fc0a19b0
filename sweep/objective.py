"""One training run: the single loop shared by sweep trials and ablation cells.

`train` builds the net, runs the Solver and streams every epoch to a spool
recorder (-> MLflow) and to an optional per-epoch hook (-> Optuna pruning).
`trial_objective` wraps it for Optuna; sweep.ablation wraps it for cells.
"""

from __future__ import annotations

import contextlib

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model import FullyConnectedNet, Solver, TrainingDiverged
from sweep.config import TrainParams
from sweep.display import NOTE_TAG, readable_params, run_note
from sweep.mlflow_store import summary_tags
from sweep.spool import STATE_TAG, RunRecorder, SpoolWriteError, end_status

EpochHook = Callable[[int, dict[str, float]], bool]


@dataclass(frozen=True)
class RunSeeds:
    """Seeds of one training run.

    `init` fixes weight init and the dropout-mask stream (the model keeps them
    apart), `order` fixes minibatch order and the train-accuracy subsample.
    Both derive from (base seed, index) only, never from which worker runs it.
    """

    init: int
    order: int

    @classmethod
    def derive(cls, base_seed: int, index: int) -> RunSeeds:
        init, order = np.random.SeedSequence([base_seed, index]).spawn(2)
        return cls(int(init.generate_state(1)[0]), int(order.generate_state(1)[0]))


@dataclass
class RunResult:
    """How one training run ended, with its per-epoch curve."""

    status: str  # "FINISHED" | "FAILED" (MLflow run statuses; a pruned run is FINISHED)
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float = float("nan")
    best_epoch: int = 0
    stopped_epoch: int | None = None  # set when the hook stopped training (pruning)
    failure_reason: str | None = None
    best_weights: dict[str, np.ndarray] | None = None

    @property
    def state(self) -> str:
        """Optuna's word for the outcome: COMPLETE, PRUNED or FAIL (the run's `state` tag)."""
        if self.status == "FAILED":
            return "FAIL"
        return "PRUNED" if self.stopped_epoch is not None else "COMPLETE"

    @property
    def summary(self) -> dict[str, float]:
        """Final-epoch figures plus the best validation accuracy, by bare name (Optuna's user
        attr `summary`; MLflow gets them as tags `summary/<name>`, see mlflow_store.summary_tags)."""
        if not self.epochs:
            return {}
        last = self.epochs[-1]
        return {
            "best_val_acc": self.best_val_acc,
            "best_epoch": float(self.best_epoch),
            "final_train_acc": last["train_acc"],
            "final_val_acc": last["val_acc"],
            "final_gap": last["gap"],
            "final_val_loss": last["val_loss"],
            "epochs_trained": float(len(self.epochs)),
        }


def build_net(params: TrainParams, input_dim: int, num_classes: int, seed: int | None) -> FullyConnectedNet:
    return FullyConnectedNet(
        list(params.hidden_dims),
        input_dim=input_dim,
        num_classes=num_classes,
        keep_prob=params.keep_prob,
        normalization=params.model_normalization,
        reg=params.reg,
        weight_scale=params.weight_scale,
        dtype=np.float32,
        seed=seed,
    )


def num_classes_of(data: Mapping[str, np.ndarray]) -> int:
    return int(max(data["y_train"].max(), data["y_val"].max())) + 1


def train(
    params: TrainParams,
    data: Mapping[str, np.ndarray],
    seeds: RunSeeds,
    *,
    recorder: RunRecorder | None = None,
    on_epoch: EpochHook | None = None,
    keep_best_weights: bool = False,
) -> RunResult:
    """Train one net; never raises for a diverging loss (status FAILED instead).

    Args:
        params: hyperparameters (keep_prob is the probability of KEEPING a unit).
        data: X_train (N, D) float32, y_train (N,), X_val, y_val (read-only is fine).
        seeds: init and batch-order seeds.
        recorder: spool recorder; receives one `epoch` event per epoch.
        on_epoch: extra per-epoch hook; returning False stops training (pruning).
        keep_best_weights: keep the best epoch's parameters in the result.
    """
    net = build_net(params, data["X_train"].shape[1], num_classes_of(data), seeds.init)
    result = RunResult(status="FINISHED")

    def hook(epoch: int, metrics: dict[str, float]) -> bool:
        result.epochs.append(dict(metrics))
        if recorder is not None:
            recorder.epoch(epoch, metrics)
        if on_epoch is not None and on_epoch(epoch, metrics) is False:
            result.stopped_epoch = epoch
            return False
        return True

    solver = Solver(
        net,
        data,
        update_rule=params.update_rule,
        optim_config={"learning_rate": params.learning_rate},
        lr_decay=params.lr_decay,
        batch_size=params.batch_size,
        num_epochs=params.epochs,
        seed=seeds.order,
        on_epoch=hook,
    )
    try:
        solver.train()
    except TrainingDiverged as exc:
        result.status = "FAILED"
        result.failure_reason = f"diverged at epoch {exc.epoch}"
    result.best_val_acc = float(solver.best_val_acc) if result.epochs else float("nan")
    result.best_epoch = int(getattr(solver, "best_epoch", 0) or 0)
    if keep_best_weights and result.status != "FAILED" and result.epochs:
        solver.load_best_params()
        result.best_weights = model_state(net)
    return result


def model_state(net: FullyConnectedNet) -> dict[str, np.ndarray]:
    """Parameters plus batchnorm running statistics (`bn{i}.running_mean`, ...), flat."""
    state = {k: np.array(v) for k, v in net.params.items()}
    for i, bn in enumerate(net.bn_params, start=1):
        for key in ("running_mean", "running_var"):
            if key in bn:
                state[f"bn{i}.{key}"] = np.array(bn[key])
    return state


def load_model_state(net: FullyConnectedNet, state: Mapping[str, np.ndarray]) -> None:
    """Inverse of `model_state`."""
    for name, value in state.items():
        if name.startswith("bn") and "." in name:
            layer, key = name.split(".", 1)
            net.bn_params[int(layer[2:]) - 1][key] = np.array(value)
        else:
            net.params[name] = np.asarray(value, dtype=net.params[name].dtype)


def evaluate(
    params: TrainParams,
    weights: Mapping[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    batch_size: int = 1000,
) -> float:
    """Accuracy of a trained net (test mode) on (X, y)."""
    net = build_net(params, X.shape[1], num_classes, seed=0)
    load_model_state(net, weights)
    correct = 0
    for i in range(0, X.shape[0], batch_size):
        scores = net.loss(np.asarray(X[i : i + batch_size]))
        correct += int((np.argmax(scores, axis=1) == y[i : i + batch_size]).sum())
    return correct / max(1, X.shape[0])


def save_weights(path: Path, weights: Mapping[str, np.ndarray]) -> None:
    """Atomic .npz write (another worker may read the best weights at any time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **weights)
    os.replace(tmp, path)


def load_weights(path: Path) -> dict[str, Any]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# -- Optuna trials -----------------------------------------------------------


class TrialFailed(Exception):
    """A trial ended as failed (e.g. its loss diverged); the sweep goes on."""


@dataclass(frozen=True)
class TrialContext:
    """Everything a worker process needs to run trials of one study (picklable)."""

    study_name: str
    storage_url: str | None
    journal_path: Path
    seed: int
    space: Any  # sweep.config.SearchSpace
    spool_dir: Path
    weights_dir: Path
    dataset: str
    data_dir: str | None
    num_train: int | None
    num_val: int | None
    pruner: str
    max_epochs: int
    # The study's --trials target: a task starts no trial once it is reached
    # (sweep.study.check_target). None: no check (the task always runs one).
    target_trials: int | None = None
    # End of the time budget (`--timeout`), wall-clock `time.time()`: a task starts
    # no trial after it (sweep.budget). None: no budget.
    deadline: float | None = None
    # The `sweep run` process ("host:pid:start") that runs these tasks on loky workers: it
    # reaps its own workers' trials (it sees every death, and stops them on an interrupt),
    # so a worker leaves a sibling's trial alone; seen dead mid-way through the parent's
    # stop, it would be called "worker process died" instead of "interrupted". None on
    # Dask, where the task re-run after its worker died must reap that worker's trial.
    sweep_process: str | None = None
    # k of the reproducible mode (sweep.reproducible): trial n's sampler and pruner see only
    # the trials < n - k, all finished. None: off.
    reproducible_lag: int | None = None


def trial_objective(trial: Any, ctx: TrialContext, data: Mapping[str, np.ndarray]) -> float:
    """Optuna objective: best validation accuracy of one training run.

    Reports val_acc each epoch for pruning; records params, per-epoch metrics
    and the outcome in the trial's spool file (-> MLflow child run).
    """
    from sweep.study import seed_index

    frozen = trial.study._storage.get_trial(trial._trial_id)
    index = seed_index(frozen)
    params = ctx.space.suggest(trial)
    seeds = RunSeeds.derive(ctx.seed, index)
    tags = {
        "optuna.trial_number": trial.number,
        "optuna.study": ctx.study_name,
        "sweep.seed_index": index,
        "sweep.init_seed": seeds.init,
        "sweep.order_seed": seeds.order,
        "sweep.kind": "trial",
    }
    try:
        return _train_recorded(trial, ctx, data, params, seeds, tags)
    except SpoolWriteError as exc:  # the spool folder cannot be written (disk full): say which, on the trial
        with contextlib.suppress(Exception):
            trial.set_user_attr("failure_reason", exc.strerror)
        raise


def _train_recorded(trial: Any, ctx: TrialContext, data: Mapping[str, np.ndarray], params: Any, seeds: Any,
                    tags: dict[str, Any]) -> float:
    """Train one trial's run, its events in the trial's spool file (see trial_objective)."""
    import optuna

    from sweep.study import spool_path

    with RunRecorder(spool_path(ctx.spool_dir, trial.number)) as rec:
        # MLflow params as a person writes them (0.85, 6.837e-4); Optuna keeps the exact floats.
        shown = readable_params(params.to_flat(), ctx.space)
        rec.start(f"trial-{trial.number:04d}", "study", shown, tags)

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            trial.report(metrics["val_acc"], epoch)
            return not trial.should_prune()

        try:
            result = train(params, data, seeds, recorder=rec, on_epoch=report, keep_best_weights=True)
        except BaseException as exc:  # interrupt or a bug: record it, let Optuna fail the trial
            interrupted = isinstance(exc, KeyboardInterrupt)
            from sweep.study import is_storage_error, short_storage_error

            if interrupted:
                reason = "interrupted"
            elif isinstance(exc, SpoolWriteError):
                reason = exc.strerror
            elif is_storage_error(exc):
                reason = f"the Optuna storage failed: {short_storage_error(exc)}"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            # The spool end first, each step on its own: the storage (database restarting)
            # or the spool folder (disk full) may be what failed.
            with contextlib.suppress(OSError, ValueError):
                rec.end(end_status("FAIL", interrupted=interrupted), {STATE_TAG: "FAIL", "failure_reason": reason,
                        NOTE_TAG: run_note(shown, "FAIL", {}, failure_reason=reason)})
            with contextlib.suppress(Exception):
                trial.set_user_attr("failure_reason", reason)
                if interrupted:
                    trial.set_user_attr("interrupted", True)
            raise
        summary = result.summary
        trial.set_user_attr("summary", summary)
        _record_timing(trial, result, data)
        if "final_gap" in summary:
            trial.set_user_attr("gap", summary["final_gap"])
        if result.state == "FAIL":
            trial.set_user_attr("failure_reason", result.failure_reason)
            note = run_note(shown, "FAIL", summary, failure_reason=result.failure_reason)
            rec.end(end_status("FAIL"), {STATE_TAG: "FAIL", "failure_reason": result.failure_reason, NOTE_TAG: note,
                                         **summary_tags(summary)})
            raise TrialFailed(result.failure_reason)
        if result.state == "PRUNED":
            trial.set_user_attr("pruned_at_epoch", result.stopped_epoch)
            note = run_note(shown, "PRUNED", summary, pruned_at_epoch=result.stopped_epoch)
            rec.end(end_status("PRUNED"), {STATE_TAG: "PRUNED", "pruned_at_epoch": result.stopped_epoch, NOTE_TAG: note,
                                           **summary_tags(summary)})
            raise optuna.TrialPruned(f"pruned at epoch {result.stopped_epoch}")
        if result.best_weights is not None and _is_best_so_far(trial.study, result.best_val_acc):
            save_weights(ctx.weights_dir / f"trial-{trial.number:04d}.npz", result.best_weights)
        rec.end(end_status("COMPLETE"), {STATE_TAG: "COMPLETE", NOTE_TAG: run_note(shown, "COMPLETE", summary),
                                         **summary_tags(summary)})
        return result.best_val_acc


def _record_timing(trial: Any, result: RunResult, data: Mapping[str, np.ndarray]) -> None:
    """Median epoch seconds and the rows it took, for `sweep ablate`'s cost estimate (sweep.cost)."""
    from threadpoolctl import threadpool_info

    secs = sorted(e["epoch_seconds"] for e in result.epochs if "epoch_seconds" in e)
    if secs:
        # The BLAS threads this worker ran with (cores // jobs): an ablation on other workers scales by them.
        threads = max((i.get("num_threads", 1) for i in threadpool_info() if i.get("user_api") == "blas"), default=1)
        trial.set_user_attr("timing", {
            "epoch_seconds": float(secs[len(secs) // 2]), "num_train": int(data["X_train"].shape[0]),
            "num_val": int(data["X_val"].shape[0]), "input_dim": int(data["X_train"].shape[1]),
            "threads": int(threads),
        })


def _is_best_so_far(study: Any, value: float) -> bool:
    try:
        return value >= study.best_value
    except ValueError:  # no completed trial yet
        return True
