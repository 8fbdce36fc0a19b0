"""Solver: minibatch training with per-epoch metrics, a stop callback and divergence detection."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np

from model import augment, optim
from model.layers import softmax_loss

__all__ = ["METRIC_KEYS", "Solver", "TrainingDiverged"]

#: Keys of the dict passed to ``on_epoch`` (all float values).
METRIC_KEYS = ("train_acc", "val_acc", "train_loss", "val_loss", "gap", "lr", "epoch_seconds")

#: Rows per forward pass when evaluating a split (bounds memory, not results).
EVAL_BATCH_SIZE = 1000

# Rows per chunk of the one-off finiteness scan of the data.
_SCAN_ROWS = 4096


class TrainingDiverged(ArithmeticError):
    """A training loss (or gradient) became NaN or infinite.

    Attributes:
        epoch: Epoch (from 1) in which it happened.
        iteration: Global iteration (from 1) whose loss was bad; no update
            was made with it.
        loss: The offending loss value.
    """

    def __init__(self, epoch: int, iteration: int, loss: float, detail: str = "") -> None:
        self.epoch = epoch
        self.iteration = iteration
        self.loss = loss
        self.detail = detail
        msg = f"diverged at epoch {epoch} (iteration {iteration}, loss={loss})"
        super().__init__(msg + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across joblib workers
        return (TrainingDiverged, (self.epoch, self.iteration, self.loss, self.detail))


def _check_split(xname: str, yname: str, X: Any, y: Any, input_dim: int | None, num_classes: int | None) -> None:
    """Shape/label checks plus one chunked finiteness scan of X (no copy, no full-size temporary)."""
    if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
        raise ValueError(f"{xname} and {yname} must be numpy arrays, got {type(X).__name__}, {type(y).__name__}")
    if X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(f"{xname} must have shape (N, D) with N >= 1, got {X.shape}")
    if input_dim is not None and math.prod(X.shape[1:]) != input_dim:
        raise ValueError(f"{xname} rows must have {input_dim} features (the model's input_dim), got {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"{yname} must have shape ({X.shape[0]},) to match {xname}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{yname} must hold integer labels, got dtype {y.dtype}")
    if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{yname} labels must be in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"{xname} must be a floating array, got dtype {X.dtype}")
    # A finite sum of a chunk means every element is finite; an inf/nan sum
    # may also be float overflow, so only then look element by element.
    for start in range(0, X.shape[0], _SCAN_ROWS):
        chunk = X[start : start + _SCAN_ROWS]
        with np.errstate(over="ignore", invalid="ignore"):  # handled just below
            total = chunk.sum(dtype=np.float64)
        if not np.isfinite(total) and not np.isfinite(chunk).all():
            raise ValueError(f"{xname} must be finite: found NaN or inf in rows {start}..{start + len(chunk) - 1}")


class Solver:
    """Trains a classification model by minibatch gradient descent.

    The model needs ``params`` (dict of arrays) and ``loss(X, y=None)``
    returning scores without ``y`` and ``(loss, grads)`` with it (like
    :class:`model.FullyConnectedNet`); optional ``bn_params`` running
    statistics are saved with the best parameters.

    Each epoch is a fresh permutation of the training set from the Solver's
    own Generator (``seed``), cut into ``batch_size`` minibatches; when
    ``N > batch_size`` the last ``N % batch_size`` examples of the permutation
    are left out of that epoch (different ones each epoch), so no tiny batch
    skews batchnorm. The model's own randomness (dropout) never touches this
    Generator, so the batch order is the same for one Solver seed whatever
    the model. ``data`` arrays are only read (read-only memmaps are fine) and
    only minibatches are copied out of them.

    After each epoch the metrics ``METRIC_KEYS`` are computed and passed to
    ``on_epoch(epoch, metrics)`` (epoch from 1); if it returns ``False``
    training stops and ``stopped_epoch`` records the epoch:

    - ``train_loss``: mean of that epoch's minibatch losses (train mode:
      dropout on, L2 term included);
    - ``train_acc``: accuracy on ``num_train_samples`` training rows drawn
      afresh each epoch; ``val_acc`` on the whole validation set, or on
      ``num_val_samples`` rows of it drawn once per Solver; both in test mode;
    - ``val_loss``: mean cross-entropy on the validation rows (test mode, no
      L2 term); ``gap`` = train_acc - val_acc;
    - ``lr``: learning rate used during the epoch (decayed by ``lr_decay``
      after it); ``epoch_seconds``: wall time of training plus evaluation.

    Augmentation (training minibatches only; evaluation never sees it): with
    ``augment_flip`` and/or ``augment_shift`` every minibatch is replaced by
    randomly mirrored / translated copies (:mod:`model.augment`; rows are
    ``image_shape`` images in C x H x W order). Epoch e draws from
    ``augment.epoch_rng(seed, e)``, a Generator of its own, so the batch order
    and the model's masks are the same with or without augmentation, and an
    epoch's transforms depend on (seed, epoch) only.

    Constraints: after every update the Solver calls the model's
    ``apply_constraints()`` when it has one (the net's max-norm).

    Divergence: if a minibatch loss (or a gradient) is NaN/inf, no update is
    made with it, ``diverged_epoch`` is set and :class:`TrainingDiverged`
    (an ``ArithmeticError`` with ``epoch``, ``iteration``, ``loss``) is raised
    from :meth:`train`; the histories up to the previous epoch stay readable.

    Best model: ``best_val_acc``, ``best_epoch`` and ``best_params`` (copies)
    follow the highest validation accuracy. Training leaves the model at its
    LAST parameters; call :meth:`load_best_params` to put the best ones (and
    their batchnorm running statistics) back into the model, then
    :meth:`evaluate` on the test split.

    :meth:`train_step` is the single update that :meth:`train` runs per
    minibatch (the throughput bench times it directly). Call :meth:`train`
    once per Solver.

    Example:
        >>> solver = Solver(net, data, optim_config={"learning_rate": 1e-3}, num_epochs=5, seed=0)
        >>> solver.train()
        >>> solver.load_best_params()
        >>> test_acc, test_loss = solver.evaluate(data["X_test"], data["y_test"])
    """

    def __init__(  # noqa: C901 - one check per keyword argument, next to the argument it checks
        self,
        model: Any,
        data: Mapping[str, np.ndarray],
        update_rule: str = "adam",
        optim_config: Mapping[str, Any] | None = None,
        lr_decay: float = 1.0,
        batch_size: int = 100,
        num_epochs: int = 10,
        num_train_samples: int | None = 1000,
        num_val_samples: int | None = None,
        seed: int | None = None,
        on_epoch: Callable[[int, dict[str, float]], Any] | None = None,
        verbose: bool = False,
        augment_flip: bool = False,
        augment_shift: int = 0,
        image_shape: tuple[int, int, int] = augment.CIFAR10_IMAGE_SHAPE,
    ) -> None:
        """Validate the set-up; the data is checked once here, not per iteration.

        Args:
            model: The model to train (its params are updated in place).
            data: ``X_train, y_train, X_val, y_val`` (float X of shape (N, D),
                integer y of shape (N,)); other keys are ignored.
            update_rule: ``sgd``, ``sgd_momentum``, ``rmsprop`` or ``adam``.
            optim_config: Passed to the update rule (e.g. ``learning_rate``);
                each parameter gets its own copy.
            lr_decay: Multiplies the learning rate after every epoch, in (0, 1].
            batch_size: Minibatch size (>= 1).
            num_epochs: Epochs to train (>= 1).
            num_train_samples: Training rows for train accuracy (None: all).
            num_val_samples: Validation rows for val metrics (None: all).
            seed: Seeds the batch order, the train-accuracy subsample and
                (with the epoch) the augmentation.
            on_epoch: Called as ``on_epoch(epoch, metrics)``; returning False stops.
            verbose: Print one line per epoch.
            augment_flip: Mirror each training image left-right with probability 1/2.
            augment_shift: Translate each training image by up to this many
                pixels vertically and horizontally (pad-and-crop with zeros);
                0 (default) disables it. In 0..min(H, W) - 1.
            image_shape: (C, H, W) of one row, used only when augmenting;
                C*H*W must equal the rows' feature count.

        Raises:
            ValueError: bad argument, missing data key, mismatched shapes,
                labels outside the model's classes, non-finite inputs.
        """
        self.update_rule = optim.get_update_rule(update_rule)
        self.update_rule_name = update_rule
        for key in ("X_train", "y_train", "X_val", "y_val"):
            if key not in data:
                raise ValueError(f"data must have keys X_train, y_train, X_val, y_val; missing {key!r}")
        for name, value in (("batch_size", batch_size), ("num_epochs", num_epochs)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name, optional in (("num_train_samples", num_train_samples), ("num_val_samples", num_val_samples)):
            if optional is not None and (isinstance(optional, bool) or not isinstance(optional, (int, np.integer))
                                         or optional < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {optional!r}")
        if not isinstance(lr_decay, (int, float, np.floating)) or not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
        if optim_config is not None and not isinstance(optim_config, Mapping):
            raise ValueError(f"optim_config must be a dict or None, got {type(optim_config).__name__}")
        optim.check_config(update_rule, dict(optim_config or {}))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be None or a non-negative int, got {seed!r}")
        lr = (optim_config or {}).get("learning_rate")
        if lr is not None and not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"optim_config['learning_rate'] must be a finite number > 0, got {lr!r}")

        input_dim = getattr(model, "input_dim", None)
        num_classes = getattr(model, "num_classes", None)
        for split in ("train", "val"):
            _check_split(
                f"data['X_{split}']", f"data['y_{split}']", data[f"X_{split}"], data[f"y_{split}"], input_dim, num_classes
            )

        self.image_shape = augment.check_augmentation(
            math.prod(data["X_train"].shape[1:]), image_shape, augment_flip, augment_shift
        )
        self.augment_flip = bool(augment_flip)
        self.augment_shift = int(augment_shift)

        self.model = model
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]
        self.optim_config = dict(optim_config or {})
        self.lr_decay = float(lr_decay)
        self.batch_size = int(batch_size)
        self.num_epochs = int(num_epochs)
        self.num_train_samples = num_train_samples
        self.num_val_samples = num_val_samples
        self.on_epoch = on_epoch
        self.verbose = verbose
        self._rng = np.random.default_rng(seed)
        # With seed None the augmentation still comes from one explicit (random) seed.
        # SeedSequence() draws its entropy from the OS as one int.
        self._augment_seed = seed if seed is not None else cast(int, np.random.SeedSequence().entropy)
        # One fixed validation subset (drawn once), so val metrics compare across epochs.
        self._val_rows: np.ndarray | None = None
        n_val = self.X_val.shape[0]
        if num_val_samples is not None and num_val_samples < n_val:
            self._val_rows = np.sort(self._rng.choice(n_val, num_val_samples, replace=False))
        self._reset()

    def _reset(self) -> None:
        self.epoch = 0
        self.iteration = 0
        self.best_val_acc = -1.0
        self.best_epoch: int | None = None
        self.best_params: dict[str, np.ndarray] = {}
        self._best_norm_stats: list[dict[str, np.ndarray]] = []
        self.loss_history: list[float] = []
        self.train_acc_history: list[float] = []
        self.val_acc_history: list[float] = []
        self.epoch_metrics: list[dict[str, float]] = []
        self.stopped_epoch: int | None = None
        self.diverged_epoch: int | None = None
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}

    # ------------------------------------------------------------------ training
    def train_step(self, X_batch: np.ndarray, y_batch: np.ndarray) -> float:
        """One update on one minibatch; returns its loss.

        Raises:
            TrainingDiverged: the loss or a gradient is NaN/inf (no update made).
        """
        self.iteration += 1
        loss, grads = self.model.loss(X_batch, y_batch)
        bad = None
        if not math.isfinite(loss):
            bad = "non-finite loss"
        else:
            # One BLAS dot per gradient, no temporary: finite iff every element
            # is finite, except when the squares overflow (|g| > ~1e19 in
            # float32), which is divergence too.
            for name, g in grads.items():
                flat = g.reshape(-1)
                if not math.isfinite(float(np.dot(flat, flat))):
                    bad = f"non-finite gradient {name}"
                    break
        if bad is not None:
            self.diverged_epoch = max(self.epoch, 1)
            raise TrainingDiverged(self.diverged_epoch, self.iteration, loss, bad if bad != "non-finite loss" else "")
        params = self.model.params
        for name, w in params.items():
            next_w, self.optim_configs[name] = self.update_rule(w, grads[name], self.optim_configs[name])
            if next_w is not w:  # a rule that is not in place
                params[name] = next_w
        constrain = getattr(self.model, "apply_constraints", None)
        if constrain is not None:
            constrain()
        return loss

    def _batches(self) -> list[np.ndarray]:
        """Index arrays of this epoch's minibatches (one permutation, drop-last)."""
        n = self.X_train.shape[0]
        perm = self._rng.permutation(n)
        if n <= self.batch_size:
            return [perm]
        full = n // self.batch_size
        return [perm[i * self.batch_size : (i + 1) * self.batch_size] for i in range(full)]

    def train(self) -> None:
        """Run ``num_epochs`` epochs (or until ``on_epoch`` returns False).

        Raises:
            TrainingDiverged: see the class docstring.
        """
        for epoch in range(1, self.num_epochs + 1):
            self.epoch = epoch
            t0 = time.perf_counter()
            losses = 0.0
            batches = self._batches()
            augmenting = self.augment_flip or self.augment_shift > 0
            aug_rng = augment.epoch_rng(self._augment_seed, epoch) if augmenting else None
            for idx in batches:
                X_batch = self.X_train[idx]
                if aug_rng is not None:
                    flips, dy, dx = augment.draw_augmentation(
                        len(idx), aug_rng, flip=self.augment_flip, max_shift=self.augment_shift
                    )
                    X_batch = augment.apply_augmentation(X_batch, self.image_shape, flips, dy, dx)
                loss = self.train_step(X_batch, self.y_train[idx])
                self.loss_history.append(loss)
                losses += loss
            train_loss = losses / len(batches)
            lr = self._current_lr()
            # Train-accuracy rows drawn after the permutation, from the same Generator.
            n = self.X_train.shape[0]
            sub = None
            if self.num_train_samples is not None and self.num_train_samples < n:
                sub = np.sort(self._rng.choice(n, self.num_train_samples, replace=False))
            train_acc, _ = self._evaluate(self.X_train, self.y_train, sub)
            val_acc, val_loss = self._evaluate(self.X_val, self.y_val, self._val_rows)
            metrics = {
                "train_acc": train_acc,
                "val_acc": val_acc,
                "train_loss": float(train_loss),
                "val_loss": val_loss,
                "gap": train_acc - val_acc,
                "lr": float(lr) if lr is not None else float("nan"),
                "epoch_seconds": time.perf_counter() - t0,
            }
            self.train_acc_history.append(train_acc)
            self.val_acc_history.append(val_acc)
            self.epoch_metrics.append(metrics)
            if val_acc > self.best_val_acc:
                self.best_val_acc = val_acc
                self.best_epoch = epoch
                self.best_params = {k: v.copy() for k, v in self.model.params.items()}
                self._best_norm_stats = [
                    {k: v.copy() for k, v in p.items() if isinstance(v, np.ndarray)}
                    for p in getattr(self.model, "bn_params", [])
                ]
            if self.verbose:
                print(
                    f"(epoch {epoch}/{self.num_epochs}) loss {train_loss:.4f} train_acc {train_acc:.4f} "
                    f"val_acc {val_acc:.4f} val_loss {val_loss:.4f} lr {metrics['lr']:.3g} "
                    f"({metrics['epoch_seconds']:.2f}s)"
                )
            for config in self.optim_configs.values():
                if "learning_rate" in config:
                    config["learning_rate"] *= self.lr_decay
            if self.on_epoch is not None and self.on_epoch(epoch, metrics) is False:
                self.stopped_epoch = epoch
                break

    def _current_lr(self) -> float | None:
        for config in self.optim_configs.values():
            if "learning_rate" in config:
                return float(config["learning_rate"])
        return None

    def load_best_params(self) -> None:
        """Put ``best_params`` (and their batchnorm running statistics) into the model.

        Raises:
            ValueError: no epoch has been evaluated yet.
        """
        if not self.best_params:
            raise ValueError("no best_params yet: call train() first")
        for k, v in self.best_params.items():
            self.model.params[k] = v.copy()
        for p, stats in zip(getattr(self.model, "bn_params", []), self._best_norm_stats, strict=False):
            for k, v in stats.items():
                p[k] = v.copy()

    # ------------------------------------------------------------------ evaluation
    def _evaluate(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None, batch_size: int = EVAL_BATCH_SIZE
    ) -> tuple[float, float]:
        """Accuracy and mean cross-entropy of the current model, in test mode, in batches."""
        n = X.shape[0] if rows is None else len(rows)
        correct = 0
        loss_sum = 0.0
        for start in range(0, n, batch_size):
            sel = slice(start, start + batch_size) if rows is None else rows[start : start + batch_size]
            Xb, yb = X[sel], y[sel]
            scores = self.model.loss(Xb)
            correct += int(np.count_nonzero(scores.argmax(axis=1) == yb))
            batch_loss, _ = softmax_loss(scores, yb)
            loss_sum += batch_loss * len(yb)
        return correct / n, loss_sum / n

    def evaluate(
        self, X: np.ndarray, y: np.ndarray, num_samples: int | None = None, batch_size: int = EVAL_BATCH_SIZE
    ) -> tuple[float, float]:
        """Accuracy and mean cross-entropy (no L2 term) of the model's CURRENT params.

        Args:
            X: Inputs, shape (N, D).
            y: Integer labels, shape (N,).
            num_samples: Evaluate on this many random rows (Solver's Generator);
                None: all rows.
            batch_size: Rows per forward pass (memory bound only).

        Returns:
            ``(accuracy, mean_loss)``.

        Raises:
            ValueError: mismatched shapes, bad labels, non-finite X, bad sizes.
        """
        X, y = np.asarray(X), np.asarray(y)
        _check_split("X", "y", X, y, getattr(self.model, "input_dim", None), getattr(self.model, "num_classes", None))
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        rows = None
        if num_samples is not None:
            if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
                raise ValueError(f"num_samples must be None or an int >= 1, got {num_samples!r}")
            if num_samples < X.shape[0]:
                rows = np.sort(self._rng.choice(X.shape[0], num_samples, replace=False))
        return self._evaluate(X, y, rows, batch_size)

    def check_accuracy(
        self, X: np.ndarray, y: np.ndarray, num_samples: int | None = None, batch_size: int = EVAL_BATCH_SIZE
    ) -> float:
        """Accuracy of the current params on (X, y), as in cs231n (see :meth:`evaluate`)."""
        return self.evaluate(X, y, num_samples=num_samples, batch_size=batch_size)[0]
