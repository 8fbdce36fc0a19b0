"""`sweep check MODULE[:CLASS] [--model-path DIR]`: your cs231n layers or net against this project's reference.

For a module: every cs231n layer function it defines (affine, relu,
affine_relu, batchnorm incl. the alternative backward, layernorm, dropout,
softmax_loss, svm_loss) is checked for forward values, numeric gradients of
its backward and the properties that matter (sweep/check_layers.py,
sweep/check_dropout.py). For MODULE:CLASS: a FullyConnectedNet
(sweep/check_net.py). One line per finding; exit 0 when everything holds,
1 when something is wrong, 2 for bad input (raised as ValueError, which the
CLI prints as one line).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import numpy as np

from sweep.check.common import Caller, Checks, Finding, guarded, one_line
from sweep.check.dropout import check_dropout
from sweep.check.layers import (
    check_affine,
    check_affine_relu,
    check_batchnorm,
    check_layernorm,
    check_relu,
    check_softmax_loss,
    check_svm_loss,
)
from sweep.check.net import NotANet, check_net

SEED = 2017  # the check's own inputs and the global-RNG seeds it hands the code under test

# forward (or loss) name -> (its check, the names that check covers)
LAYER_CHECKS: dict[str, tuple[Callable[..., Checks], tuple[str, ...]]] = {
    "affine_forward": (check_affine, ("affine_backward",)),
    "relu_forward": (check_relu, ("relu_backward",)),
    "affine_relu_forward": (check_affine_relu, ("affine_relu_backward",)),
    "batchnorm_forward": (check_batchnorm, ("batchnorm_backward", "batchnorm_backward_alt")),
    "layernorm_forward": (check_layernorm, ("layernorm_backward",)),
    "dropout_forward": (check_dropout, ("dropout_backward",)),
    "relu_dropout_forward": (functools.partial(check_dropout, fwd_name="relu_dropout_forward"),
                             ("relu_dropout_backward",)),
    "softmax_loss": (check_softmax_loss, ()),
    "svm_loss": (check_svm_loss, ()),
}
PREFIXES = ("affine_", "relu_", "dropout_", "batchnorm_", "layernorm_")


_LOADED: dict[str, int] = {}  # module name -> its file's mtime (ns) when this process last imported it


def reloaded_if_edited(module: ModuleType) -> ModuleType:
    """The module, imported again if its file changed since (a notebook, or a reused worker, sees the fix)."""
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        return module
    mtime = Path(file).stat().st_mtime_ns
    if _LOADED.setdefault(module.__name__, mtime) != mtime:
        module = importlib.reload(module)
        _LOADED[module.__name__] = mtime
    return module


def import_target(target: str, model_path: str | None) -> ModuleType:
    """The module named by ``target`` (dotted name or .py file), imported with model_path first on sys.path."""
    if model_path is not None and not Path(model_path).expanduser().is_dir():
        raise ValueError(f"--model-path {model_path}: not a folder (give the folder that holds your package, "
                         "e.g. ~/assignment2 for cs231n.layers)")
    where = f" with --model-path {model_path}" if model_path else ""
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target).expanduser()
            if not path.is_file():
                raise ValueError(f"{target}: no such file (give a module name like cs231n.layers or a .py file)")
            if str(path.resolve().parent) not in sys.path:  # so it can import its siblings, as a script would
                sys.path.insert(0, str(path.resolve().parent))
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            return module
        module = reloaded_if_edited(importlib.import_module(target))
    except ValueError as exc:
        if str(exc).startswith(target):
            raise
        raise ValueError(f"cannot import {target}{where}: {one_line(exc)}") from None
    except BaseException as exc:  # anything the module raises on import, SyntaxError and SystemExit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ValueError(f"cannot import {target}{where}: {one_line(exc)}") from None
    file = getattr(module, "__file__", None)
    home = Path(model_path).expanduser().resolve() if model_path is not None else None
    if home is not None and file and not Path(file).resolve().is_relative_to(home):
        # Never check someone else's code silently: e.g. a package named like one of this project's.
        raise ValueError(f"{target} is imported from {file}, not from --model-path {model_path}: another module of "
                         "that name comes first; rename yours or check it as a file path")
    return module


def layer_findings(module: ModuleType) -> list[Finding]:
    """Every finding for the layer functions ``module`` defines; ValueError when it defines none."""
    defined = {n for n in dir(module) if callable(getattr(module, n, None)) and not n.startswith("_")}
    findings: list[Finding] = []
    covered: set[str] = set()
    for name, (check, partners) in LAYER_CHECKS.items():
        if name not in defined:
            continue
        covered |= {name, *partners}
        rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])  # the same inputs whatever else is checked
        findings += guarded(name, check(module, Caller(np.random.default_rng(rng.integers(2**63))), rng))
    unknown = sorted(n for n in defined - covered if n.startswith(PREFIXES) and inspect.isfunction(getattr(module, n)))
    if not covered:
        raise ValueError(f"{module.__name__} defines none of the cs231n layer functions "
                         f"({', '.join(LAYER_CHECKS)}); for a net give MODULE:CLASS")
    findings += [Finding(True, f"{n}: not checked (no reference for it here, or its forward is missing)")
                 for n in unknown]
    return findings


def net_findings(module: ModuleType, class_name: str) -> list[Finding]:
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__]
        raise ValueError(f"{module.__name__} has no class {class_name!r} (it defines: {', '.join(classes) or 'none'})")
    rng = np.random.default_rng([SEED, zlib.crc32(class_name.encode())])
    try:
        return list(guarded(class_name, check_net(cls, Caller(np.random.default_rng(rng.integers(2**63))), rng)))
    except NotANet as exc:
        raise ValueError(str(exc)) from None


def run_check(target: str, model_path: str | None = None, out: TextIO | None = None) -> int:
    """Check ``MODULE`` or ``MODULE:CLASS``, print one line per finding; 0 all hold, 1 something is wrong.

    Raises:
        ValueError: bad input (no such module or class, the module does not import): exit 2.
    """
    out = out or sys.stdout
    start = time.perf_counter()
    module_name, _, class_name = target.partition(":")
    if not module_name:
        raise ValueError(f"{target!r}: give MODULE (e.g. cs231n.layers or path/to/layers.py) or MODULE:CLASS")
    saved_path, saved_state = list(sys.path), np.random.get_state()
    if model_path is not None:
        sys.path.insert(0, str(Path(model_path).expanduser().resolve()))
    try:
        module = import_target(module_name, model_path)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # a student's overflow or division warnings would bury the findings
            findings = net_findings(module, class_name) if class_name else layer_findings(module)
    finally:
        sys.path[:] = saved_path
        np.random.set_state(saved_state)
    what = f"class {class_name} of {module.__name__}" if class_name else f"module {module.__name__}"
    print(f"sweep check {what} ({getattr(module, '__file__', '?')}):", file=out)
    for f in findings:
        print(f"  {'ok  ' if f.ok else 'FAIL'}  {f.text}", file=out)
    bad = sum(not f.ok for f in findings)
    seconds = time.perf_counter() - start
    summary = (f"{bad} of {len(findings)} findings are problems" if bad else f"all {len(findings)} findings hold")
    print(f"{summary} ({seconds:.1f} s)", file=out)
    return 1 if bad else 0


def cmd_check(args: Any) -> int:
    """The `sweep check` subcommand (wired in sweep/cli.py)."""
    return run_check(args.target, args.model_path)
