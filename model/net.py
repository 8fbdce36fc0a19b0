"""FullyConnectedNet: ``[input dropout] - {affine - [norm] - relu - [dropout]} x (L-1) - affine - softmax``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from model import layers

__all__ = ["NORMALIZATIONS", "FullyConnectedNet", "project_max_norm"]

NORMALIZATIONS = (None, "batchnorm", "layernorm")


def _check_seed(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be None or a non-negative int, got {value!r}")


# Rows per float32 partial sum of squares in project_max_norm (see there).
_NORM_BLOCK = 64


def _column_sq_norms(w: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every column of w (D, M), as float64 (M,).

    float32 columns are summed in blocks of ``_NORM_BLOCK`` rows whose sums
    are added in float64: one plain float32 sum down 3072 rows is off by
    ~3e-6 relative (too much for a bound checked to 1e-6), the blocked one
    by ~7e-8, at the same speed (a float64 pass costs 10x more).
    """
    d, m = w.shape
    if w.dtype == np.float64 or d <= _NORM_BLOCK:
        return np.einsum("ij,ij->j", w, w).astype(np.float64)
    full = d - d % _NORM_BLOCK
    blocks = w[:full].reshape(-1, _NORM_BLOCK, m)
    sq = np.einsum("bij,bij->bj", blocks, blocks).sum(axis=0, dtype=np.float64)
    if full < d:
        sq += np.einsum("ij,ij->j", w[full:], w[full:])
    return sq


def project_max_norm(w: np.ndarray, max_norm: float) -> np.ndarray:
    """Scale every column of ``w`` whose L2 norm exceeds ``max_norm`` down to it, in place.

    A column of W (shape (D, M)) is the incoming weight vector of one unit,
    so this is the projection onto Srivastava et al.'s max-norm ball
    ``||w_j|| <= c`` for every unit j. Columns inside the ball are untouched
    (bit for bit); a projected column's norm is c to ~1e-7 relative in
    float32 (rounding of the scaled elements), ~1e-15 in float64.

    Returns:
        w itself.
    """
    sq = _column_sq_norms(w)
    over = sq > max_norm * max_norm
    if over.any():
        factor = np.ones_like(sq)
        factor[over] = max_norm / np.sqrt(sq[over])
        w *= factor.astype(w.dtype)
    return w


class FullyConnectedNet:
    """A fully-connected net with optional input dropout, batch/layer norm, dropout and max-norm.

    Parameters live in ``self.params`` as ``W1, b1, ..., WL, bL`` and, with a
    normalization, ``gamma1, beta1, ..., gamma{L-1}, beta{L-1}``. The loss is
    softmax cross-entropy plus ``0.5 * reg * sum(W**2)`` over the weights only.

    Randomness: ``seed`` is split (``SeedSequence.spawn``) into independent
    streams, one for weight init, one per hidden dropout layer and one for
    input dropout (spawned last, so it shifts none of the others). So two
    nets with the same ``seed`` start from identical parameters and draw
    identical hidden masks whatever their ``keep_prob``, ``input_keep_prob``,
    ``max_norm`` or ``normalization`` (the paired ablation relies on it),
    and a keep probability of 1.0 draws no masks at all. Training masks
    advance from call to call; ``dropout_seed`` instead fixes every layer's
    mask (a different one per layer) on every call, for gradient checks.

    Max-norm: with ``max_norm=c`` the incoming weight vector of every HIDDEN
    unit (each column of W1..W{L-1}) is kept at L2 norm <= c by
    :meth:`apply_constraints`, which the Solver calls after every update
    (Srivastava et al. 2014, section 5.1: "constraining the norm of the
    incoming weight vector at each hidden unit"). The output layer W{L},
    biases, gammas and betas are not constrained; with batch/layernorm the
    constraint still applies to the W feeding the normalization. The initial
    weights are not projected, so arms with and without max-norm start equal.

    Example:
        >>> net = FullyConnectedNet([64, 32], input_dim=20, keep_prob=0.5, seed=0)
        >>> X = np.zeros((4, 20), np.float32); y = np.array([0, 1, 2, 3])
        >>> loss, grads = net.loss(X, y)      # train mode
        >>> scores = net.loss(X)              # test mode, shape (4, 10)
    """

    def __init__(  # noqa: C901 - one check per constructor argument (cs231n's signature), next to the argument it checks
        self,
        hidden_dims: Sequence[int],
        input_dim: int = 3 * 32 * 32,
        num_classes: int = 10,
        keep_prob: float = 1.0,
        normalization: str | None = None,
        reg: float = 0.0,
        weight_scale: float = 1e-2,
        dtype: Any = np.float32,
        seed: int | None = None,
        dropout_seed: int | None = None,
        input_keep_prob: float = 1.0,
        max_norm: float | None = None,
    ) -> None:
        """Build the net and draw its initial weights.

        Args:
            hidden_dims: Width of each hidden layer (positive ints; may be empty).
            input_dim: Input features D (a row of X is flattened to D).
            num_classes: Number of classes C (>= 2).
            keep_prob: Probability of KEEPING a hidden unit, in (0, 1];
                1.0 means no dropout.
            normalization: None, 'batchnorm' or 'layernorm'.
            reg: L2 strength (>= 0).
            weight_scale: Std of the normal weight init (> 0); biases start at 0,
                gammas at 1, betas at 0.
            dtype: Floating dtype of params and computation (float32 for
                speed, float64 for gradient checks).
            seed: Seeds init and the training masks (None: fresh entropy).
            dropout_seed: When set, every dropout mask is fixed per layer.
            input_keep_prob: Probability of KEEPING an input feature, in (0, 1]
                (inverted dropout on X, train mode only); 1.0 means none.
            max_norm: Bound c > 0 on the L2 norm of each hidden unit's
                incoming weights, enforced after every update; None: no bound.

        Raises:
            ValueError: an argument outside the ranges above.
        """
        hidden_dims = list(hidden_dims)
        for h in hidden_dims:
            if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
                raise ValueError(f"hidden_dims must be positive ints, got {hidden_dims!r}")
        for name, value, low in (("input_dim", input_dim, 1), ("num_classes", num_classes, 2)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not isinstance(keep_prob, (int, float, np.floating)) or not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1] (probability of keeping a unit), got {keep_prob!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of None, 'batchnorm', 'layernorm', got {normalization!r}")
        if not isinstance(reg, (int, float, np.floating)) or not (math.isfinite(reg) and reg >= 0):
            raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
        if not isinstance(weight_scale, (int, float, np.floating)) or not (
            math.isfinite(weight_scale) and weight_scale > 0
        ):
            raise ValueError(f"weight_scale must be a finite number > 0, got {weight_scale!r}")
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"dtype must be a floating numpy dtype, got {dtype!r}") from None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        _check_seed("seed", seed)
        _check_seed("dropout_seed", dropout_seed)
        if (
            isinstance(input_keep_prob, bool)
            or not isinstance(input_keep_prob, (int, float, np.floating))
            or not 0.0 < input_keep_prob <= 1.0
        ):
            raise ValueError(
                f"input_keep_prob must be in (0, 1] (probability of keeping an input feature), got {input_keep_prob!r}"
            )
        if max_norm is not None and (
            isinstance(max_norm, bool)
            or not isinstance(max_norm, (int, float, np.floating))
            or not (math.isfinite(max_norm) and max_norm > 0)
        ):
            raise ValueError(f"max_norm must be None or a finite number > 0, got {max_norm!r}")

        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.input_dim = int(input_dim)
        self.num_classes = int(num_classes)
        self.keep_prob = float(keep_prob)
        self.normalization = normalization
        self.reg = float(reg)
        self.dtype = dtype
        self.num_layers = len(self.hidden_dims) + 1
        self.use_dropout = self.keep_prob != 1.0
        self.input_keep_prob = float(input_keep_prob)
        self.max_norm = None if max_norm is None else float(max_norm)

        root_seq = np.random.SeedSequence(seed)
        init_seq, mask_seq = root_seq.spawn(2)
        # Spawned after the two above (spawn_key (2,)), so it changes neither.
        (input_mask_seq,) = root_seq.spawn(1)
        init_rng = np.random.default_rng(init_seq)
        dims = [self.input_dim, *self.hidden_dims, self.num_classes]
        self.params: dict[str, np.ndarray] = {}
        for i in range(self.num_layers):
            # Drawn in float64 and cast, so float32 and float64 nets with one
            # seed start from the same weights (up to rounding).
            w = weight_scale * init_rng.standard_normal((dims[i], dims[i + 1]))
            self.params[f"W{i + 1}"] = w.astype(dtype)
            self.params[f"b{i + 1}"] = np.zeros(dims[i + 1], dtype=dtype)
        if normalization is not None:
            for i in range(self.num_layers - 1):
                self.params[f"gamma{i + 1}"] = np.ones(dims[i + 1], dtype=dtype)
                self.params[f"beta{i + 1}"] = np.zeros(dims[i + 1], dtype=dtype)

        n_hidden = self.num_layers - 1
        self.dropout_params: list[dict[str, Any]] = []
        if self.use_dropout:
            for i, child in enumerate(mask_seq.spawn(n_hidden)):
                param: dict[str, Any] = {"mode": "train", "keep_prob": self.keep_prob}
                if dropout_seed is not None:
                    param["seed"] = [int(dropout_seed), i]
                else:
                    param["rng"] = np.random.default_rng(child)
                self.dropout_params.append(param)
        # Input dropout: None when input_keep_prob is 1 (no mask drawn, X used as is).
        self.input_dropout_param: dict[str, Any] | None = None
        if self.input_keep_prob != 1.0:
            self.input_dropout_param = {"mode": "train", "keep_prob": self.input_keep_prob}
            if dropout_seed is not None:
                # Hidden layers use [dropout_seed, 0..n_hidden-1]; the input comes after them.
                self.input_dropout_param["seed"] = [int(dropout_seed), n_hidden]
            else:
                self.input_dropout_param["rng"] = np.random.default_rng(input_mask_seq)
        # Running statistics (batchnorm) or just eps (layernorm), one dict per hidden layer.
        self.bn_params: list[dict[str, Any]] = []
        if normalization is not None:
            self.bn_params = [{"mode": "train"} for _ in range(n_hidden)]

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, X: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Shapes, dtypes and label range; O(N) on labels, O(1) on X."""
        X = np.asarray(X)
        if X.ndim < 2 or math.prod(X.shape[1:]) != self.input_dim:
            raise ValueError(
                f"X must have shape (N, {self.input_dim}) (or (N, ...) with {self.input_dim} "
                f"features per row), got {X.shape}"
            )
        if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
            raise ValueError(f"X must be a real numeric array, got dtype {X.dtype}")
        if X.dtype != self.dtype:
            X = X.astype(self.dtype)
        if y is None:
            return X, None
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape (N,) = ({X.shape[0]},) to match X, got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"y labels must be in 0..{self.num_classes - 1}, got range {y.min()}..{y.max()}"
            )
        return X, y

    # ------------------------------------------------------------------ constraints
    def apply_constraints(self) -> None:
        """Project W1..W{L-1} onto the max-norm ball in place (no-op without ``max_norm``).

        The Solver calls this after every update; see the class docstring.
        """
        if self.max_norm is None:
            return
        for i in range(1, self.num_layers):
            project_max_norm(self.params[f"W{i}"], self.max_norm)

    # ------------------------------------------------------------------ loss
    @overload
    def loss(self, X: np.ndarray, y: None = None) -> np.ndarray: ...
    @overload
    def loss(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]: ...
    def loss(  # noqa: C901 - forward then backward through each layer kind in one pass, the cs231n shape students compare with
        self, X: np.ndarray, y: np.ndarray | None = None
    ) -> np.ndarray | tuple[float, dict[str, np.ndarray]]:
        """Scores (test mode) or loss and gradients (train mode).

        Args:
            X: Inputs, shape (N, input_dim) (any trailing shape of that size).
            y: Integer labels in [0, num_classes), shape (N,); None selects test
                mode (no dropout, batchnorm running statistics).

        Returns:
            Without y: scores of shape (N, num_classes). With y: ``(loss,
            grads)`` where grads has the keys and shapes of ``self.params``.

        Raises:
            ValueError: wrong shape of X or y, non-integer or out-of-range labels.
        """
        X, y = self._check_inputs(X, y)
        mode = "test" if y is None else "train"
        for p in self.bn_params:
            p["mode"] = mode
        for p in self.dropout_params:
            p["mode"] = mode
        params = self.params
        norm = self.normalization

        h = X
        if mode == "train" and self.input_dropout_param is not None:
            # No backward needed: the input gradient is never used.
            h, _ = layers.dropout_forward(X, self.input_dropout_param)
        caches = []
        for i in range(1, self.num_layers):
            h, aff_cache = layers.affine_forward(h, params[f"W{i}"], params[f"b{i}"])
            norm_cache = None
            if norm == "batchnorm":
                h, norm_cache = layers.batchnorm_forward(
                    h, params[f"gamma{i}"], params[f"beta{i}"], self.bn_params[i - 1]
                )
            elif norm == "layernorm":
                h, norm_cache = layers.layernorm_forward(
                    h, params[f"gamma{i}"], params[f"beta{i}"], self.bn_params[i - 1]
                )
            if self.use_dropout:  # one fused op: its backward is a single multiply
                h, act_cache = layers.relu_dropout_forward(h, self.dropout_params[i - 1])
            else:
                h, act_cache = layers.relu_forward(h)
            caches.append((aff_cache, norm_cache, act_cache))
        L = self.num_layers
        scores, last_cache = layers.affine_forward(h, params[f"W{L}"], params[f"b{L}"])
        if y is None:
            return scores

        loss, dscores = layers.softmax_loss(scores, y)
        grads: dict[str, np.ndarray] = {}
        dh, grads[f"W{L}"], grads[f"b{L}"] = layers.affine_backward(dscores, last_cache)
        for i in range(L - 1, 0, -1):
            aff_cache, norm_cache, act_cache = caches[i - 1]
            assert dh is not None  # need_dx was true for every layer above the first
            dh = (layers.relu_dropout_backward(dh, act_cache) if self.use_dropout
                  else layers.relu_backward(dh, act_cache))
            if norm == "batchnorm":
                dh, grads[f"gamma{i}"], grads[f"beta{i}"] = layers.batchnorm_backward_alt(dh, norm_cache)
            elif norm == "layernorm":
                dh, grads[f"gamma{i}"], grads[f"beta{i}"] = layers.layernorm_backward(dh, norm_cache)
            # The input gradient of the first layer is never used.
            dh, grads[f"W{i}"], grads[f"b{i}"] = layers.affine_backward(dh, aff_cache, need_dx=i > 1)

        if self.reg:
            for i in range(1, L + 1):
                w = params[f"W{i}"]
                flat = w.ravel()
                loss += 0.5 * self.reg * float(np.dot(flat, flat))
                grads[f"W{i}"] += self.reg * w
        return loss, grads
