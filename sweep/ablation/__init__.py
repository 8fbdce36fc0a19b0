"""Seed-paired ablations: the grid of cells, who trains each once, and what it will cost.

- `runner`: `run_ablation` (train every missing cell of keep_prob x size x factors x seeds)
- `claims`: a cell claimed by one process at a time (flock), so no cell is trained twice
- `cost`: the wall-time estimate printed (and confirmed) before a long grid
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .runner import run_ablation

__all__ = ['run_ablation']

__getattr__, __dir__ = lazy_exports(__name__, {'run_ablation': '.runner'})
