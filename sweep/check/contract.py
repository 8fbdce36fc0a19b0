"""Before a sweep trains your own net (``--model MODULE:CLASS``): does the class keep the cs231n contract?

The contract (cs231n assignment 2's FullyConnectedNet): constructor keywords
hidden_dims, input_dim, num_classes, a dropout keyword (dropout_keep_ratio; the
older ``dropout``; or this project's keep_prob), normalization, reg,
weight_scale, dtype, seed; a ``params`` dict W1..WL, b1..bL; ``loss(X)``
returning scores (N, C) and ``loss(X, y)`` returning (loss, grads) with a
gradient per param. `resolve_model` checks it on tiny nets (well under a second)
and measures what the dropout keyword means, as `sweep check` does: the share of
hidden units whose dW2 row is non-zero is the share kept. A broken contract is
one ValueError line (the CLI's exit 2) before any trial starts.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sweep.check.common import Caller, one_line
from sweep.check.dropout import wilson
from sweep.check.runner import SEED, import_target
from sweep.config.model_spec import ModelSpec, used_normalizations

KEYWORDS = ("hidden_dims", "input_dim", "num_classes", "normalization", "reg", "weight_scale", "dtype", "seed")
KEEP_KEYWORDS = ("dropout_keep_ratio", "dropout", "keep_prob")
PROBE = 0.25  # away from 0.5, where keep and drop give the same share
UNITS, CALLS = 1000, 20  # 20 000 units: a 95 % CI of about +-0.6 points on the share kept
TOL = 0.03


class ContractError(ValueError):
    """The class cannot be trained as a cs231n FullyConnectedNet: one line, exit 2."""


def import_model_class(spec: ModelSpec) -> type:
    """The class ``spec`` names, imported with its path first on sys.path (which stays: a worker imports it once)."""
    if spec.path is not None:
        folder = str(Path(spec.path).expanduser().resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module = import_target(spec.module, spec.path)
    cls = getattr(module, spec.class_name, None)
    if not inspect.isclass(cls):
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__]
        raise ContractError(f"{spec.module} has no class {spec.class_name!r} "
                            f"(it defines: {', '.join(classes) or 'no class'})")
    return cls


def resolve_model(spec: ModelSpec, normalizations: Iterable[str]) -> tuple[ModelSpec, str]:
    """The spec with how to drive the class filled in, and the one line that says so.

    Args:
        spec: ``--model`` / ``[model]`` as given.
        normalizations: the values of ``normalization`` the sweep or ablation may train ('none' left out).

    Raises:
        ValueError: one line (``--model X: ...``) naming what is missing or wrong.
    """
    spec = spec.absolute()
    saved_path, saved_state = list(sys.path), np.random.get_state()
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cls = import_model_class(spec)
            spec, line = _drive(cls, spec, [n for n in normalizations if n != "none"])
    except ValueError as exc:
        raise ContractError(f"--model {spec.target}: {exc}") from None
    finally:
        sys.path[:] = saved_path
        np.random.set_state(saved_state)
    return spec, line


def checked_config(cfg: Any) -> tuple[Any, str]:
    """A `SweepConfig` whose own net (if any) is checked and ready for the workers, and the line saying how."""
    if cfg.model is None or cfg.model.checked:
        return cfg, ""
    unsupported = settings_beyond_the_contract(cfg)
    if unsupported:
        raise ContractError(f"--model {cfg.model.target}: {unsupported} is not a cs231n FullyConnectedNet "
                            "keyword or a Solver setting, so your own net cannot take it; fix it at its default")
    model, line = resolve_model(cfg.model, used_normalizations(cfg))
    return replace(cfg, model=model), line


# What a cs231n net or this project's Solver takes; a newer TrainParams field (a regularizer of the
# built-in net) must stay at its default with your own net, or it would be ignored silently.
CONTRACT_PARAMS = ("keep_prob", "hidden_dims", "learning_rate", "normalization", "reg", "weight_scale",
                   "batch_size", "update_rule", "epochs", "lr_decay")


def settings_beyond_the_contract(cfg: Any) -> str:
    """The first setting (as `space.NAME`, `ablation.vary.NAME` or `ablation.params.NAME`) off its default that
    only the built-in net takes, or ''."""
    from dataclasses import MISSING, fields

    from sweep.config.space import TrainParams

    for f in fields(TrainParams):
        if f.name in CONTRACT_PARAMS or f.default is MISSING:
            continue
        space: Any = getattr(cfg.space, f.name, None)  # a Fixed, Choice or Range, or not searched at all
        values: set[Any] = set(getattr(space, "choices", ()))
        if hasattr(space, "value"):
            values.add(space.value)
        if hasattr(space, "low"):
            values |= {space.low, space.high}
        if values - {f.default}:
            return f"space.{f.name}"
        grid = cfg.ablation
        if grid is not None and set(dict(grid.vary).get(f.name, ())) - {f.default}:
            return f"ablation.vary.{f.name}"
        if grid is not None and grid.params is not None and getattr(grid.params, f.name) != f.default:
            return f"ablation.params.{f.name}"
    return ""


def _drive(cls: type, spec: ModelSpec, norms: list[str]) -> tuple[ModelSpec, str]:
    """Check the contract on tiny nets; measure the dropout keyword's meaning and the seed's effect."""
    kwargs = _keywords(cls)
    keep_kw = next((k for k in KEEP_KEYWORDS if k in kwargs), "dropout_keep_ratio")
    spec = replace(spec, keep_kw=keep_kw)
    call = Caller(np.random.default_rng(SEED))
    probe = Probe(cls, keep_kw, call)
    probe.check_loss(None)
    for norm in norms:
        probe.check_loss(norm)
    share, (lo, hi) = probe.share_kept(PROBE)
    if abs(share - PROBE) <= TOL:
        means, keep_is_drop = "KEEP", False
    elif abs(share - (1 - PROBE)) <= TOL:
        means, keep_is_drop = "DROP", True
    elif share == 1.0:
        raise ContractError(f"with {keep_kw}={PROBE} it keeps every hidden unit: the net ignores {keep_kw}; "
                            f"`sweep check {spec.target}` says more")
    else:
        raise ContractError(f"with {keep_kw}={PROBE} it keeps {100 * share:.1f} % of hidden units (95 % CI "
                            f"{100 * lo:.1f}-{100 * hi:.1f} %), neither {100 * PROBE:g} % (a keep probability) nor "
                            f"{100 * (1 - PROBE):g} % (a drop probability); `sweep check {spec.target}` says more")
    off = 0.0 if keep_is_drop and keep_kw == "dropout" else 1.0
    if probe.share_kept(off)[0] != 1.0:
        raise ContractError(f"{keep_kw}={off:g} still drops units; it must mean no dropout")
    spec = replace(spec, keep_is_drop=keep_is_drop, off=off, pass_seed=not probe.seed_freezes_masks(), checked=True)
    passed = "1 - keep_prob" if keep_is_drop else "keep_prob"
    against = (" against its name (a bug in the net or its dropout layer: `sweep check` finds it)"
               if keep_is_drop and keep_kw != "dropout" else "")
    seed = ("" if spec.pass_seed else "; its seed fixes every call's dropout mask (cs231n's gradient-check seed), "
            "so numpy's global RNG is seeded from each run instead")
    line = (f"model {spec.class_name} from {spec.module}: {keep_kw}={PROBE} keeps {100 * share:.1f} % of units "
            f"(95 % CI {100 * lo:.1f}-{100 * hi:.1f} %): a {means} probability{against}, given {passed}{seed}")
    return spec, line


def _keywords(cls: type) -> set[str]:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        raise ContractError(f"the constructor's signature of {cls.__name__} cannot be read") from None
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {*KEYWORDS, "dropout_keep_ratio", *params}
    missing = [k for k in KEYWORDS if k not in params]
    if not any(k in params for k in KEEP_KEYWORDS):
        missing.insert(3, "dropout_keep_ratio (or dropout)")
    if missing:
        raise ContractError(f"{cls.__name__}'s constructor takes no {', '.join(missing)} (it takes "
                            f"{', '.join(params) or 'nothing'}); a cs231n FullyConnectedNet takes hidden_dims, "
                            "input_dim, num_classes, dropout_keep_ratio, normalization, reg, weight_scale, dtype, seed")
    return set(params)


class Probe:
    """Tiny nets of the class: the loss contract, the share of units kept, whether a seed freezes the masks."""

    def __init__(self, cls: type, keep_kw: str, call: Caller) -> None:
        self.cls, self.keep_kw, self.call = cls, keep_kw, call

    def build(self, hidden: list[int], dims: tuple[int, int], keep: float, norm: str | None = None,
              seed: int | None = None, dtype: Any = np.float32) -> Any:
        kw: dict[str, Any] = {"input_dim": dims[0], "num_classes": dims[1], self.keep_kw: keep, "normalization": norm,
                              "reg": 0.0, "weight_scale": 0.1, "dtype": dtype, "seed": seed}
        try:
            net = self.call(lambda: self.cls(hidden, **kw))
        except Exception as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in kw.items() if k != "dtype")
            raise ContractError(f"{self.cls.__name__}({hidden}, {shown}) raised {one_line(exc)}") from None
        params = getattr(net, "params", None)
        if not isinstance(params, dict) or not callable(getattr(net, "loss", None)):
            raise ContractError(f"{self.cls.__name__} has no params dict or no loss(X, y=None) method")
        want = [f"{p}{i}" for i in range(1, len(hidden) + 2) for p in ("W", "b")]
        if any(k not in params for k in want):
            raise ContractError(f"params of hidden_dims={hidden} are {', '.join(params) or 'none'}; "
                                f"expected {', '.join(want)} (and gamma/beta with normalization)")
        return net

    def loss(self, net: Any, x: np.ndarray, y: np.ndarray | None = None) -> Any:
        try:
            return self.call(net.loss, x) if y is None else self.call(net.loss, x, y)
        except Exception as exc:
            mode = "loss(X)" if y is None else "loss(X, y)"
            raise ContractError(f"{mode} raised {one_line(exc)}") from None

    def check_loss(self, norm: str | None) -> None:
        """loss(X) gives scores (N, C); loss(X, y) gives a finite loss and a gradient of every param's shape."""
        n, dims = 8, (5, 3)
        net = self.build([6, 4], dims, 0.5, norm, seed=SEED)
        x = self.call.rng.standard_normal((n, dims[0])).astype(np.float32)
        y = self.call.rng.integers(0, dims[1], n)
        where = f" with normalization={norm!r}" if norm else ""
        out = self.loss(net, x, y)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise ContractError(f"loss(X, y){where} returned {type(out).__name__}, not (loss, grads dict)")
        loss, grads = out
        if not np.isfinite(float(loss)):
            raise ContractError(f"loss(X, y){where} returned a non-finite loss {loss!r}")
        bad = [k for k, v in net.params.items() if np.shape(grads.get(k)) != np.shape(v)]
        if bad:
            raise ContractError(f"loss(X, y){where} returns no gradient of the params' shape for {', '.join(bad)}")
        scores = self.loss(net, x)
        if np.shape(scores) != (n, dims[1]):
            raise ContractError(f"loss(X){where} returned shape {np.shape(scores)}, not the scores' ({n}, {dims[1]})")

    def _kept_rows(self, net: Any) -> np.ndarray:
        """Which hidden units one train-mode call keeps: the non-zero rows of dW2 for one example."""
        x, y = np.ones((1, 4)), np.zeros(1, dtype=np.int64)
        grads = self.loss(net, x, y)[1]
        return np.any(np.asarray(grads["W2"]) != 0, axis=1)

    def _unit_net(self, keep: float, seed: int | None = None) -> Any:
        """One hidden layer whose every unit is 1 before dropout (W1 = 0, b1 = 1), so dropout alone zeroes it."""
        net = self.build([UNITS], (4, 3), keep, seed=seed, dtype=np.float64)
        net.params["W1"][...] = 0.0
        net.params["b1"][...] = 1.0
        net.params["W2"][...] = self.call.rng.standard_normal(net.params["W2"].shape)
        return net

    def share_kept(self, keep: float) -> tuple[float, tuple[float, float]]:
        net = self._unit_net(keep)
        kept = sum(int(self._kept_rows(net).sum()) for _ in range(CALLS))
        return kept / (UNITS * CALLS), wilson(kept, UNITS * CALLS)

    def seed_freezes_masks(self) -> bool:
        """True when a net built with a seed drops the same units on every call."""
        net = self._unit_net(0.5, seed=SEED)
        return bool(np.array_equal(self._kept_rows(net), self._kept_rows(net)))
