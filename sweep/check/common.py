"""What every `sweep check` check shares: findings, calling the code under test, gradient checks.

The code under test is a student's: it may use numpy's global RNG, raise,
print or warn. Every call goes through :class:`Caller`, which seeds the
global RNG from the check's own Generator and restores the caller's state
afterwards, so a check is reproducible and leaves no trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error

VALUE_TOL = 1e-7  # relative error of a forward value against the reference (float64)
GRAD_TOL = 1e-6  # relative error of an analytic gradient against the numeric one
# The numeric reference is the four-point stencil at h = 1e-4 (model.gradcheck),
# absolutely accurate to a few 1e-12 of the checked scalar; elements below
# RESOLUTION times that scalar's size are held to an absolute bound (as in
# tests/net/test_layers.py), so gradients near zero read as noise, not as errors.
RESOLUTION = 5e-5


class BadInput(ValueError):
    """The target cannot be checked at all (not a net, not layers): a one-line error, exit 2."""


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``ok`` says whether the property holds."""

    ok: bool
    text: str


Checks = Iterator[Finding]


class Caller:
    """Calls code under test with numpy's global RNG seeded from ``rng``, then restores it.

    Each call gets a fresh global seed, so code that draws from ``np.random``
    without seeding it draws differently on every call (as in training), and
    the draw is still reproducible run to run.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        state = np.random.get_state()
        np.random.seed(int(self.rng.integers(2**32)))
        try:
            return fn(*args)
        finally:
            np.random.set_state(state)


def max_rel(a: Any, b: Any) -> float:
    """Largest relative difference of two arrays; inf when the shapes differ."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return rel_error(a, b, floor=1e-8)


def close(a: Any, b: Any, tol: float = VALUE_TOL) -> bool:
    return max_rel(a, b) < tol


def _numeric(
    f: Callable[[np.ndarray], Any], x: np.ndarray, dout: np.ndarray | None, h: float
) -> tuple[np.ndarray, float]:
    """Numeric gradient of f at x (a vector-Jacobian product with dout; f scalar when dout is None), and its floor."""
    if dout is None:
        num = eval_numerical_gradient(lambda a: float(f(a)), x, h=h, order=4)
        scale = max(1.0, abs(float(f(x))))
    else:
        num = eval_numerical_gradient_array(f, x, dout, h=h, order=4)
        scale = max(1.0, float(np.sum(np.abs(np.asarray(f(x), dtype=np.float64) * dout))))
    return num, RESOLUTION * scale


def grad_error(f: Callable[[np.ndarray], Any], x: np.ndarray, dout: np.ndarray | None, analytic: Any) -> float:
    """Max relative error of ``analytic`` against the numeric gradient of f at x (inf: wrong shape).

    A ReLU whose input lies within the stencil's reach (4h) of its kink makes
    the numeric gradient wrong, not the analytic one: an error is confirmed
    with a 100x smaller step before it counts.
    """
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != np.shape(x):
        return float("inf")
    err = float("inf")
    for h in (1e-4, 1e-6):
        num, floor = _numeric(f, x, dout, h)
        err = min(err, rel_error(num, analytic, floor=floor))
        if err < GRAD_TOL:
            break
    return err


def grad_findings(
    name: str, of: str, errors: dict[str, float], shapes: dict[str, tuple[str, str]] | None = None
) -> Finding:
    """One line for a backward: which gradients match the numeric ones of the forward ``of``.

    Args:
        errors: gradient name -> max relative error (inf: wrong shape or missing).
        shapes: gradient name -> (shape returned, shape expected) for wrong shapes.
    """
    bad = {k: e for k, e in errors.items() if not e < GRAD_TOL}
    good = [k for k in errors if k not in bad]
    if not bad:
        worst = max(errors.values())
        verb = "matches the numeric gradient" if len(errors) == 1 else "match the numeric gradients"
        return Finding(True, f"{name}: {', '.join(errors)} {verb} of {of} "
                             f"(max rel. error {worst:.1e})")
    parts = []
    for k, e in bad.items():
        if shapes and k in shapes:
            parts.append(f"{k} has shape {shapes[k][0]}, expected {shapes[k][1]}")
        else:
            parts.append(f"{k} differs from the numeric gradient of {of} (max rel. error {e:.1e})")
    tail = f"; {', '.join(good)} {'matches' if len(good) == 1 else 'match'}" if good else ""
    return Finding(False, f"{name}: {'; '.join(parts)}{tail}")


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line, with where in the student's code it was raised."""
    import sysconfig
    import traceback
    from pathlib import Path

    text = " ".join(str(exc).split()) or "(no message)"
    where = ""
    # The innermost frame of the code under test: not importlib, numpy or this checker, which say nothing to its author.
    ours = (str(Path(__file__).parent), sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"], "<frozen")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(ours)]
    if frames and not isinstance(exc, SyntaxError):  # a SyntaxError's message already names file and line
        last = frames[-1]
        where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
    return f"{type(exc).__name__}: {text}{where}"


def guarded(name: str, checks: Checks) -> Checks:
    """The findings of ``checks``; an exception in the code under test becomes one failing line."""
    try:
        yield from checks
    except BadInput:
        raise
    except Exception as exc:  # the student's code raised: that is a finding, not a crash
        yield Finding(False, f"{name}: raised {one_line(exc)}")
