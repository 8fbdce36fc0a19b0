"""`sweep check` on cs231n layer functions: values against model.layers, numeric gradients, properties.

Each ``check_*`` takes the module under test, a :class:`Caller` and a
Generator for its inputs, and yields one :class:`Finding` per property.
Inputs are float64 and small, so numeric gradients are exact to ~1e-10.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from model import layers as ref
from sweep.check.common import Caller, Checks, Finding, close, grad_error, grad_findings, max_rel

EPS = 1e-5
MOMENTUM = 0.7  # not cs231n's default 0.9, so a function that ignores bn_param['momentum'] shows


def _away_from_zero(x: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Entries pushed out of (-margin, margin): the numeric stencil must not straddle a ReLU kink."""
    return np.where(np.abs(x) < margin, np.where(x < 0, -2 * margin, 2 * margin), x)


def _backward_grads(call: Caller, name: str, of: str, fwd: Any, bwd: Any, inputs: dict[str, np.ndarray],
                    dout: np.ndarray, cache: Any, names: tuple[str, ...]) -> Finding:
    """Compare ``bwd(dout, cache)`` with numeric gradients of ``fwd(*inputs)[0]`` for each input."""
    grads = call(bwd, dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    errors: dict[str, float] = {}
    shapes: dict[str, tuple[str, str]] = {}
    for gname, key, g in zip(names, inputs, grads, strict=False):
        def f(v: np.ndarray, key: str = key) -> Any:
            return call(fwd, *({**inputs, key: v}).values())[0]
        errors[gname] = grad_error(f, inputs[key], dout, g)
        if np.shape(g) != inputs[key].shape:
            shapes[gname] = (str(np.shape(g)), str(inputs[key].shape))
    for gname in names[len(grads):]:
        errors[gname] = float("inf")
    return grad_findings(name, of, errors, shapes)


def check_affine(mod: ModuleType, call: Caller, rng: np.random.Generator) -> Checks:
    x = rng.standard_normal((4, 2, 3))  # (N, d1, d2): the forward must flatten it
    w, b = rng.standard_normal((6, 5)), rng.standard_normal(5)
    out, cache = call(mod.affine_forward, x, w, b)
    err = max_rel(out, ref.affine_forward(x, w, b)[0])
    if err < 1e-7:
        yield Finding(True, "affine_forward: x.reshape(N, -1) @ w + b, also for x of shape (N, d1, d2)")
    else:
        yield Finding(False, f"affine_forward: output for x of shape {x.shape}, w {w.shape} differs from "
                             f"x.reshape(N, -1) @ w + b (shape {np.shape(out)}, max rel. error {err:.1e})")
    if hasattr(mod, "affine_backward"):
        dout = rng.standard_normal((4, 5))
        yield _backward_grads(call, "affine_backward", "affine_forward", mod.affine_forward, mod.affine_backward,
                              {"x": x, "w": w, "b": b}, dout, cache, ("dx", "dw", "db"))


def check_relu(mod: ModuleType, call: Caller, rng: np.random.Generator) -> Checks:
    x = _away_from_zero(rng.standard_normal((5, 6)))
    out, cache = call(mod.relu_forward, x)
    if close(out, np.maximum(x, 0)):
        yield Finding(True, "relu_forward: max(x, 0)")
    else:
        yield Finding(False, f"relu_forward: output differs from max(x, 0) "
                             f"(max rel. error {max_rel(out, np.maximum(x, 0)):.1e})")
    if hasattr(mod, "relu_backward"):
        yield _backward_grads(call, "relu_backward", "relu_forward", mod.relu_forward, mod.relu_backward,
                              {"x": x}, rng.standard_normal(x.shape), cache, ("dx",))


def check_affine_relu(mod: ModuleType, call: Caller, rng: np.random.Generator) -> Checks:
    for _ in range(20):  # pre-activations off the ReLU kink, so the numeric gradient is exact
        x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 5)), rng.standard_normal(5)
        if np.min(np.abs(x @ w + b)) > 0.05:
            break
    expected = np.maximum(x @ w + b, 0)
    out, cache = call(mod.affine_relu_forward, x, w, b)
    if close(out, expected):
        yield Finding(True, "affine_relu_forward: relu(affine(x))")
    else:
        yield Finding(False, f"affine_relu_forward: output differs from max(x @ w + b, 0) "
                             f"(max rel. error {max_rel(out, expected):.1e})")
    if hasattr(mod, "affine_relu_backward"):
        yield _backward_grads(call, "affine_relu_backward", "affine_relu_forward", mod.affine_relu_forward,
                              mod.affine_relu_backward, {"x": x, "w": w, "b": b}, rng.standard_normal((4, 5)),
                              cache, ("dx", "dw", "db"))


def svm_loss_reference(x: np.ndarray, y: np.ndarray) -> float:
    """cs231n's multiclass SVM loss: mean over examples of sum_j max(0, x_j - x_y + 1), j != y."""
    n = x.shape[0]
    margins = np.maximum(0, x - x[np.arange(n), y][:, None] + 1.0)
    margins[np.arange(n), y] = 0
    return float(margins.sum() / n)


def _check_loss(mod: ModuleType, call: Caller, rng: np.random.Generator, name: str, reference: Any) -> Checks:
    n, c = 6, 4
    x, y = rng.standard_normal((n, c)), rng.integers(0, c, n)
    loss, dx = call(getattr(mod, name), x, y)
    expected = reference(x, y)
    if abs(float(loss) - expected) <= 1e-7 * max(1.0, abs(expected)):
        yield Finding(True, f"{name}: loss matches the reference (averaged over the batch)")
    elif abs(float(loss) - n * expected) <= 1e-7 * n * max(1.0, abs(expected)):
        yield Finding(False, f"{name}: loss is {float(loss):.6g}, {n} times the reference {expected:.6g} for N={n}: "
                             f"it sums over the batch; cs231n averages (divide by N)")
    else:
        yield Finding(False, f"{name}: loss is {float(loss):.6g}, the reference gives {expected:.6g} (N={n}, C={c})")
    err = grad_error(lambda a: call(getattr(mod, name), a, y)[0], x, None, dx)
    yield grad_findings(name, "its loss", {"dx": err},
                        {"dx": (str(np.shape(dx)), str(x.shape))} if np.shape(dx) != x.shape else None)


def check_softmax_loss(mod: ModuleType, call: Caller, rng: np.random.Generator) -> Checks:
    yield from _check_loss(mod, call, rng, "softmax_loss", lambda x, y: ref.softmax_loss(x, y)[0])


def check_svm_loss(mod: ModuleType, call: Caller, rng: np.random.Generator) -> Checks:
    yield from _check_loss(mod, call, rng, "svm_loss", svm_loss_reference)


# --------------------------------------------------------------------------- batch norm
def _normalized(x: np.ndarray, axis: int, ddof: int = 0) -> np.ndarray:
    mean = x.mean(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axis, ddof=ddof, keepdims=True) + EPS)


def _norm_diagnosis(out: Any, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, expected_axis: int) -> str:
    """What a wrong normalization computes instead, in words, when it is a known mistake."""
    n = x.shape[0]
    for axis, ddof, words in (
        (expected_axis, 1, "the unbiased variance (ddof=1, divide by N-1); it must divide by N (np.var's default)"
         if expected_axis == 0 else "the unbiased variance (ddof=1, divide by D-1); it must divide by D"),
        (1 - expected_axis, 0, "each feature over the batch (axis 0), which is batch norm; layer norm normalizes "
         "each example over its D features (axis 1)" if expected_axis == 1 else
         "each example over its features (axis 1), which is layer norm; batch norm normalizes each feature over "
         "the batch (axis 0)"),
    ):
        if close(out, gamma * _normalized(x, axis, ddof) + beta, 1e-6):
            return "it normalizes with " + words if ddof else "it normalizes " + words
    if close(out, _normalized(x, expected_axis) + 0 * gamma, 1e-6):
        return "gamma and beta are not applied (out = gamma * xhat + beta)"
    return f"with N={n}"


def check_batchnorm(mod: ModuleType, call: Caller, rng: np.random.Generator) -> Checks:  # noqa: C901 - a flat list of independent findings, read top to bottom like the checklist it prints
    n, d = 8, 5
    x = 2.0 * rng.standard_normal((n, d)) + rng.standard_normal(d)
    gamma, beta = rng.uniform(0.5, 1.5, d), rng.standard_normal(d)
    rm0, rv0 = rng.standard_normal(d), rng.uniform(0.5, 2.0, d)

    def param(mode: str) -> dict[str, Any]:
        return {"mode": mode, "eps": EPS, "momentum": MOMENTUM, "running_mean": rm0.copy(), "running_var": rv0.copy()}

    bn = param("train")
    out, cache = call(mod.batchnorm_forward, x, gamma, beta, bn)
    expected = gamma * _normalized(x, 0) + beta
    forward_ok = close(out, expected, 1e-6)
    if forward_ok:
        yield Finding(True, "batchnorm_forward: train mode normalizes each feature with the batch mean and "
                            "biased variance, then gamma * xhat + beta")
    else:
        yield Finding(False, f"batchnorm_forward: train-mode output differs from the reference (max rel. error "
                             f"{max_rel(out, expected):.1e}): {_norm_diagnosis(out, x, gamma, beta, 0)}")

    mean, var = x.mean(0), x.var(0)
    rm, rv = bn.get("running_mean"), bn.get("running_var")
    want_m, want_v = MOMENTUM * rm0 + (1 - MOMENTUM) * mean, MOMENTUM * rv0 + (1 - MOMENTUM) * var
    if rm is None or rv is None or (close(rm, rm0) and close(rv, rv0)):
        yield Finding(False, "batchnorm_forward: train mode leaves bn_param['running_mean'] / ['running_var'] "
                             "unchanged: store the updated averages back into bn_param")
    elif close(rm, want_m) and close(rv, want_v):
        yield Finding(True, "batchnorm_forward: running averages updated as momentum * running + "
                            "(1 - momentum) * batch (biased variance)")
    else:
        why = []
        if close(rm, (1 - MOMENTUM) * rm0 + MOMENTUM * mean) or close(rv, (1 - MOMENTUM) * rv0 + MOMENTUM * var):
            why.append("momentum weighs the batch instead of the running value: running = momentum * running + "
                       "(1 - momentum) * batch")
        if close(rv, MOMENTUM * rv0 + (1 - MOMENTUM) * x.var(0, ddof=1)):
            why.append("running_var is averaged from the unbiased batch variance; cs231n uses the biased one "
                       "(divide by N)")
        if close(rm, want_m) and not why:
            why.append(f"running_var is off (max rel. error {max_rel(rv, want_v):.1e})")
        elif not why:
            why.append(f"running_mean is off (max rel. error {max_rel(rm, want_m):.1e})")
        yield Finding(False, f"batchnorm_forward: with momentum={MOMENTUM} the running averages are wrong: "
                             + "; ".join(why))

    bt = param("test")
    out_t, _ = call(mod.batchnorm_forward, x, gamma, beta, bt)
    want_t = gamma * (x - rm0) / np.sqrt(rv0 + EPS) + beta
    if close(out_t, want_t, 1e-6):
        if close(bt.get("running_mean"), rm0) and close(bt.get("running_var"), rv0):
            yield Finding(True, "batchnorm_forward: test mode normalizes with running_mean / running_var")
        else:
            yield Finding(False, "batchnorm_forward: test mode changes bn_param's running averages; "
                                 "only train mode may update them")
    elif close(out_t, expected, 1e-6):
        yield Finding(False, "batchnorm_forward: test mode normalizes with the batch's own statistics; it must "
                             "use bn_param['running_mean'] and ['running_var']")
    else:
        yield Finding(False, f"batchnorm_forward: test-mode output differs from gamma * (x - running_mean) / "
                             f"sqrt(running_var + eps) + beta (max rel. error {max_rel(out_t, want_t):.1e})")

    dout = rng.standard_normal((n, d))
    ref_grads = ref.batchnorm_backward(dout, ref.batchnorm_forward(x, gamma, beta, param("train"))[1])
    for name in ("batchnorm_backward", "batchnorm_backward_alt"):
        if not hasattr(mod, name):
            continue
        _, cache = call(mod.batchnorm_forward, x, gamma, beta, param("train"))
        grads = call(getattr(mod, name), dout, cache)

        def fwd(xv: np.ndarray, g: np.ndarray, b: np.ndarray) -> Any:
            return mod.batchnorm_forward(xv, g, b, param("train"))

        line = _backward_grads(call, name, "batchnorm_forward", fwd, getattr(mod, name),
                               {"x": x, "gamma": gamma, "beta": beta}, dout, cache, ("dx", "dgamma", "dbeta"))
        if not line.ok and not forward_ok and all(close(g, r, 1e-6) for g, r in zip(grads, ref_grads, strict=False)):
            line = Finding(False, f"{name}: it is the gradient of the reference batch norm (biased variance), "
                                  "not of this module's batchnorm_forward (see above): forward and backward "
                                  "disagree; fix the forward")
        yield line


# --------------------------------------------------------------------------- layer norm
def check_layernorm(mod: ModuleType, call: Caller, rng: np.random.Generator) -> Checks:
    n, d = 6, 5  # N != D, so normalizing over the wrong axis cannot pass by symmetry
    x = 2.0 * rng.standard_normal((n, d)) + rng.standard_normal((n, 1))
    gamma, beta = rng.uniform(0.5, 1.5, d), rng.standard_normal(d)
    out, cache = call(mod.layernorm_forward, x, gamma, beta, {"eps": EPS})
    expected = gamma * _normalized(x, 1) + beta
    if close(out, expected, 1e-6):
        yield Finding(True, "layernorm_forward: normalizes each example over its features, then gamma * xhat + beta")
    else:
        yield Finding(False, f"layernorm_forward: output differs from the reference (max rel. error "
                             f"{max_rel(out, expected):.1e}): {_norm_diagnosis(out, x, gamma, beta, 1)}")
    part, _ = call(mod.layernorm_forward, x[:3].copy(), gamma, beta, {"eps": EPS})
    test, _ = call(mod.layernorm_forward, x, gamma, beta, {"eps": EPS, "mode": "test"})
    if not close(part, np.asarray(out)[:3], 1e-6):
        yield Finding(False, "layernorm_forward: an example's output depends on the other examples in the batch "
                             "(rows 0-2 change when rows 3-5 are left out): layer norm works on each row alone")
    elif not close(test, out, 1e-6):
        yield Finding(False, "layernorm_forward: ln_param['mode']='test' changes the output; layer norm is the "
                             "same in train and test mode")
    else:
        yield Finding(True, "layernorm_forward: each example on its own, the same in train and test mode")
    if hasattr(mod, "layernorm_backward"):
        def fwd(xv: np.ndarray, g: np.ndarray, b: np.ndarray) -> Any:
            return mod.layernorm_forward(xv, g, b, {"eps": EPS})

        yield _backward_grads(call, "layernorm_backward", "layernorm_forward", fwd, mod.layernorm_backward,
                              {"x": x, "gamma": gamma, "beta": beta}, rng.standard_normal((n, d)), cache,
                              ("dx", "dgamma", "dbeta"))
