"""Lazy exports for a package's `__init__` (as Optuna's top level does): a name is imported
from its module on first use, so `import sweep` and `import sweep.config` stay fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, exporting each name from its module.

    Args:
        package: the package's `__name__`.
        exports: public name -> the module (relative, e.g. ".datasets") that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
