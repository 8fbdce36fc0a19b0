"""The layout rules docs/architecture.md states, checked on the source (ast, no imports)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "sweep"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _exceptions() -> tuple[set[str], set[str]]:
    """(modules, functions) the architecture page lists as allowed over the limits."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = set(re.findall(r"^\| module `(sweep/[\w/]+\.py)`", text, re.M))
    functions = set(re.findall(r"^\| function `([\w.]+)`", text, re.M))
    return modules, functions


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(SWEEP.rglob("*.py"))]


def _subpackage(module: str) -> str | None:
    """'sweep.search.runner' -> 'search'; a top-level module ('sweep.paths') -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_module_or_function_over_the_limits_unless_listed_with_its_reason() -> None:
    allowed_modules, allowed_functions = _exceptions()
    over = []
    for path, tree in _sources():
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES and rel not in allowed_modules:
            over.append(f"{rel}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                name = f"{_module_name(path).removeprefix('sweep.')}.{node.name}"
                if length > MAX_FUNCTION_LINES and name not in allowed_functions:
                    over.append(f"{name}: {length} lines")
    assert not over, "over the limits and not listed in docs/architecture.md: " + "; ".join(over)


def test_the_listed_exceptions_are_still_over_the_limits() -> None:
    """A listed exception that shrank below the limit is taken off the list (the list stays true)."""
    allowed_modules, allowed_functions = _exceptions()
    assert allowed_modules and allowed_functions, "the exceptions table was not found"
    sizes: dict[str, int] = {}
    for path, tree in _sources():
        sizes[path.relative_to(ROOT).as_posix()] = len(path.read_text(encoding="utf-8").splitlines())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{_module_name(path).removeprefix('sweep.')}.{node.name}"
                sizes[name] = (node.end_lineno or node.lineno) - node.lineno + 1
    stale = [m for m in allowed_modules if sizes.get(m, 0) <= MAX_MODULE_LINES]
    stale += [f for f in allowed_functions if sizes.get(f, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"listed in docs/architecture.md but within the limits (or gone): {stale}"


def test_no_private_name_crosses_a_subpackage_and_no_import_points_back_up() -> None:
    found = []
    for path, tree in _sources():
        me = _module_name(path)
        mine = _subpackage(me)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module or not node.module.startswith("sweep"):
                continue
            theirs = _subpackage(node.module)
            private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
            if private and theirs != mine and node.module != "sweep._lazy":
                found.append(f"{me} imports private {private} from {node.module}")
            if mine is not None and (node.module in ("sweep", "sweep.api", "sweep.cli", "sweep.results")):
                found.append(f"{me} (in a subpackage) imports {node.module}, which is above it")
    assert not found, "; ".join(found)
