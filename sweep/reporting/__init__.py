"""The report: the verdict in words, the figures, report.md.

- `verdict`, `factorial_verdict`: plain-language paragraphs with the numbers filled in
- `figures`: matplotlib figures (learning curves, gap, benefit, importances, sweep history)
- `report`: `write_report` (report.md + figures, uploaded to the parent runs)
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .report import write_report
    from .verdict import verdict

__all__ = ['verdict', 'write_report']

__getattr__, __dir__ = lazy_exports(__name__, {'write_report': '.report', 'verdict': '.verdict'})
