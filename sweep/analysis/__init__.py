"""Statistics (numpy and scipy only): what the report's numbers are.

- `intervals`: t-intervals, bootstrap checks, paired tests, Holm
- `stats`: an ablation's cells summarized and compared against keep_prob 1.0 (`summarize`)
- `factorial`: interactions when an ablation varies more factors (`summarize_factorial`)
- `importance`: which hyperparameters mattered in the sweep
- `confseq`: anytime-valid intervals for deciding with fewer seeds
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .factorial import summarize_factorial
    from .stats import AblationSummary, summarize

__all__ = ['AblationSummary', 'summarize', 'summarize_factorial']

__getattr__, __dir__ = lazy_exports(__name__, {'summarize': '.stats', 'summarize_factorial': '.factorial', 'AblationSummary': '.stats'})
