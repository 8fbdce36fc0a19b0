"""The one training loop, shared by sweep trials and ablation cells (no Optuna here).

`train` builds the net, runs the Solver and streams every epoch to a spool
recorder (-> MLflow) and to an optional per-epoch hook (-> Optuna pruning in
`sweep.search.objective`, nothing for an ablation cell). The rest saves and
restores a trained net's state and evaluates it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model import FullyConnectedNet, Solver, TrainingDiverged
from sweep.config.space import TrainParams
from sweep.own_net import OwnCodeFailed, build_own_net, own_code
from sweep.tracking.spool import RunRecorder

if TYPE_CHECKING:
    from sweep.config.model_spec import ModelSpec

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
    traceback: str | None = None  # your own net's traceback when its code raised (--model)
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


def build_net(params: TrainParams, input_dim: int, num_classes: int, seed: int | None,
              model: ModelSpec | None = None) -> Any:
    if model is not None:  # your own net (--model), built the same way
        return build_own_net(model, params, input_dim, num_classes, seed)
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
        # regularizers (issue 20): max_norm 0 is the model's None (no constraint)
        input_keep_prob=params.input_keep_prob,
        max_norm=params.max_norm or None,
    )


def augmentation_kwargs(params: TrainParams, input_dim: int) -> dict[str, Any]:
    """The Solver's augmentation keywords ({} when off); the image shape is the dataset's of that width."""
    from sweep.config.images import image_shape_of_width

    if not params.augment_flip and not params.augment_shift:
        return {}
    shape = image_shape_of_width(input_dim)
    extra = {} if shape is None else {"image_shape": shape}  # unknown width: the Solver refuses it in one line
    return {"augment_flip": params.augment_flip, "augment_shift": params.augment_shift, **extra}


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
    model: ModelSpec | None = None,
) -> RunResult:
    """Train one net; never raises for a diverging loss (status FAILED instead).

    Args:
        params: hyperparameters (keep_prob is the probability of KEEPING a unit).
        data: X_train (N, D) float32, y_train (N,), X_val, y_val (read-only is fine).
        seeds: init and batch-order seeds.
        recorder: spool recorder; receives one `epoch` event per epoch.
        on_epoch: extra per-epoch hook; returning False stops training (pruning).
        keep_best_weights: keep the best epoch's parameters in the result.
        model: your own net (--model); None: the built-in one. An exception in its code
            fails this run (status FAILED, its traceback in `traceback`), not the caller.
    """
    result = RunResult(status="FINISHED")
    ours: list[BaseException] = []  # the hook's own exceptions pass through `own_code` unchanged

    def hook(epoch: int, metrics: dict[str, float]) -> bool:
        try:
            result.epochs.append(dict(metrics))
            if recorder is not None:
                recorder.epoch(epoch, metrics)
            if on_epoch is not None and on_epoch(epoch, metrics) is False:
                result.stopped_epoch = epoch
                return False
            return True
        except BaseException as exc:
            ours.append(exc)
            raise

    try:
        with own_code(model, ours):
            net = build_net(params, data["X_train"].shape[1], num_classes_of(data), seeds.init, model)
            return _fit(net, params, data, seeds, hook, result, keep_best_weights)
    except OwnCodeFailed as exc:
        result.status, result.failure_reason, result.traceback = "FAILED", exc.reason, exc.text
        return result


def _fit(net: Any, params: TrainParams, data: Mapping[str, np.ndarray], seeds: RunSeeds, hook: EpochHook,
         result: RunResult, keep_best_weights: bool) -> RunResult:
    """Run the Solver on `net`, filling `result` (see `train`)."""
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
        **augmentation_kwargs(params, data["X_train"].shape[1]),  # issue 20: seeded by (order seed, epoch)
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


def model_state(net: Any) -> dict[str, np.ndarray]:
    """Parameters plus batchnorm running statistics (`bn{i}.running_mean`, ...), flat."""
    state = {k: np.array(v) for k, v in net.params.items()}
    for i, bn in enumerate(getattr(net, "bn_params", None) or [], start=1):
        for key in ("running_mean", "running_var"):
            if key in bn:
                state[f"bn{i}.{key}"] = np.array(bn[key])
    return state


def load_model_state(net: Any, state: Mapping[str, np.ndarray]) -> None:
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
    model: ModelSpec | None = None,
) -> float:
    """Accuracy of a trained net (test mode) on (X, y)."""
    net = build_net(params, X.shape[1], num_classes, seed=0, model=model)
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
    np.savez(tmp, allow_pickle=True, **weights)  # numpy's default, named so no weight can be taken for it
    os.replace(tmp, path)


def load_weights(path: Path) -> dict[str, Any]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


