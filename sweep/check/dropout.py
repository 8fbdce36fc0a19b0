"""`sweep check` on a dropout forward/backward pair: is p kept or dropped, and is it inverted dropout?

Two conventions are accepted and named in the output: cs231n's
``dropout_param['p']`` (a DROP probability in the 2017 assignment, the KEEP
probability since 2018) and this project's ``dropout_param['keep_prob']``
(model/layers.py). Which one a function reads is found by calling it.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from sweep.check.common import Caller, Checks, Finding, close

PROBS = (0.25, 0.6, 0.9)  # away from 0.5, where reading p as keep or as drop gives the same fraction
SHAPE = (400, 500)  # 200,000 units: a 95 % CI of about +-0.2 points on the fraction kept
READ_TOL = 0.01  # |fraction kept - p| within 1 point (5 sigma at worst) reads as "keeps p"


class _Recording(dict):
    """A dict that remembers which keys the code under test looked at."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: Any) -> bool:
        self.read.add(key)
        return super().__contains__(key)


def wilson(kept: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    p = kept / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def docstring_claim(fn: Callable[..., Any], key: str) -> str | None:
    """'keep' or 'drop': what the function's docstring says ``key`` is, or None when it does not say."""
    doc = inspect.getdoc(fn) or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if re.search(rf"(^|[\s\-*`'\"\[]){re.escape(key)}\b[`'\"\]]*\s*[:(]", line):
            text = [line]
            for nxt in lines[i + 1:]:  # continuation lines, up to the next "- name:" item
                if re.match(r"\s*[-*]?\s*[\w`'\"\[\]]+\s*:", nxt) or not nxt.strip():
                    break
                text.append(nxt)
            words = re.findall(r"\b(keep|keeps|kept|keeping|retain\w*|drop|drops|dropped|dropping)\b",
                               " ".join(text).lower())
            if words:
                return "drop" if words[0].startswith("drop") else "keep"
    return None


def _find_key(fwd: Callable[..., Any], call: Caller, x: np.ndarray) -> str:
    """'p' or 'keep_prob': the key the function reads its probability from."""
    errors = []
    for key in ("p", "keep_prob"):
        param = _Recording({key: PROBS[0], "mode": "train", "seed": 0})
        try:
            call(fwd, x, param)
        except Exception as exc:  # it reads the other key: KeyError
            errors.append(exc)
            continue
        if key in param.read:
            return key
    for key in ("p", "keep_prob"):  # it ran with neither key read: take what ran
        try:
            call(fwd, x, {key: PROBS[0], "mode": "train", "seed": 0})
            return key
        except Exception:
            pass
    raise errors[-1] if errors else RuntimeError("the function reads neither dropout_param['p'] nor ['keep_prob']")


def check_dropout(mod: Any, call: Caller, rng: np.random.Generator, fwd_name: str = "dropout_forward") -> Checks:  # noqa: C901 - a flat list of independent findings, read top to bottom like the checklist it prints
    fwd = getattr(mod, fwd_name)
    bwd_name = fwd_name.replace("_forward", "_backward")
    bwd = getattr(mod, bwd_name, None)
    x = rng.uniform(1.0, 2.0, SHAPE)  # positive and nonzero: a zero output is a dropped unit, also after a ReLU
    key = _find_key(fwd, call, x)
    convention = ("cs231n convention: dropout_param['p']" if key == "p"
                  else "this project's convention: dropout_param['keep_prob']")

    def run(p: float, mode: str = "train", seed: Any = 0) -> tuple[np.ndarray, Any]:
        param: dict[str, Any] = {key: p, "mode": mode}
        if seed is not None:
            param["seed"] = seed
        elif key == "keep_prob":  # model.layers needs a mask source; a fresh Generator per call
            param["rng"] = np.random.default_rng(int(rng.integers(2**32)))
        out, cache = call(fwd, x, param)
        return np.asarray(out), cache

    # Which probability does p set? Fraction of nonzero outputs for several p.
    fractions, readings = {}, []
    for p in PROBS:
        out, _ = run(p, seed=int(rng.integers(2**31)))
        kept = int(np.count_nonzero(out))
        fractions[p] = (kept / out.size, wilson(kept, out.size))
        frac = kept / out.size
        readings.append("keep" if abs(frac - p) < READ_TOL else "drop" if abs(frac - (1 - p)) < READ_TOL else None)
    verdict = readings[0] if len(set(readings)) == 1 else None
    claim = "keep" if key == "keep_prob" else docstring_claim(fwd, key)
    p0 = PROBS[0]
    f0, (lo0, hi0) = fractions[p0]
    measured = f"with {key}={p0} it keeps {100 * f0:.1f} % of units (95 % CI {100 * lo0:.1f}–{100 * hi0:.1f} %)"
    said = {"keep": "its docstring says KEEP", "drop": "its docstring says DROP", None: "its docstring does not say"}
    if verdict == "keep" and claim != "drop":
        yield Finding(True, f"{fwd_name}: {key} is the KEEP probability ({convention}): {measured}, "
                            + ", ".join(f"{100 * fractions[p][0]:.1f} % at {p}" for p in PROBS[1:]))
    elif verdict == "keep":
        yield Finding(False, f"{fwd_name}: {measured}: {key} acts as the KEEP probability (as cs231n since 2018), "
                             "but its docstring says DROP: fix the docstring")
    elif verdict == "drop" and key == "p" and claim == "drop":
        yield Finding(True, f"{fwd_name}: p is the DROP probability, as its docstring says ({measured}): the 2017 "
                            "cs231n convention; since 2018 cs231n's p, and this project's keep_prob, is the KEEP "
                            "probability, so a net written for those drops the wrong fraction")
    elif verdict == "drop":
        who = ("but the name keep_prob (this project's convention) says KEEP" if key == "keep_prob" else
               "but the docstring (and cs231n since 2018) says KEEP" if claim == "keep" else
               "but cs231n since 2018 says KEEP (its docstring does not say)")
        yield Finding(False, f"{fwd_name}: {measured}: {key} acts as a DROP probability, {who}")
    else:
        yield Finding(False, f"{fwd_name}: the fraction of units kept does not follow {key}: "
                             + ", ".join(f"{100 * fractions[p][0]:.1f} % at {key}={p}" for p in PROBS)
                             + f" (95 % CIs about ±0.2 points): {key} is neither the KEEP nor the DROP probability "
                             f"({said[claim]})")
    by_verdict: dict[str | None, float] = {"keep": p0, "drop": 1 - p0}
    keep = by_verdict.get(verdict, f0)  # the probability the function really keeps with

    # Inverted dropout: train mode divides the kept units by the keep probability, so the mean is preserved.
    out, cache = run(p0, seed=123)
    kept = out != 0
    ratio = float(out.sum() / x.sum())
    scale = float(np.median(out[kept] / x[kept])) if kept.any() else float("nan")
    if abs(ratio - 1) < 0.02:
        yield Finding(True, f"{fwd_name}: inverted dropout: kept units scaled by {scale:.3f} ≈ 1/{keep:.2f}, the "
                            f"train-mode mean is preserved ({100 * ratio:.1f} % of the input's)")
    elif abs(scale - 1) < 1e-6:
        yield Finding(False, f"{fwd_name}: train mode does not rescale the kept units (out = x where kept): the mean "
                             f"drops to {100 * ratio:.1f} % of the input's at {key}={p0}; inverted dropout divides "
                             "them by the keep probability (x * mask / keep) so that test mode is the identity")
    else:
        yield Finding(False, f"{fwd_name}: train mode scales the kept units by {scale:.3f} at {key}={p0}, keeping "
                             f"{100 * f0:.1f} %: the mean becomes {100 * ratio:.1f} % of the input's; inverted dropout "
                             f"scales by 1/keep probability = {1 / max(f0, 1e-12):.3f}")

    # Test mode is the identity.
    out_t, cache_t = run(p0, mode="test")
    if close(out_t, x):
        yield Finding(True, f"{fwd_name}: test mode returns x unchanged")
    elif np.count_nonzero(out_t) < out_t.size:
        zeroed = 1 - np.count_nonzero(out_t) / out_t.size
        yield Finding(False, f"{fwd_name}: in test mode it still drops units ({100 * zeroed:.1f} % zeroed at "
                             f"{key}={p0}): with dropout_param['mode']='test' it must return x unchanged")
    else:
        yield Finding(False, f"{fwd_name}: in test mode it multiplies x by {float(np.median(out_t / x)):.3f} at "
                             f"{key}={p0}: inverted dropout's test mode is the identity (train mode already divides "
                             "by the keep probability)")

    # The same seed gives the same mask, another seed (or none) another one.
    same = np.array_equal(run(p0, seed=7)[0], run(p0, seed=7)[0])
    other = not np.array_equal(run(p0, seed=7)[0], run(p0, seed=8)[0])
    fresh = not np.array_equal(run(p0, seed=None)[0], run(p0, seed=None)[0])
    how = ("np.random.seed(dropout_param['seed']) when 'seed' is given (cs231n)" if key == "p"
           else "np.random.default_rng(dropout_param['seed'])")
    if same and other and fresh:
        yield Finding(True, f"{fwd_name}: the same dropout_param['seed'] gives the same mask, another seed or none "
                            "a new one")
    elif not same:
        yield Finding(False, f"{fwd_name}: two train-mode calls with the same dropout_param['seed'] gave different "
                             f"masks: the seed does not reach the mask; draw it after {how}")
    else:
        what = "different seeds" if not other else "calls without a seed"
        yield Finding(False, f"{fwd_name}: {what} gave the same mask: the mask must be drawn from the RNG, "
                             "afresh on every training step")

    if bwd is None:
        return
    dout = rng.standard_normal(SHAPE)
    dx = np.asarray(call(bwd, dout, cache))
    mask = out / x  # the forward's mask, scaling included
    dx_t = np.asarray(call(bwd, dout, cache_t))
    if dx.shape != x.shape:
        yield Finding(False, f"{bwd_name}: dx has shape {dx.shape}, expected {x.shape}")
    elif close(dx, dout * mask) and close(dx_t, dout):
        yield Finding(True, f"{bwd_name}: dout times the forward's mask (scaling included); dout in test mode")
    elif not close(dx, dout * mask):
        grad_kept = dx != 0
        stale = float(np.mean(kept & ~grad_kept)) / max(float(np.mean(kept)), 1e-12)
        leaked = float(np.mean(~kept & grad_kept)) / max(float(np.mean(~kept)), 1e-12)
        if stale > 0.01 or leaked > 0.01:
            yield Finding(False, f"{bwd_name}: its gradient is zero at {100 * stale:.1f} % of the units the forward "
                                 f"kept and nonzero at {100 * leaked:.1f} % of those it dropped: it draws a new mask; "
                                 "use the forward's mask from the cache")
        else:
            g = float(np.median(dx[kept] / dout[kept]))
            yield Finding(False, f"{bwd_name}: the mask is the forward's, but kept units get dout * {g:.3f} where the "
                                 f"forward scaled them by {scale:.3f}: use the same scaled mask")
    else:
        yield Finding(False, f"{bwd_name}: with a test-mode cache it does not return dout unchanged")
