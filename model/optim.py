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


#: Elements per block: 5 arrays x 64K float32 = 1.25 MB, about one L2 cache.
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
    flat = [w.reshape(-1), np.ascontiguousarray(dw).reshape(-1), *(a.reshape(-1) for a in state)]
    n = w.size
    size = min(n, _BLOCK)
    buf = config.get("_scratch")
    if buf is None or buf.size < size or buf.dtype != w.dtype:
        buf = config["_scratch"] = np.empty(size, dtype=w.dtype)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        yield (*(f[start:stop] for f in flat), buf[: stop - start])


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

    ``m = beta1*m + (1-beta1)*dw``, ``v = beta2*v + (1-beta2)*dw**2``,
    ``w -= learning_rate * m_hat / (sqrt(v_hat) + epsilon)`` with
    ``m_hat = m / (1 - beta1**t)``, ``v_hat = v / (1 - beta2**t)``.

    Args:
        w: Parameter array (updated in place).
        dw: Its gradient, same shape.
        config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999),
            ``epsilon`` (1e-8), ``m`` and ``v`` (zeros like w), ``t`` (0).

    Returns:
        ``(w, config)``.
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("t", 0)
    m = config.get("m")
    if m is None:
        m = config["m"] = _zeros_like(w)
    v = config.get("v")
    if v is None:
        v = config["v"] = _zeros_like(w)
    beta1, beta2, eps = config["beta1"], config["beta2"], config["epsilon"]
    config["t"] += 1
    t = config["t"]
    # m_hat / (sqrt(v_hat) + eps) == (s / c1) * m / (sqrt(v) + eps * s) with
    # c1 = 1 - beta1**t, s = sqrt(1 - beta2**t): the same value, with the bias
    # corrections folded into two scalars instead of two passes over v and m.
    s = math.sqrt(1 - beta2**t)
    step = config["learning_rate"] * s / (1 - beta1**t)
    eps_s = eps * s
    for wb, gb, mb, vb, buf in _blocks(config, w, dw, m, v):
        np.multiply(gb, 1 - beta1, out=buf)
        mb *= beta1
        mb += buf
        np.multiply(gb, gb, out=buf)
        buf *= 1 - beta2
        vb *= beta2
        vb += buf
        np.sqrt(vb, out=buf)
        buf += eps_s
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
