"""Configuration: the sweep file and everything that validates what a person sets.

- `sweep_file`: `SweepConfig`, `AblationConfig`, `load_config` (TOML + overrides), `available_cores`
- `space`: the search space (`SearchSpace`) and one run's settings (`TrainParams`)
- `domains`: each setting's allowed values and `ConfigError` (one line naming the key)
- `factors`: what an ablation may vary besides keep_prob and size (`--vary`)
- `budget`: a sweep's time budget (`--timeout`)
- `preflight`: tracking URI, storage URL and working-folder checks before anything is created
- `bounds`: `--jobs` against the cores, the largest network against the memory
- `display`: numbers as a person writes them (MLflow params, progress lines, the report)
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .domains import ConfigError
    from .space import SearchSpace, TrainParams
    from .sweep_file import AblationConfig, SweepConfig, load_config

__all__ = ['AblationConfig', 'ConfigError', 'SearchSpace', 'SweepConfig', 'TrainParams', 'load_config']

__getattr__, __dir__ = lazy_exports(__name__, {
    'SweepConfig': '.sweep_file', 'AblationConfig': '.sweep_file', 'load_config': '.sweep_file',
    'ConfigError': '.domains', 'SearchSpace': '.space', 'TrainParams': '.space',
})
