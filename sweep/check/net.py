"""`sweep check MODULE:CLASS`: a cs231n-style FullyConnectedNet against a reference forward pass.

The reference is ``{affine - [norm] - relu - [dropout]} x (L-1) - affine -
softmax`` computed with model.layers from the net's own ``params``, so a net
passes whatever layer code it uses, as long as it computes that function.
The constructor keywords are read from its signature: the dropout keyword is
``dropout_keep_ratio`` (cs231n since 2019), ``keep_prob`` (this project) or
``dropout`` (older cs231n: a drop strength in 2017, a keep probability in 2018).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from model import layers as ref
from sweep.check.common import BadInput, Caller, Checks, Finding, grad_error

DIMS: dict[str, Any] = {"hidden_dims": [6, 5], "input_dim": 7, "num_classes": 4}
N = 9
REG = 0.3
NORMS = ("batchnorm", "layernorm")


class NotANet(BadInput):
    """The class cannot be driven as a cs231n FullyConnectedNet (bad input, exit 2)."""


def _reference(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray | None, norm: str | None) -> Any:
    """Scores (y None, test mode) or the data loss (train mode) of the cs231n architecture without dropout."""
    n_layers = sum(1 for k in params if k.startswith("W"))
    h = x.reshape(x.shape[0], -1)
    for i in range(1, n_layers):
        h = ref.affine_forward(h, params[f"W{i}"], params[f"b{i}"])[0]
        if norm == "batchnorm" and y is not None:
            h = ref.batchnorm_forward(h, params[f"gamma{i}"], params[f"beta{i}"], {"mode": "train"})[0]
        elif norm == "layernorm":
            h = ref.layernorm_forward(h, params[f"gamma{i}"], params[f"beta{i}"], {})[0]
        h = np.maximum(h, 0)
    scores = ref.affine_forward(h, params[f"W{n_layers}"], params[f"b{n_layers}"])[0]
    return scores if y is None else ref.softmax_loss(scores, y)[0]


class NetDriver:
    """Builds small float64 nets of one class with the keywords its constructor takes."""

    def __init__(self, cls: type, call: Caller) -> None:
        self.cls, self.call = cls, call
        try:
            sig = inspect.signature(cls)
        except (TypeError, ValueError):
            raise NotANet(f"{cls.__name__}: its constructor's signature cannot be read") from None
        self.kwargs = set(sig.parameters)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        if not takes_any and "hidden_dims" not in self.kwargs:
            raise NotANet(f"{cls.__name__} is not a cs231n FullyConnectedNet: its constructor takes no hidden_dims "
                          f"(it takes {', '.join(sig.parameters) or 'nothing'})")
        self.keep_kw = next((k for k in ("dropout_keep_ratio", "keep_prob", "dropout") if k in self.kwargs), None)
        self.off = 1.0  # the keep_kw value meaning "no dropout" (0.0 for the 2017 'dropout' strength)

    def build(self, *, keep: float | None = None, norm: str | None = None, reg: float = 0.0, seed: int = 0) -> Any:
        kw: dict[str, Any] = {**DIMS, "reg": reg, "weight_scale": 0.3, "dtype": np.float64}
        if "seed" in self.kwargs:
            kw["seed"] = seed
        if "dropout_seed" in self.kwargs:  # this project's net: fixed masks, for the gradient check
            kw["dropout_seed"] = seed
        if norm is not None:
            kw["normalization"] = norm
        if keep is not None and self.keep_kw:
            kw[self.keep_kw] = keep
        kw = {k: v for k, v in kw.items() if k in self.kwargs or k in DIMS}
        state = np.random.get_state()
        np.random.seed(seed)  # a net that draws its weights from np.random gets the same ones for one seed
        try:
            net = self.cls(**kw)
        except Exception as exc:
            raise NotANet(f"{self.cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kw.items())}) raised "
                          f"{type(exc).__name__}: {exc}") from None
        finally:
            np.random.set_state(state)
        if not isinstance(getattr(net, "params", None), dict) or not callable(getattr(net, "loss", None)):
            raise NotANet(f"{self.cls.__name__} has no params dict or no loss(X, y=None) method")
        return net

    def loss(self, net: Any, x: np.ndarray, y: np.ndarray | None = None) -> Any:
        return self.call(net.loss, x, y) if y is not None else self.call(net.loss, x)


def _same(a: Any, b: Any, tol: float = 1e-8) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=tol, atol=tol))


def check_net(cls: type, call: Caller, rng: np.random.Generator) -> Checks:  # noqa: C901 - a flat list of independent findings, read top to bottom like the checklist it prints
    d = NetDriver(cls, call)
    name = cls.__name__
    x = rng.standard_normal((N, DIMS["input_dim"]))
    y = rng.integers(0, DIMS["num_classes"], N)

    net = d.build()
    dims = [DIMS["input_dim"], *DIMS["hidden_dims"], DIMS["num_classes"]]
    want = {f"{p}{i + 1}": s for i in range(len(dims) - 1)
            for p, s in (("W", (dims[i], dims[i + 1])), ("b", (dims[i + 1],)))}
    shapes = {k: tuple(np.shape(v)) for k, v in net.params.items()}
    if any(shapes.get(k) != s for k, s in want.items()):
        yield Finding(False, f"{name}: params for hidden_dims={DIMS['hidden_dims']}, input_dim={DIMS['input_dim']}, "
                             f"num_classes={DIMS['num_classes']} are {shapes}; expected {want}")
        return
    last = len(dims) - 1
    yield Finding(True, f"{name}: params W1..W{last}, b1..b{last} with the shapes the constructor's dims give")

    # The architecture without dropout: test-mode scores and the train-mode loss.
    if d.keep_kw == "dropout":  # which value of the old 'dropout' keyword means "off" (1: 2018, 0: 2017)?
        for off in (1.0, 0.0):
            d.off = off
            with np.errstate(all="ignore"):
                trial = d.build(keep=off)
                if _same(d.loss(trial, x, y)[0], _reference(trial.params, x, y, None)):
                    break
    base = d.build(keep=d.off)
    scores = d.loss(base, x)
    loss0 = d.loss(base, x, y)[0]
    ref_loss = _reference(base.params, x, y, None)
    kw_text = f"{d.keep_kw}={d.off:g}" if d.keep_kw else "(no dropout keyword)"
    if not _same(scores, _reference(base.params, x, None, None)):
        yield Finding(False, f"{name}: test-mode scores (loss(X) without y) differ from affine - relu - ... - affine "
                             "with the net's params")
    elif not _same(loss0, ref_loss):
        differs = not _same(loss0, d.loss(base, x, y)[0])
        yield Finding(False, f"{name}: with {kw_text} the train-mode loss is {float(loss0):.6g}, the reference "
                             f"(no dropout, reg=0) gives {ref_loss:.6g}"
                             + (": the loss changes from call to call, so it still drops units" if differs else ""))
    else:
        yield Finding(True, f"{name}: with {kw_text} (no dropout) scores and loss match the reference; "
                            f"dropout keyword: {d.keep_kw or 'none'}")

    # Dropout is applied in train mode only, where the keyword says.
    if d.keep_kw:
        on = 0.5  # a keep ratio, or the 2017 drop strength: dropout either way
        net = d.build(keep=on)
        losses = [float(d.loss(net, x, y)[0]) for _ in range(2)]
        ref_on = _reference(net.params, x, y, None)
        test_ok = _same(d.loss(net, x), _reference(net.params, x, None, None))
        if all(_same(v, ref_on) for v in losses):
            yield Finding(False, f"{name}: {d.keep_kw}={on} has no effect in train mode: the loss equals the "
                                 f"loss without dropout ({ref_on:.6g}); the net ignores {d.keep_kw}")
        elif not test_ok:
            yield Finding(False, f"{name}: with {d.keep_kw}={on} test-mode scores (loss(X) without y) differ from the "
                                 "net without dropout: dropout must be off in test mode")
        else:
            yield Finding(True, f"{name}: {d.keep_kw}={on} changes the train-mode loss ({losses[0]:.4g} against "
                                f"{ref_on:.4g} without dropout), test mode is dropout-free")

    # Normalization where the keyword says.
    norm: str | None
    if "normalization" in d.kwargs:
        for norm in NORMS:
            net = d.build(keep=d.off, norm=norm)
            got = d.loss(net, x, y)[0]
            keys = [f"{p}{i}" for i in range(1, len(dims) - 1) for p in ("gamma", "beta")]
            if any(k not in net.params for k in keys):
                yield Finding(False, f"{name}: normalization='{norm}' creates no gamma/beta params "
                                     f"(expected {', '.join(keys)})")
            elif _same(got, _reference(net.params, x, y, norm)):
                yield Finding(True, f"{name}: normalization='{norm}' is applied after each hidden affine layer")
            elif _same(got, _reference(net.params, x, y, None)):
                yield Finding(False, f"{name}: normalization='{norm}' is not applied: the loss equals the net's "
                                     "without normalization")
            else:
                yield Finding(False, f"{name}: with normalization='{norm}' the loss is {float(got):.6g}, the "
                                     f"reference (affine - {norm} - relu) gives "
                                     f"{_reference(net.params, x, y, norm):.6g}")

    # reg enters the loss as 0.5 * reg * sum(W**2), and its gradient.
    net, plain = d.build(keep=d.off, reg=REG), d.build(keep=d.off, reg=0.0)
    for k, v in net.params.items():  # the same weights for both, whatever the constructor drew
        plain.params[k] = v.copy()
    extra = float(d.loss(net, x, y)[0] - d.loss(plain, x, y)[0])
    want_extra = 0.5 * REG * sum(float(np.sum(v * v)) for k, v in net.params.items() if k.startswith("W"))
    if abs(extra - want_extra) <= 1e-8 * max(1.0, want_extra):
        yield Finding(True, f"{name}: reg={REG} adds 0.5 * reg * sum(W**2) = {want_extra:.4g} to the loss")
    elif abs(extra) <= 1e-12:
        yield Finding(False, f"{name}: reg={REG} does not enter the loss: loss(X, y) is the same as with reg=0 "
                             f"(expected + 0.5 * reg * sum(W**2) = {want_extra:.4g}); add it, and reg * W to each dW")
    else:
        yield Finding(False, f"{name}: reg={REG} adds {extra:.4g} to the loss; cs231n adds 0.5 * reg * sum(W**2) = "
                             f"{want_extra:.4g} (weights only)")

    # Gradients of the whole loss, with and without each normalization, and with dropout when its mask is fixed.
    configs = [(None, d.off), *((None, 0.5) for _ in [d.keep_kw] if d.keep_kw),
               *((norm, d.off) for norm in (NORMS if "normalization" in d.kwargs else ()))]
    for norm, keep in configs:
        net = d.build(keep=keep, norm=norm, reg=REG)
        label = f"normalization={norm!r}, reg={REG}" + (f", {d.keep_kw}={keep}" if keep != d.off else "")
        for k, v in net.params.items():  # biases off zero: a unit whose inputs are all dropped sits on the kink
            if not k.startswith("W"):
                v += 0.1 * rng.standard_normal(np.shape(v))
        first, grads = d.loss(net, x, y)
        if keep != d.off and not _same(first, d.loss(net, x, y)[0], 0.0):
            yield Finding(True, f"{name}: gradients with {label} not checked: the dropout masks change from call to "
                                "call (cs231n fixes them with seed, this project with dropout_seed)")
            continue
        errors = {}
        for k, v in net.params.items():
            analytic = grads.get(k) if isinstance(grads, dict) else None

            def loss_at(_v: np.ndarray) -> Any:
                return d.loss(net, x, y)[0]  # noqa: B023 - grad_error calls it at once, with this iteration's net
            errors[k] = np.inf if analytic is None else grad_error(loss_at, v, None, analytic)
        bad = {k: e for k, e in errors.items() if not e < 1e-6}
        if bad:
            yield Finding(False, f"{name}: with {label} the gradients of "
                                 + ", ".join(f"{k} (max rel. error {e:.1e})" for k, e in bad.items())
                                 + " differ from the numeric gradients of the loss")
        else:
            yield Finding(True, f"{name}: with {label} every gradient matches the numeric one "
                                f"(max rel. error {max(errors.values()):.1e})")
