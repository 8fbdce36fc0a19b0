"""The factors an ablation may vary besides keep_prob and the training-set size.

``sweep ablate --vary NAME=V1,V2,...`` (repeatable) or, in the sweep file,
``[ablation] vary = {NAME = [V1, V2, ...]}``: NAME is a fixed training
parameter of `TrainParams` (:data:`VARY_FACTORS`), each value is checked
against that parameter's domain. The grid is then
keep_prob x size x every factor's levels x seeds.

A level is written as text (:func:`level_text`): that text names the cell runs
(``cell-n500-k0.5-s0@normalization=batchnorm``), tags them
(``ablation.factor.normalization = batchnorm``) and reads back exactly
(:func:`level_value`), so a resumed ablation finds its cells again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sweep.config.domains import (
    DOMAINS,
    KEEP_PROB_HELP,
    ConfigError,
    check_keys,
    is_dropout_key,
)
from sweep.config.space import _check_hidden_dims, _from_text

__all__ = [
    "FACTOR_TAG_PREFIX",
    "MAX_GRID_CELLS",
    "VARY_FACTORS",
    "Factors",
    "Levels",
    "cell_levels",
    "check_vary",
    "grid_size",
    "level_text",
    "level_value",
    "parse_vary_args",
    "parse_vary_text",
    "vary_text",
]

#: Training parameters an ablation can vary (every TrainParams field but keep_prob, which is the grid's own).
VARY_FACTORS = (
    "normalization", "hidden_dims", "learning_rate", "weight_scale", "epochs", "batch_size",
    "update_rule", "lr_decay", "reg", "input_keep_prob", "max_norm", "augment_flip", "augment_shift",
)
#: A grid of more cells than this is refused unless ``--yes`` (one cell is one training run).
MAX_GRID_CELLS = 200
FACTOR_TAG_PREFIX = "ablation.factor."

#: ((name, (value, ...)), ...) in the order given; values typed as TrainParams takes them.
Factors = tuple[tuple[str, tuple[Any, ...]], ...]
#: One cell's levels: ((factor, level text), ...) sorted by factor; () for an ablation without --vary.
Levels = tuple[tuple[str, str], ...]

# Names that are factors already, or only exist in the search space: say what to write instead.
_ELSEWHERE = {
    "keep_prob": "keep_prob is the ablation's own factor: give its values with --keep-probs (keep_probs in [ablation])",
    "keep_probs": "keep_prob is the ablation's own factor: give its values with --keep-probs (keep_probs in [ablation])",
    "size": "the training-set size is already a factor: give it with --sizes (sizes in [ablation])",
    "sizes": "the training-set size is already a factor: give it with --sizes (sizes in [ablation])",
    "num_train": "the training-set size is already a factor: give it with --sizes (sizes in [ablation])",
    "seed": "seeds are the replicates of every cell, not a factor: give their number with --seeds",
    "seeds": "seeds are the replicates of every cell, not a factor: give their number with --seeds",
    "depth": "depth and width are searched as such, but an ablation varies whole nets: "
             "write hidden_dims, e.g. hidden_dims=512,1024-1024",
    "width": "depth and width are searched as such, but an ablation varies whole nets: "
             "write hidden_dims, e.g. hidden_dims=512,1024-1024",
}


def level_text(name: str, value: Any) -> str:
    """The canonical text of one level: ``512-512``, ``0.001`` (shortest round-trip float), ``batchnorm``."""
    if name == "hidden_dims":
        return "-".join(str(w) for w in value)
    if DOMAINS[name].kind is float:
        return repr(float(value))
    if DOMAINS[name].kind is bool:
        return "true" if value else "false"
    return str(value)


def level_value(name: str, text: str) -> Any:
    """Inverse of :func:`level_text` (also takes any text a user may write for the factor)."""
    return _check_value(name, text, f"vary.{name}")


def _check_value(name: str, value: object, key: str) -> Any:
    if name == "hidden_dims":
        return _check_hidden_dims(value, key)
    dom = DOMAINS[name]
    if isinstance(value, str):
        value = _from_text(value.strip(), name, key)
    return dom.check(value, key)


def _check_name(name: object, prefix: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a factor name must be a non-empty text, got {name!r}", key=prefix.rstrip("."))
    if name in _ELSEWHERE:
        raise ConfigError(_ELSEWHERE[name], key=prefix + name)
    if is_dropout_key(name):
        raise ConfigError(f"{KEEP_PROB_HELP}; {_ELSEWHERE['keep_prob']}", key=prefix + name)
    check_keys([name], VARY_FACTORS, section="the factors an ablation can vary", prefix=prefix)
    return name


def check_vary(table: object, key: str = "ablation.vary") -> Factors:
    """Validate ``{NAME: [V1, V2, ...]}`` (a mapping, or ``Factors``) -> ``Factors``.

    Raises:
        ConfigError: naming the factor (``ablation.vary.learning_rate[1]``) and what is allowed.
    """
    if isinstance(table, Mapping):
        items: Sequence[Any] = list(table.items())
    elif isinstance(table, list | tuple):
        items = table
    else:
        raise ConfigError(f"must be a table of factors, e.g. {{normalization = [\"none\", \"batchnorm\"]}}, "
                          f"got {table!r}", key=key)
    out: list[tuple[str, tuple[Any, ...]]] = []
    for entry in items:
        if not (isinstance(entry, tuple | list) and len(entry) == 2):
            raise ConfigError(f"must be a table of factors, got {table!r}", key=key)
        name, values = entry
        name = _check_name(name, key + ".")
        if name in (n for n, _ in out):
            raise ConfigError("is given twice: give all its values at once, e.g. normalization=none,batchnorm",
                              key=f"{key}.{name}")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"must be a non-empty list of values, got {values!r}", key=f"{key}.{name}")
        if name == "hidden_dims" and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"is a list of nets, each written \"512-512\" or [512, 512] (a one-layer net: \"512\"); "
                              f"got {list(values)!r}", key=f"{key}.{name}")
        levels = tuple(_check_value(name, v, f"{key}.{name}[{i}]") for i, v in enumerate(values))
        texts = [level_text(name, v) for v in levels]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"repeats a value: {texts!r}", key=f"{key}.{name}")
        out.append((name, levels))
    return tuple(out)


def parse_vary_args(args: Sequence[str]) -> Factors:
    """``["normalization=none,batchnorm", "hidden_dims=512-512,1024-1024"]`` (the --vary flags) -> Factors.

    Raises:
        ConfigError: keyed ``vary`` / ``vary.NAME[i]``.
    """
    pairs: list[tuple[str, list[str]]] = []
    for arg in args:
        name, sep, values = str(arg).partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ConfigError(f"expected NAME=V1,V2,... (e.g. normalization=none,batchnorm), got {arg!r}", key="vary")
        pairs.append((name.strip(), [v.strip() for v in values.split(",") if v.strip()]))
    return check_vary(pairs, key="vary")


def vary_text(factors: Factors) -> str:
    """The parent run's ``vary`` param: ``normalization=none,batchnorm;hidden_dims=512,1024-1024``."""
    return ";".join(f"{n}=" + ",".join(level_text(n, v) for v in values) for n, values in factors)


def parse_vary_text(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Inverse of :func:`vary_text`, as level texts (the report's order of levels)."""
    out = []
    for part in filter(None, (text or "").split(";")):
        name, _, values = part.partition("=")
        out.append((name, tuple(values.split(","))))
    return tuple(out)


def cell_levels(tags: Mapping[str, str]) -> Levels:
    """A cell run's factor levels from its ``ablation.factor.*`` tags (() for runs made without --vary)."""
    return tuple(sorted((k.removeprefix(FACTOR_TAG_PREFIX), v) for k, v in tags.items()
                        if k.startswith(FACTOR_TAG_PREFIX)))


def grid_size(n_keep: int, n_sizes: int, factors: Factors, seeds: int) -> tuple[int, str]:
    """Number of cells and how it is made, e.g. ``(48, "keep_prob 2 x sizes 2 x normalization 3 x 4 seeds")``."""
    parts = [f"keep_prob {n_keep}", f"sizes {n_sizes}"] + [f"{n} {len(v)}" for n, v in factors] + [f"{seeds} seeds"]
    return n_keep * n_sizes * math.prod(len(v) for _, v in factors) * seeds, " x ".join(parts)
