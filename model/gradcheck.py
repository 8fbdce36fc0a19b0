"""Numeric gradients by centred differences, and the relative error to compare them.

Use float64 inputs: in float32 the rounding of ``f`` swamps a 1e-5 step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "rel_error"]


def eval_numerical_gradient(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    h: float = 1e-5,
    verbose: bool = False,
    order: int = 2,
) -> np.ndarray:
    """Gradient of a scalar function at x by centred differences, per element.

    ``order=2`` is cs231n's ``(f(x+h) - f(x-h)) / 2h``: error ~h**2 plus
    ~eps*|f|/h of rounding, about 1e-11 * |f| at h=1e-5, which is a large
    *relative* error on gradient elements near 1e-5. ``order=4`` is the
    five-point stencil ``(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h``
    (error ~h**4), which allows h around 1e-3 and so ~100x less rounding
    noise; the price is a wider bracket (4h) in which a ReLU kink may fall.

    Args:
        f: Scalar function of one array; it may read ``x`` (which is perturbed
            in place and restored), so ``f`` can close over the array itself.
        x: Point, any shape (float64 recommended).
        h: Step.
        verbose: Print every element's numeric gradient.
        order: 2 or 4 (accuracy order of the stencil).

    Returns:
        Array shaped like x.

    Raises:
        ValueError: order not 2 or 4.
    """
    if order not in (2, 4):
        raise ValueError(f"order must be 2 or 4, got {order!r}")
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]

        def at(step: float, ix: tuple[int, ...] = ix, old: float = old) -> float:  # bound now, called now
            x[ix] = old + step
            value = f(x)
            x[ix] = old
            return value

        diff1 = at(h) - at(-h)
        if order == 2:
            grad[ix] = diff1 / (2 * h)
        else:
            grad[ix] = (8 * diff1 - (at(2 * h) - at(-2 * h))) / (12 * h)
        if verbose:
            print(ix, grad[ix])
        it.iternext()
    return grad


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    df: np.ndarray,
    h: float = 1e-5,
    order: int = 2,
) -> np.ndarray:
    """Gradient of ``sum(f(x) * df)`` at x: the vector-Jacobian product a backward pass computes.

    Args:
        f: Array function of one array (x is perturbed in place and restored).
        x: Point, any shape (float64 recommended).
        df: Upstream gradient, shaped like ``f(x)``.
        h: Step.
        order: 2 or 4, as in :func:`eval_numerical_gradient`.

    Returns:
        Array shaped like x.

    Raises:
        ValueError: order not 2 or 4.
    """
    df = np.asarray(df, dtype=np.float64)

    def scalar(a: np.ndarray) -> float:
        # Copy first: f may return x itself (e.g. dropout in test mode).
        return float(np.sum(np.array(f(a), dtype=np.float64, copy=True) * df))

    return eval_numerical_gradient(scalar, x, h=h, order=order)


def rel_error(x: np.ndarray, y: np.ndarray, floor: float = 1e-8) -> float:
    """Largest elementwise ``|x - y| / max(floor, |x| + |y|)``.

    The floor keeps elements where both are ~0 from dividing by zero. With
    cs231n's 1e-8 an exactly-zero true gradient against ~1e-11 of
    finite-difference noise reads as ~1e-3; pass a floor at the numeric
    reference's resolution (about its absolute noise / 1e-7) to hold such
    elements to an absolute bound instead.

    Args:
        x: Array (e.g. numeric gradient).
        y: Array of the same shape (e.g. analytic gradient).
        floor: Smallest denominator.

    Returns:
        The largest relative error, a Python float.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(floor, np.abs(x) + np.abs(y))))
