"""dropout-sweep: does dropout regularize a network, and by how much?

The public Python API (the `sweep` command line is a thin layer over it)::

    import sweep

    cfg = sweep.load_config(trials=12, epochs=5)   # the built-in digits sweep, smaller
    result = sweep.run(cfg)                        # SweepResult: best trial, trials table (pandas)
    ablation = sweep.ablate(cfg, seeds=3)          # AblationResult: cells and paired differences
    report = sweep.report(cfg)                     # Report: report.md, figures, the verdict
    net = sweep.load_study(cfg).best_model()       # the best network, a model.FullyConnectedNet

Names are imported on first use (as Optuna's top level does), so `import sweep`
loads nothing heavy; errors a person can cause are `sweep.ConfigError`, one line
naming the setting, as the CLI prints them.
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from sweep.api import ablate, compare, load_config, load_study, report, run, status
    from sweep.config.domains import ConfigError
    from sweep.config.sweep_file import SweepConfig
    from sweep.results import AblationResult, Report, StudyResults, SweepResult
    from sweep.search.status import StudyStatus

_EXPORTS = {
    **dict.fromkeys(["ablate", "compare", "load_config", "load_study", "report", "run", "status"], "sweep.api"),
    **dict.fromkeys(["AblationResult", "Report", "StudyResults", "SweepResult"], "sweep.results"),
    "ConfigError": "sweep.config.domains",
    "SweepConfig": "sweep.config.sweep_file",
    "StudyStatus": "sweep.search.status",
}
__all__ = [
    "AblationResult",
    "ConfigError",
    "Report",
    "StudyResults",
    "StudyStatus",
    "SweepConfig",
    "SweepResult",
    "ablate",
    "compare",
    "load_config",
    "load_study",
    "report",
    "run",
    "status",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
