"""`sweep check`: a student's cs231n layers or net checked against `model/`.

- `runner`: `run_check` (find and import the target, print one line per finding)
- `layers`, `dropout`, `net`: the checks; `common`: shared helpers
- `contract`: before `sweep run|ablate --model` trains your own net, the cs231n contract and
  what its dropout keyword means (measured)
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .runner import run_check

__all__ = ['run_check']

__getattr__, __dir__ = lazy_exports(__name__, {'run_check': '.runner'})
