"""FullyConnectedNet: whole-net gradient checks, seeding contract, loss sanity, input validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from model import FullyConnectedNet, layers
from model.gradcheck import eval_numerical_gradient, rel_error

NORMS = [None, "batchnorm", "layernorm"]
KEEP_PROBS = [1.0, 0.75, 0.5]
REGS = [0.0, 3.14]
N, D, H1, H2, C = 4, 5, 6, 7, 3

# Whole-net gradient check settings (float64).
#
# - Reference: the fourth-order stencil with h = 1e-4. With cs231n's two-point
#   difference at h = 1e-5 the rounding noise of f (~1e-11 * |f|) alone gives
#   rel errors of 1e-7..1e-6 on gradient elements of ~1e-5, and such elements
#   occur in most nets: it would fail for reasons that say nothing about the
#   backward pass.
# - ReLU kinks: a difference quotient across a kink is wrong by design, so the
#   point is chosen with every ReLU input at least KINK_MARGIN away from 0
#   (redrawn otherwise; the widest probe, 2h = 2e-4, moves an input by far
#   less). Zero-initialised biases put inputs EXACTLY on the kink (a sample
#   whose whole dropout row is dropped has pre-activation b = 0), hence the
#   jittered biases/gammas/betas.
# - Resolution floor: even the fourth-order reference is only accurate to a
#   few 1e-12 * |f| absolutely, so an element whose gradient is below
#   RESOLUTION * |f| is held to |num - ana| < 1e-7 * RESOLUTION * |f| instead
#   of a relative bound; at most 10 % of the non-zero elements may fall under
#   that floor (asserted; 5.4 % at worst over 270 random nets of these shapes,
#   where the largest error was 3e-8), all others meet rel < 1e-7.
# - batchnorm: the bias feeding a batchnorm layer has an exactly zero gradient
#   (the mean is subtracted right after); it is checked absolutely.
H_STEP = 1e-4
KINK_MARGIN = 2e-2
RESOLUTION = 5e-5
TOL = 1e-7


def relu_inputs(net: FullyConnectedNet, X: np.ndarray) -> list[np.ndarray]:
    """Every hidden layer's ReLU input in train mode, recomputed from model.layers."""
    h, out = X, []
    for i in range(1, net.num_layers):
        z, _ = layers.affine_forward(h, net.params[f"W{i}"], net.params[f"b{i}"])
        if net.normalization == "batchnorm":
            z, _ = layers.batchnorm_forward(z, net.params[f"gamma{i}"], net.params[f"beta{i}"], {"mode": "train"})
        elif net.normalization == "layernorm":
            z, _ = layers.layernorm_forward(z, net.params[f"gamma{i}"], net.params[f"beta{i}"], {})
        out.append(z)
        h = np.maximum(z, 0)
        if net.use_dropout:
            h, _ = layers.dropout_forward(h, net.dropout_params[i - 1])
    return out


def generic_point(case: tuple[int, ...], **net_kwargs) -> tuple[FullyConnectedNet, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case)
    while True:
        X = rng.standard_normal((N, D))
        y = rng.integers(0, C, N)
        net = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, weight_scale=0.3, dtype=np.float64,
                                seed=int(rng.integers(2**31)), dropout_seed=int(rng.integers(2**31)), **net_kwargs)
        for name, p in net.params.items():
            if not name.startswith("W"):
                p += 0.1 * rng.standard_normal(p.shape)
        if min(np.abs(z).min() for z in relu_inputs(net, X)) > KINK_MARGIN:
            return net, X, y


@pytest.mark.parametrize(
    ("normalization", "keep_prob", "reg"), list(itertools.product(NORMS, KEEP_PROBS, REGS))
)
def test_whole_net_gradients(normalization, keep_prob, reg):
    case = (NORMS.index(normalization), KEEP_PROBS.index(keep_prob), REGS.index(reg))
    net, X, y = generic_point(case, normalization=normalization, keep_prob=keep_prob, reg=reg)
    loss, grads = net.loss(X, y)
    assert loss == net.loss(X, y)[0]  # dropout_seed: the function is deterministic
    assert set(grads) == set(net.params)
    floor = RESOLUTION * max(1.0, abs(loss))
    under_floor = nonzero = 0
    for name in sorted(grads):
        ana = grads[name]
        num = eval_numerical_gradient(lambda _: net.loss(X, y)[0], net.params[name], h=H_STEP, order=4)
        if normalization == "batchnorm" and name in [f"b{i}" for i in range(1, net.num_layers)]:
            assert np.abs(ana).max() < 1e-12 and np.abs(num).max() < 1e-9, name
            continue
        err = rel_error(num, ana, floor=floor)
        assert err < TOL, f"{name}: rel error {err:.1e} (cs231n rel_error {rel_error(num, ana):.1e})"
        under_floor += int(np.count_nonzero((ana != 0) & (np.abs(ana) < floor)))
        nonzero += int(np.count_nonzero(ana))
    assert under_floor <= 0.1 * nonzero


def test_gradients_in_float32_close_to_float64():
    """The float32 path computes the same gradients (to float32 accuracy)."""
    kwargs = dict(input_dim=D, num_classes=C, keep_prob=0.5, normalization="batchnorm", reg=0.1,
                  weight_scale=0.3, seed=3, dropout_seed=4)
    X = np.random.default_rng(0).standard_normal((8, D))
    y = np.arange(8) % C
    l64, g64 = FullyConnectedNet([H1, H2], dtype=np.float64, **kwargs).loss(X, y)
    l32, g32 = FullyConnectedNet([H1, H2], dtype=np.float32, **kwargs).loss(X.astype(np.float32), y)
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name in g64:
        assert g32[name].dtype == np.float32
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-3, atol=1e-5, err_msg=name)


# --------------------------------------------------------------------------- seeding
def test_same_seed_same_init_whatever_keep_prob_or_normalization():
    base = FullyConnectedNet([20, 10], input_dim=30, keep_prob=1.0, seed=42)
    for kp, norm in [(0.5, None), (0.8, "batchnorm"), (0.3, "layernorm")]:
        other = FullyConnectedNet([20, 10], input_dim=30, keep_prob=kp, normalization=norm, seed=42)
        for name, value in base.params.items():
            assert np.array_equal(other.params[name], value), name
    different = FullyConnectedNet([20, 10], input_dim=30, seed=43)
    assert not np.array_equal(different.params["W1"], base.params["W1"])


def test_float32_and_float64_nets_share_initial_weights():
    a = FullyConnectedNet([8], input_dim=6, seed=5, dtype=np.float64)
    b = FullyConnectedNet([8], input_dim=6, seed=5, dtype=np.float32)
    np.testing.assert_allclose(b.params["W1"], a.params["W1"], rtol=1e-7)


def test_keep_prob_one_has_no_dropout():
    net = FullyConnectedNet([8, 8], input_dim=6, keep_prob=1.0, seed=0)
    assert not net.use_dropout and net.dropout_params == []
    X = np.random.default_rng(1).standard_normal((5, 6))
    y = np.arange(5) % 10
    assert net.loss(X, y)[0] == net.loss(X, y)[0]


def test_training_masks_vary_per_call_but_are_reproducible():
    X = np.random.default_rng(1).standard_normal((16, 6))
    y = np.arange(16) % 10

    def losses(seed):
        net = FullyConnectedNet([32, 32], input_dim=6, keep_prob=0.5, seed=seed)
        return [net.loss(X, y)[0] for _ in range(3)]

    first = losses(7)
    assert len(set(first)) == 3  # a new mask on every call
    assert losses(7) == first  # ... from a seeded stream
    assert losses(8) != first


def test_dropout_seed_fixes_each_layers_mask():
    net = FullyConnectedNet([30, 30], input_dim=6, keep_prob=0.5, seed=0, dropout_seed=11)
    x = np.ones((4, 30))
    masks = [layers.dropout_forward(x, p)[1][1] for p in net.dropout_params]
    again = [layers.dropout_forward(x, p)[1][1] for p in net.dropout_params]
    assert all(np.array_equal(a, b) for a, b in zip(masks, again, strict=True))
    assert not np.array_equal(masks[0], masks[1])  # a different mask per layer


def test_test_mode_ignores_dropout():
    X = np.random.default_rng(2).standard_normal((10, 6)).astype(np.float32)
    a = FullyConnectedNet([16, 16], input_dim=6, keep_prob=1.0, seed=3).loss(X)
    b = FullyConnectedNet([16, 16], input_dim=6, keep_prob=0.4, seed=3).loss(X)
    assert a.shape == (10, 10) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- loss sanity
@pytest.mark.parametrize("normalization", NORMS)
def test_untrained_loss_is_log_num_classes(normalization):
    X = np.random.default_rng(4).standard_normal((200, 3 * 32 * 32)).astype(np.float32)
    y = np.arange(200) % 10
    net = FullyConnectedNet([100, 50], keep_prob=0.5, normalization=normalization, weight_scale=1e-3, seed=0)
    loss, _ = net.loss(X, y)
    assert abs(loss - math.log(10)) < 0.01


def test_reg_adds_half_l2_of_weights_only():
    X = np.random.default_rng(5).standard_normal((6, 5))
    y = np.arange(6) % 3
    kwargs = dict(input_dim=5, num_classes=3, normalization="batchnorm", dtype=np.float64, seed=1)
    plain = FullyConnectedNet([4], **kwargs)
    reg = FullyConnectedNet([4], reg=0.7, **kwargs)
    for p in (plain, reg):
        p.params["gamma1"][:] = 3.0  # non-weights must not enter the penalty
    l0, g0 = plain.loss(X, y)
    l1, g1 = reg.loss(X, y)
    penalty = 0.5 * 0.7 * sum(np.sum(reg.params[k] ** 2) for k in ("W1", "W2"))
    assert l1 - l0 == pytest.approx(penalty, rel=1e-12)
    np.testing.assert_allclose(g1["W1"] - g0["W1"], 0.7 * reg.params["W1"], atol=1e-12)
    np.testing.assert_array_equal(g1["gamma1"], g0["gamma1"])


def test_layernorm_is_really_applied():
    """With zero biases, a layernorm net's output ignores the input's scale; a plain net's does not."""
    X = np.random.default_rng(6).standard_normal((5, 8))
    for norm, invariant in (("layernorm", True), (None, False)):
        net = FullyConnectedNet([12, 12], input_dim=8, normalization=norm, weight_scale=0.5, dtype=np.float64, seed=0)
        same = np.allclose(net.loss(X), net.loss(7 * X), rtol=1e-6)
        assert same is invariant, norm
    net = FullyConnectedNet([12, 12], input_dim=8, normalization="layernorm", seed=0)
    assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(net.params) and "gamma3" not in net.params


def test_batchnorm_running_stats_move_in_training_only():
    X = np.random.default_rng(7).standard_normal((20, 6)) + 5
    net = FullyConnectedNet([8], input_dim=6, normalization="batchnorm", seed=0)
    net.loss(X)  # test mode before any training: nothing recorded yet
    assert np.array_equal(net.bn_params[0]["running_var"], np.ones(8, dtype=np.float32))
    net.loss(X, np.zeros(20, dtype=int))
    mean_after = net.bn_params[0]["running_mean"].copy()
    assert np.any(mean_after != 0)
    net.loss(X)
    np.testing.assert_array_equal(net.bn_params[0]["running_mean"], mean_after)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"keep_prob": 0.0}, r"keep_prob.*\(0, 1\]"),
        ({"keep_prob": 1.2}, r"keep_prob.*\(0, 1\]"),
        ({"keep_prob": -0.5}, r"keep_prob.*\(0, 1\]"),
        ({"normalization": "none"}, r"normalization.*None, 'batchnorm', 'layernorm'.*'none'"),
        ({"normalization": "groupnorm"}, r"normalization"),
        ({"reg": -1.0}, r"reg"),
        ({"weight_scale": 0.0}, r"weight_scale"),
        ({"dtype": np.int32}, r"dtype"),
        ({"hidden_dims": [10, 0]}, r"hidden_dims"),
        ({"input_dim": 0}, r"input_dim"),
        ({"num_classes": 1}, r"num_classes"),
        ({"seed": -3}, r"seed"),
        ({"dropout_seed": 1.5}, r"dropout_seed"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, pattern):
    args = {"hidden_dims": [10], "input_dim": 6, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        FullyConnectedNet(**args)


@pytest.mark.parametrize(
    ("X", "y", "pattern"),
    [
        (np.zeros((4, 5)), np.zeros(4, dtype=int), r"X must have shape \(N, 6\)"),
        (np.zeros(6), None, r"X must have shape"),
        (np.zeros((4, 6)), np.zeros(3, dtype=int), r"y must have shape \(N,\) = \(4,\)"),
        (np.zeros((4, 6)), np.zeros(4), r"y must hold integer labels"),
        (np.zeros((4, 6)), np.array([0, 1, 10, 2]), r"labels must be in 0\.\.9, got range 0\.\.10"),
        (np.zeros((4, 6)), np.array([0, -1, 2, 2]), r"labels must be in 0\.\.9"),
    ],
)
def test_loss_rejects_bad_inputs(X, y, pattern):
    net = FullyConnectedNet([10], input_dim=6, seed=0)
    with pytest.raises(ValueError, match=pattern):
        net.loss(X, y)
