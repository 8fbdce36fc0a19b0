"""First-order update rules: ``rule(w, dw, config) -> (next_w, config)``.

Defaults are cs231n's. Each rule fills missing ``config`` keys, keeps its
state (velocity, moments, step counter) in ``config`` and, for speed,
updates ``w`` and its state IN PLACE: ``next_w is w``.

Speed: a rule is a handful of elementwise passes over arrays as large as
the weights (a 3072x512 layer is 6 MB per array, five arrays: more than
the L2 cache). The passes run block by block (``_BLOCK`` elements) so that
all of them but the first read of a block hit the L2 cache, and the only
temporary is one block-sized scratch array kept in ``config['_scratch']``.

Look a rule up by name with :func:`get_update_rule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "UPDATE_RULES", "get_update_rule"]

Config = dict[str, Any]
UpdateRule = Callable[[np.ndarray, np.ndarray, Config | None], tuple[np.ndarray, Config]]


#: Elements per block: 5 arrays x 64K float32 = 1.25 MB, more than the 512 KB L2 here,
#: but 8K-256K blocks measured alike (smaller ones pay more per-call overhead).
_BLOCK = 1 << 16


def _blocks(
    config: Config, w: np.ndarray, dw: np.ndarray, *state: np.ndarray
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield matching flat blocks of ``w``, ``dw`` and ``state`` plus a scratch block.

    Blocks of ``w`` and ``state`` are views, so in-place ops on them update
    the arrays; ``w`` must be C-contiguous for that (state arrays are made
    by the rules with ``_zeros_like``). ``dw`` is only read.
    """
    if not w.flags.c_contiguous:
        raise ValueError("update rules update w in place: it must be a C-contiguous array")
    if dw.shape != w.shape:
        raise ValueError(f"dw must have w's shape {w.shape}, got {dw.shape}")
    n = w.size
    buf = config.get("_scratch")
    if n <= _BLOCK:  # most parameters (biases, gammas, small layers): the arrays themselves
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
            buf = config["_scratch"] = np.empty(w.shape, dtype=w.dtype)
        yield (w, dw, *state, buf)
        return
    if buf is None or buf.shape != (_BLOCK,) or buf.dtype != w.dtype:
        buf = config["_scratch"] = np.empty(_BLOCK, dtype=w.dtype)
    flat = (w.reshape(n), np.ascontiguousarray(dw).reshape(n), *[a.reshape(n) for a in state])
    for start in range(0, n, _BLOCK):
        stop = start + _BLOCK
        yield (*[a[start:stop] for a in flat], buf[: min(stop, n) - start])


def _zeros_like(w: np.ndarray) -> np.ndarray:
    """C-ordered zeros of w's shape and dtype (state arrays are blocked like w)."""
    return np.zeros(w.shape, dtype=w.dtype)


def sgd(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """Vanilla SGD: ``w -= learning_rate * dw``.

    Args:
        w: Parameter array (updated in place).
        dw: Its gradient, same shape.
        config: ``learning_rate`` (1e-2).

    Returns:
        ``(w, config)``.
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    lr = config["learning_rate"]
    for wb, gb, buf in _blocks(config, w, dw):
        np.multiply(gb, lr, out=buf)
        wb -= buf
    return w, config


def sgd_momentum(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """SGD with momentum: ``v = momentum * v - learning_rate * dw; w += v``.

    Args:
        w: Parameter array (updated in place).
        dw: Its gradient, same shape.
        config: ``learning_rate`` (1e-2), ``momentum`` (0.9), ``velocity``
            (zeros like w).

    Returns:
        ``(w, config)``.
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    v = config.get("velocity")
    if v is None:
        v = config["velocity"] = _zeros_like(w)
    lr, mu = config["learning_rate"], config["momentum"]
    for wb, gb, vb, buf in _blocks(config, w, dw, v):
        vb *= mu
        np.multiply(gb, lr, out=buf)
        vb -= buf
        wb += vb
    return w, config


def rmsprop(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """RMSProp: ``cache = decay * cache + (1 - decay) * dw**2``,
    ``w -= learning_rate * dw / (sqrt(cache) + epsilon)``.

    Args:
        w: Parameter array (updated in place).
        dw: Its gradient, same shape.
        config: ``learning_rate`` (1e-2), ``decay_rate`` (0.99), ``epsilon``
            (1e-8), ``cache`` (zeros like w).

    Returns:
        ``(w, config)``.
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    cache = config.get("cache")
    if cache is None:
        cache = config["cache"] = _zeros_like(w)
    decay, eps, lr = config["decay_rate"], config["epsilon"], config["learning_rate"]
    for wb, gb, cb, buf in _blocks(config, w, dw, cache):
        np.multiply(gb, gb, out=buf)
        buf *= 1 - decay
        cb *= decay
        cb += buf
        np.sqrt(cb, out=buf)
        buf += eps
        np.divide(gb, buf, out=buf)
        buf *= lr
        wb -= buf
    return w, config


def adam(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """Adam with bias correction; the step counter ``t`` is incremented first.

    Computes exactly cs231n's/Kingma & Ba's update
    ``m = beta1*m + (1-beta1)*dw``, ``v = beta2*v + (1-beta2)*dw**2``,
    ``w -= learning_rate * m_hat / (sqrt(v_hat) + epsilon)`` with
    ``m_hat = m / (1 - beta1**t)``, ``v_hat = v / (1 - beta2**t)``.

    For speed the state is kept as exponentially weighted SUMS,
    ``m_sum = m / (1-beta1)`` and ``v_sum = v / (1-beta2)``: then
    ``m_sum = beta1*m_sum + dw`` costs two passes instead of three (same for
    v), and every constant factor is folded into two scalars:
    ``w -= step * m_sum / (sqrt(v_sum) + eps_hat)`` with
    ``a1 = (1-beta1)/(1-beta1**t)``, ``a2 = (1-beta2)/(1-beta2**t)``,
    ``step = learning_rate * a1 / sqrt(a2)``, ``eps_hat = epsilon / sqrt(a2)``.

    Args:
        w: Parameter array (updated in place).
        dw: Its gradient, same shape.
        config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999),
            ``epsilon`` (1e-8), ``t`` (0); state ``m_sum`` and ``v_sum``
            (zeros like w).

    Returns:
        ``(w, config)``.
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("t", 0)
    m_sum = config.get("m_sum")
    if m_sum is None:
        m_sum = config["m_sum"] = _zeros_like(w)
    v_sum = config.get("v_sum")
    if v_sum is None:
        v_sum = config["v_sum"] = _zeros_like(w)
    beta1, beta2 = config["beta1"], config["beta2"]
    config["t"] += 1
    t = config["t"]
    a1 = (1 - beta1) / (1 - beta1**t)
    root_a2 = math.sqrt((1 - beta2) / (1 - beta2**t))
    step = config["learning_rate"] * a1 / root_a2
    eps_hat = config["epsilon"] / root_a2
    for wb, gb, mb, vb, buf in _blocks(config, w, dw, m_sum, v_sum):
        mb *= beta1
        mb += gb
        np.multiply(gb, gb, out=buf)
        vb *= beta2
        vb += buf
        np.sqrt(vb, out=buf)
        buf += eps_hat
        np.divide(mb, buf, out=buf)
        buf *= step
        wb -= buf
    return w, config


UPDATE_RULES: dict[str, UpdateRule] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "rmsprop": rmsprop,
    "adam": adam,
}


def get_update_rule(name: str) -> UpdateRule:
    """The update rule called ``name``.

    Args:
        name: One of ``sgd``, ``sgd_momentum``, ``rmsprop``, ``adam``.

    Raises:
        ValueError: unknown name (the message lists the allowed ones).
    """
    try:
        return UPDATE_RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"update_rule must be one of {sorted(UPDATE_RULES)}, got {name!r}") from None
