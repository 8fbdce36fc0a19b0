"""Layer-level checks: numeric gradients in float64, dropout and batchnorm statistics, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from model import layers
from model.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error

TOL = 1e-7  # the bound on relative error, float64 everywhere below
# Numeric reference: the fourth-order stencil at h = 1e-4 (see
# model.gradcheck), whose absolute accuracy is a few 1e-12 of the checked
# scalar sum(f(x) * df). Elements smaller than RESOLUTION times that scalar's
# size are therefore held to an absolute bound (1e-7 * floor) through
# rel_error's floor instead of cs231n's 1e-8; without it, batchnorm's dx
# (whose columns sum to zero, so some elements are ~1e-7) fails the relative
# bound for about 1 seed in 12 with two-point differences. Over 100 seeds per
# layer the worst error with this scheme was 1.4e-8.
RESOLUTION = 5e-5


def check_grad(f, x: np.ndarray, df: np.ndarray, analytic: np.ndarray) -> None:
    num = eval_numerical_gradient_array(f, x, df, h=1e-4, order=4)
    scale = max(1.0, float(np.sum(np.abs(np.asarray(f(x)) * df))))
    err = rel_error(num, analytic, floor=RESOLUTION * scale)
    assert err < TOL, f"rel error {err:.1e} (cs231n rel_error {rel_error(num, analytic):.1e})"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def away_from_zero(x: np.ndarray, margin: float = 1e-2) -> np.ndarray:
    """Push entries out of (-margin, margin): a 1e-5 step must not cross the ReLU kink."""
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin * 2, x)


# --------------------------------------------------------------------------- gradients
def test_affine_gradients():
    r = rng(1)
    x = r.standard_normal((4, 3, 5))  # trailing dims are flattened to D = 15
    w = r.standard_normal((15, 6))
    b = r.standard_normal(6)
    dout = r.standard_normal((4, 6))
    out, cache = layers.affine_forward(x, w, b)
    np.testing.assert_allclose(out, x.reshape(4, -1) @ w + b)
    dx, dw, db = layers.affine_backward(dout, cache)
    assert dx.shape == x.shape
    check_grad(lambda a: layers.affine_forward(a, w, b)[0], x, dout, dx)
    check_grad(lambda a: layers.affine_forward(x, a, b)[0], w, dout, dw)
    check_grad(lambda a: layers.affine_forward(x, w, a)[0], b, dout, db)
    none_dx, dw2, db2 = layers.affine_backward(dout, cache, need_dx=False)
    assert none_dx is None and np.array_equal(dw2, dw) and np.array_equal(db2, db)


def test_relu_gradient():
    r = rng(2)
    x = away_from_zero(r.standard_normal((6, 7)))
    dout = r.standard_normal((6, 7))
    out, cache = layers.relu_forward(x)
    assert np.array_equal(out, np.where(x > 0, x, 0))
    dx = layers.relu_backward(dout, cache)
    check_grad(lambda a: layers.relu_forward(a)[0], x, dout, dx)


@pytest.mark.parametrize("backward", [layers.batchnorm_backward, layers.batchnorm_backward_alt])
def test_batchnorm_gradients(backward):
    r = rng(3)
    n, d = 8, 5
    x = 4 * r.standard_normal((n, d)) + 3
    gamma = r.standard_normal(d)
    beta = r.standard_normal(d)
    dout = r.standard_normal((n, d))

    def fwd(xx, gg, bb):
        return layers.batchnorm_forward(xx, gg, bb, {"mode": "train"})[0]

    _, cache = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dx, dgamma, dbeta = backward(dout, cache)
    check_grad(lambda a: fwd(a, gamma, beta), x, dout, dx)
    check_grad(lambda a: fwd(x, a, beta), gamma, dout, dgamma)
    check_grad(lambda a: fwd(x, gamma, a), beta, dout, dbeta)


def test_batchnorm_alt_matches_step_by_step():
    r = rng(4)
    x = r.standard_normal((50, 20))
    gamma, beta = r.standard_normal(20), r.standard_normal(20)
    dout = r.standard_normal((50, 20))
    _, cache = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for a, b in zip(layers.batchnorm_backward(dout, cache), layers.batchnorm_backward_alt(dout, cache), strict=True):
        assert rel_error(a, b) < 1e-10


def test_layernorm_gradients():
    r = rng(5)
    n, d = 4, 7
    x = 3 * r.standard_normal((n, d)) - 2
    gamma = r.standard_normal(d)
    beta = r.standard_normal(d)
    dout = r.standard_normal((n, d))

    def fwd(xx, gg, bb):
        return layers.layernorm_forward(xx, gg, bb, {})[0]

    _, cache = layers.layernorm_forward(x, gamma, beta, {})
    dx, dgamma, dbeta = layers.layernorm_backward(dout, cache)
    check_grad(lambda a: fwd(a, gamma, beta), x, dout, dx)
    check_grad(lambda a: fwd(x, a, beta), gamma, dout, dgamma)
    check_grad(lambda a: fwd(x, gamma, a), beta, dout, dbeta)


@pytest.mark.parametrize("keep_prob", [0.3, 0.75, 1.0])
def test_dropout_gradient_with_fixed_seed(keep_prob):
    r = rng(6)
    x = r.standard_normal((10, 10)) + 10
    dout = r.standard_normal((10, 10))
    param = {"mode": "train", "keep_prob": keep_prob, "seed": 123}
    _, cache = layers.dropout_forward(x, param)
    dx = layers.dropout_backward(dout, cache)
    check_grad(lambda a: layers.dropout_forward(a, param)[0], x, dout, dx)


@pytest.mark.parametrize("keep_prob", [0.6, 1.0])
def test_relu_dropout_fused_gradient(keep_prob):
    r = rng(17)
    x = away_from_zero(r.standard_normal((9, 8)))
    dout = r.standard_normal((9, 8))
    param = {"mode": "train", "keep_prob": keep_prob, "seed": 5}
    _, cache = layers.relu_dropout_forward(x, param)
    dx = layers.relu_dropout_backward(dout, cache)
    check_grad(lambda a: layers.relu_dropout_forward(a, param)[0], x, dout, dx)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_relu_dropout_fused_equals_the_pair(mode):
    r = rng(18)
    x = r.standard_normal((40, 30)).astype(np.float32)
    dout = r.standard_normal((40, 30)).astype(np.float32)
    fused_param = {"mode": mode, "keep_prob": 0.4, "rng": rng(3)}
    pair_param = {"mode": mode, "keep_prob": 0.4, "rng": rng(3)}  # same stream: same mask
    out, cache = layers.relu_dropout_forward(x, fused_param)
    relu_out, relu_cache = layers.relu_forward(x)
    ref, drop_cache = layers.dropout_forward(relu_out, pair_param)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    ref_dx = layers.relu_backward(layers.dropout_backward(dout, drop_cache), relu_cache)
    np.testing.assert_array_equal(layers.relu_dropout_backward(dout, cache), ref_dx)


def test_softmax_loss_gradient_and_value():
    r = rng(7)
    n, c = 9, 6
    scores = r.standard_normal((n, c))
    y = r.integers(0, c, n)
    loss, dscores = layers.softmax_loss(scores, y)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probs[np.arange(n), y]).mean(), rel=1e-12)
    num = eval_numerical_gradient(lambda s: layers.softmax_loss(s, y)[0], scores, h=1e-4, order=4)
    assert rel_error(dscores, num) < TOL
    # Large scores must not overflow (the max is subtracted first).
    big_loss, big_d = layers.softmax_loss(scores * 1e4, y)
    assert np.isfinite(big_loss) and np.isfinite(big_d).all()


# --------------------------------------------------------------------------- dropout statistics
@pytest.mark.parametrize("keep_prob", [0.25, 0.4, 0.7])
def test_dropout_statistics(keep_prob):
    x = rng(8).standard_normal((500, 500)) + 10
    param = {"mode": "train", "keep_prob": keep_prob, "rng": rng(9)}
    out, _ = layers.dropout_forward(x, param)
    assert abs(np.mean(out == 0) - (1 - keep_prob)) < 0.01
    assert abs(out.mean() - x.mean()) < 0.01 * x.mean()  # inverted: E[out] = x
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / keep_prob)
    test_out, _ = layers.dropout_forward(x, {"mode": "test", "keep_prob": keep_prob})
    assert np.array_equal(test_out, x)


def test_dropout_masks_seed_fixes_rng_advances():
    x = np.ones((40, 30))
    fixed = {"mode": "train", "keep_prob": 0.5, "seed": 7}
    assert np.array_equal(layers.dropout_forward(x, fixed)[0], layers.dropout_forward(x, fixed)[0])
    moving = {"mode": "train", "keep_prob": 0.5, "rng": rng(7)}
    assert not np.array_equal(layers.dropout_forward(x, moving)[0], layers.dropout_forward(x, moving)[0])
    # Same generator seed, same sequence of masks.
    again = {"mode": "train", "keep_prob": 0.5, "rng": rng(7)}
    moving2 = {"mode": "train", "keep_prob": 0.5, "rng": rng(7)}
    assert np.array_equal(layers.dropout_forward(x, again)[0], layers.dropout_forward(x, moving2)[0])


def test_dropout_keep_prob_one_draws_nothing():
    gen = rng(10)
    state = gen.bit_generator.state
    x = rng(11).standard_normal((5, 5))
    out, _ = layers.dropout_forward(x, {"mode": "train", "keep_prob": 1.0, "rng": gen})
    assert np.array_equal(out, x)
    assert gen.bit_generator.state == state


@pytest.mark.parametrize("keep_prob", [0.0, -0.1, 1.5, float("nan")])
def test_dropout_rejects_bad_keep_prob(keep_prob):
    with pytest.raises(ValueError, match=r"keep_prob.*\(0, 1\]"):
        layers.dropout_forward(np.ones((2, 2)), {"mode": "train", "keep_prob": keep_prob, "seed": 0})


def test_dropout_needs_a_mask_source():
    with pytest.raises(ValueError, match=r"rng.*seed"):
        layers.dropout_forward(np.ones((2, 2)), {"mode": "train", "keep_prob": 0.5})


# --------------------------------------------------------------------------- batchnorm statistics
def test_batchnorm_train_mode_statistics():
    r = rng(12)
    x = r.standard_normal((200, 3)) @ r.standard_normal((3, 4)) * 5 + 12
    gamma = np.array([1.0, 2.0, 3.0, 0.5])
    beta = np.array([0.0, -1.0, 4.0, 11.0])
    out, _ = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-8)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-3)


def test_batchnorm_running_statistics_used_in_test_mode():
    r = rng(13)
    n, d_in, h = 200, 50, 60
    w1 = r.standard_normal((d_in, h))
    w2 = r.standard_normal((h, 3))
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(3), np.zeros(3)

    def data(gen, rows=n):
        a = np.maximum(gen.standard_normal((rows, d_in)) @ w1, 0)
        return a @ w2 + np.array([5.0, -20.0, 0.0])

    for _ in range(50):
        layers.batchnorm_forward(data(r), gamma, beta, bn_param)
    bn_param["mode"] = "test"
    # A large test batch, so its own sampling noise stays well inside the tolerance.
    out, _ = layers.batchnorm_forward(data(r, 5000), gamma, beta, bn_param)
    assert np.all(np.abs(out.mean(axis=0)) < 0.1)
    assert np.all(np.abs(out.std(axis=0) - 1) < 0.1)
    # Test mode really uses the running statistics, not the batch's.
    shifted, _ = layers.batchnorm_forward(data(r) + 100.0, gamma, beta, bn_param)
    assert np.all(shifted.mean(axis=0) > 1)


def test_batchnorm_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        layers.batchnorm_forward(np.ones((2, 2)), np.ones(2), np.zeros(2), {"mode": "eval"})


def test_layernorm_normalizes_rows():
    x = rng(14).standard_normal((6, 40)) * 7 + 3
    out, _ = layers.layernorm_forward(x, np.ones(40), np.zeros(40), {})
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=1), 1, rtol=1e-3)


# --------------------------------------------------------------------------- dtypes
def test_float32_stays_float32():
    r = rng(15)
    x = r.standard_normal((8, 6)).astype(np.float32)
    w = r.standard_normal((6, 5)).astype(np.float32)
    b = np.zeros(5, np.float32)
    g, be = np.ones(5, np.float32), np.zeros(5, np.float32)
    out, ac = layers.affine_forward(x, w, b)
    bn_param = {"mode": "train"}
    bn, bc = layers.batchnorm_forward(out, g, be, bn_param)
    ln, lc = layers.layernorm_forward(out, g, be, {})
    re, rc = layers.relu_forward(bn)
    dr, dc = layers.dropout_forward(re, {"mode": "train", "keep_prob": 0.5, "rng": r})
    loss, ds = layers.softmax_loss(dr, np.array([0, 1, 2, 3, 4, 0, 1, 2]))
    for arr in (out, bn, ln, re, dr, ds, bn_param["running_mean"], bn_param["running_var"],
                layers.dropout_backward(ds, dc), layers.relu_backward(ds, rc),
                *layers.batchnorm_backward_alt(ds, bc), *layers.layernorm_backward(ds, lc),
                *layers.affine_backward(ds, ac)):
        assert arr.dtype == np.float32
    assert isinstance(loss, float)


def test_layers_do_not_write_into_inputs():
    r = rng(16)
    x = r.standard_normal((6, 4))
    x.setflags(write=False)  # like a read-only memmap minibatch
    g, b = np.ones(4), np.zeros(4)
    layers.affine_forward(x, np.ones((4, 3)), np.zeros(3))
    layers.relu_forward(x)
    layers.batchnorm_forward(x, g, b, {"mode": "train"})
    layers.layernorm_forward(x, g, b, {})
    layers.dropout_forward(x, {"mode": "train", "keep_prob": 0.5, "seed": 1})
    layers.softmax_loss(x, np.zeros(6, dtype=int))
