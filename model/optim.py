"""First-order update rules: ``rule(w, dw, config) -> (next_w, config)``.

Defaults and config keys are cs231n assignment 2's. Each rule fills
missing ``config`` keys (``config.setdefault``), keeps its state (velocity,
moments, step counter) in ``config`` and, for speed, updates ``w`` and its
state IN PLACE: ``next_w is w``.

A config written as in the assignment gives the assignment's results:
state passed in (``velocity``; ``cache``; adam's ``m``, ``v``, ``t``) is the
state the rule starts from, and is left where the assignment leaves it
(``config['m']`` after the call is the new first moment). The rule copies a
state array it did not make (once) before updating it in place, so the
caller's array is never changed. A key the rule does not know (``lr``,
``v`` for sgd_momentum, ...) is refused with the keys it takes.

Speed: a rule is a handful of elementwise passes over arrays as large as
the weights (a 3072x512 layer is 6 MB per array, five arrays: more than
the L2 cache). The passes run block by block (``_BLOCK`` elements) so that
all of them but the first read of a block hit the L2 cache, and the only
temporary is one block-sized scratch array kept in ``config['_scratch']``.

Look a rule up by name with :func:`get_update_rule`.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["UPDATE_RULES", "adam", "check_config", "get_update_rule", "rmsprop", "sgd", "sgd_momentum"]

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


#: The keys each rule takes, as the assignment names them (hyperparameters, then state).
_KEYS: dict[str, tuple[str, ...]] = {
    "sgd": ("learning_rate",),
    "sgd_momentum": ("learning_rate", "momentum", "velocity"),
    "rmsprop": ("learning_rate", "decay_rate", "epsilon", "cache"),
    "adam": ("learning_rate", "beta1", "beta2", "epsilon", "m", "v", "t"),
}
#: Keys a rule keeps for itself: block scratch, the arrays it owns, adam's fast-path sums.
_PRIVATE = ("_scratch", "_owned", "m_sum", "v_sum")


def check_config(rule: str, config: Config) -> None:
    """Refuse a key ``rule`` does not take, naming the closest one it does.

    Each rule checks its config on its first call with it (before
    ``_owned`` exists): a key the rule ignored would silently train with a
    default instead. The Solver checks its ``optim_config`` up front.

    Raises:
        ValueError: unknown rule, or a key it does not take.
    """
    get_update_rule(rule)
    allowed = _KEYS[rule]
    for key in config:
        if key in allowed or key in _PRIVATE:
            continue
        others = [name for name, keys in _KEYS.items() if key in keys and name != rule]
        if others:
            hint = f"it is {others[0]}'s; {rule} takes"
        else:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = (f"did you mean {close[0]!r}? " if close else "") + f"{rule} takes"
        raise ValueError(f"{rule} config has unknown key {key!r}: {hint} {', '.join(allowed)}")


def _state(config: Config, key: str, w: np.ndarray) -> np.ndarray:
    """The state array ``config[key]``, made (zeros) or adopted if the rule does not own it yet.

    An array given in the config (the assignment's ``velocity``, ``cache``,
    ``m``, ``v``) is where the rule starts: it is broadcast to w's shape,
    copied once to a C-ordered array of w's dtype (so the in-place update
    neither changes the caller's array nor misses a strided one), and the
    copy is kept in ``config[key]``.
    """
    owned = config.setdefault("_owned", {})
    arr = config.get(key)
    if arr is not None and arr is owned.get(key):
        return arr
    if arr is None:
        arr = _zeros_like(w)
    else:
        try:
            arr = np.array(np.broadcast_to(np.asarray(arr), w.shape), dtype=w.dtype, order="C")
        except (ValueError, TypeError):
            shape = getattr(arr, "shape", type(arr).__name__)
            raise ValueError(f"config[{key!r}] must be an array of w's shape {w.shape}, got {shape}") from None
    config[key] = owned[key] = arr
    return arr


def _first_call(rule: str, config: Config | None) -> Config:
    """``config`` (a new dict for None), its keys checked on the rule's first call with it."""
    config = {} if config is None else config
    if "_owned" not in config:
        check_config(rule, config)
        config["_owned"] = {}
    return config


def sgd(w: np.ndarray, dw: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, Config]:
    """Vanilla SGD: ``w -= learning_rate * dw``.

    Args:
        w: Parameter array (updated in place).
        dw: Its gradient, same shape.
        config: ``learning_rate`` (1e-2).

    Returns:
        ``(w, config)``.
    """
    config = _first_call("sgd", config)
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
            (zeros like w; a given one is the starting velocity).

    Returns:
        ``(w, config)``.
    """
    config = _first_call("sgd_momentum", config)
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    v = _state(config, "velocity", w)
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
            (1e-8), ``cache`` (zeros like w; a given one is the starting cache).

    Returns:
        ``(w, config)``.
    """
    config = _first_call("rmsprop", config)
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    cache = _state(config, "cache", w)
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

    A config that carries the assignment's ``m`` or ``v`` keeps them as its
    state instead (one more pass each): the rule starts from them and
    ``config['m']``, ``config['v']`` are the new moments afterwards, as in
    the assignment. A given ``t`` is the number of steps already taken.

    Args:
        w: Parameter array (updated in place).
        dw: Its gradient, same shape.
        config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999),
            ``epsilon`` (1e-8), ``t`` (0); state ``m`` and ``v`` (the
            assignment's moments) or, when neither is given, the sums
            ``m_sum`` and ``v_sum`` (zeros like w).

    Returns:
        ``(w, config)``.

    Raises:
        ValueError: ``t`` is not an integer >= 0; the config has both the
            moments and the sums; a state array of another shape.
    """
    config = _first_call("adam", config)
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("t", 0)
    t = config["t"]
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or t < 0 or t != math.floor(t):
        raise ValueError(f"adam config['t'] is the number of steps already taken, an integer >= 0; got {t!r}")
    config["t"] = t = int(config["t"]) + 1  # incremented before the bias correction, as in the assignment
    beta1, beta2 = config["beta1"], config["beta2"]
    if "m" in config or "v" in config:
        if "m_sum" in config or "v_sum" in config:
            raise ValueError(
                "adam config has both the moments 'm'/'v' and the sums 'm_sum'/'v_sum': give 'm' and 'v' only"
            )
        m, v = _state(config, "m", w), _state(config, "v", w)
        step = config["learning_rate"] / (1 - beta1**t)
        v_hat = 1 / (1 - beta2**t)
        eps = config["epsilon"]
        for wb, gb, mb, vb, buf in _blocks(config, w, dw, m, v):
            mb *= beta1
            np.multiply(gb, 1 - beta1, out=buf)
            mb += buf
            np.multiply(gb, gb, out=buf)
            buf *= 1 - beta2
            vb *= beta2
            vb += buf
            np.multiply(vb, v_hat, out=buf)
            np.sqrt(buf, out=buf)
            buf += eps
            np.divide(mb, buf, out=buf)
            buf *= step
            wb -= buf
        return w, config
    m_sum = _state(config, "m_sum", w)
    v_sum = _state(config, "v_sum", w)
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
