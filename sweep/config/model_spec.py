"""Which network a sweep trains: the built-in `model.FullyConnectedNet`, or your own cs231n-style class.

``--model MODULE:CLASS`` (MODULE a dotted name or a path to a .py file),
``--model-path DIR`` (put first on the import path), or in the sweep file::

    [model]
    class = "tests/fixtures/cs231n_net.py:FullyConnectedNet"
    path = "~/assignment2"        # optional

A `ModelSpec` is only strings and numbers, so it travels with every task to a
loky or Dask worker, which imports the class itself (sweep.own_net). Before any
trial, sweep.check.contract checks the class and fills in how to drive it
(`keep_kw`, `keep_is_drop`, `off`, `pass_seed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.config.domains import ConfigError

BUILT_IN = "model:FullyConnectedNet"  # what a study without [model] trains (recorded as such)
MODEL_KEYS = ("class", "path")


@dataclass(frozen=True)
class ModelSpec:
    """Your own net: where to import it from, and (after the contract check) how to drive it.

    Attributes:
        target: ``MODULE:CLASS``; MODULE is a dotted module name or a .py file.
        path: a folder put first on the import path (``--model-path``), or None.
        keep_kw: the constructor's dropout keyword (dropout_keep_ratio, dropout or keep_prob).
        keep_is_drop: the keyword acts as a DROP probability (measured): the net gets 1 - keep_prob.
        off: the keyword's value that means "no dropout" (1.0, or 0.0 for a drop probability).
        pass_seed: give the constructor ``seed`` (False when a seed freezes its dropout masks, as in
            cs231n, where it is meant for gradient checks: numpy's global RNG is seeded instead).
    """

    target: str
    path: str | None = None
    keep_kw: str = "dropout_keep_ratio"
    keep_is_drop: bool = False
    off: float = 1.0
    pass_seed: bool = True
    checked: bool = False  # set by the contract check; only a checked spec is sent to workers

    def __post_init__(self) -> None:
        module, sep, cls = str(self.target).rpartition(":")
        if not sep or not module or not cls.isidentifier():
            raise ConfigError(f"must be MODULE:CLASS (MODULE a dotted name or a .py file), e.g. "
                              f"cs231n.classifiers.fc_net:FullyConnectedNet, got {self.target!r}", key="model.class")
        if self.path is not None and (not isinstance(self.path, str) or not self.path.strip()):
            raise ConfigError(f"must be a folder (text), got {self.path!r}", key="model.path")

    @property
    def module(self) -> str:
        return self.target.rpartition(":")[0]

    @property
    def class_name(self) -> str:
        return self.target.rpartition(":")[2]

    def absolute(self) -> ModelSpec:
        """The same spec with a .py file and the path made absolute (a worker's folder may differ)."""
        from dataclasses import replace

        module = self.module
        if module.endswith(".py") or "/" in module:
            module = str(Path(module).expanduser().resolve())
        path = None if self.path is None else str(Path(self.path).expanduser().resolve())
        return replace(self, target=f"{module}:{self.class_name}", path=path)

    def keyword_value(self, keep_prob: float) -> float:
        """What the constructor's dropout keyword gets for a keep probability."""
        if keep_prob >= 1.0:
            return self.off
        return 1.0 - keep_prob if self.keep_is_drop else keep_prob

    def record(self) -> dict[str, str]:
        """What the study and every MLflow run record: module, class (and the import folder)."""
        out = {"module": self.module, "class": self.class_name}
        if self.path:
            out["path"] = self.path
        return out


def built_in_record() -> dict[str, str]:
    module, _, cls = BUILT_IN.partition(":")
    return {"module": module, "class": cls}


def model_from_table(table: Any) -> ModelSpec:
    """`[model]` of a sweep file (class, path)."""
    if not isinstance(table, dict):
        raise ConfigError(f"must be a table ([model] with class = \"MODULE:CLASS\"), got {table!r}", key="model")
    if "class" not in table:
        raise ConfigError("needs class = \"MODULE:CLASS\" (e.g. \"cs231n.classifiers.fc_net:FullyConnectedNet\")",
                          key="model.class")
    if not isinstance(table["class"], str):
        raise ConfigError(f"must be text \"MODULE:CLASS\", got {table['class']!r}", key="model.class")
    return ModelSpec(table["class"], table.get("path"))


def model_from_overrides(current: ModelSpec | None, model: object, path: object) -> ModelSpec | None:
    """`--model` / `--model-path` over the file's [model]; ``--model-path`` alone needs a model to apply to."""
    if model is None and path is None:
        return current
    if model is None and current is None:
        raise ConfigError("is given without --model MODULE:CLASS (or [model] class in the sweep file)",
                          key="--model-path")
    target = str(model) if model is not None else current.target  # type: ignore[union-attr]
    folder = path if path is not None else (current.path if current is not None else None)
    try:
        return ModelSpec(target, None if folder is None else str(folder))
    except ConfigError as err:
        raise ConfigError(err.detail, key="--model" if err.key == "model.class" else "--model-path") from None


def used_normalizations(cfg: Any) -> tuple[str, ...]:
    """The normalizations a sweep or its ablation may train (a `SweepConfig`): the contract checks each."""
    space = cfg.space.normalization
    values = set(getattr(space, "choices", ())) | ({space.value} if hasattr(space, "value") else set())
    grid = cfg.ablation
    if grid is not None:
        values |= set(dict(grid.vary).get("normalization", ()))
        if grid.params is not None:
            values.add(grid.params.normalization)
    return tuple(sorted(str(v) for v in values if v != "none"))
