"""The sweep file (TOML) and command-line overrides -> a validated, typed `SweepConfig`.

Layout (every section and key optional; examples/digits.toml lists them all)::

    [sweep]     dataset, data_dir, num_train, num_val, study, trials, jobs, seed,
                storage, tracking_uri, pruner, timeout ("45m": no trial starts after it), reproducible_lag
    [space]     one entry per hyperparameter: a scalar is fixed, a list is a
                categorical choice, a table is a range, e.g.
                keep_prob = {low = 0.2, high = 1.0, step = 0.05}
    [ablation]  keep_probs, sizes, seeds, epochs, subsets ("fixed" | "per-seed"),
                until = "decided" (add seeds until each comparison is decided, with
                precision (points) and max_seeds, see `sweep.ablation.sequential`),
                vary = {NAME = [V1, V2, ...]} (more factors, see `sweep.config.factors`),
                and [ablation.params] for an explicit configuration (otherwise
                the study's best trial)
    [model]     class = "MODULE:CLASS", path = "DIR": your own cs231n-style net
                (sweep.config.model_spec); absent = the built-in model.FullyConnectedNet

Errors are `ConfigError` (a ValueError) naming the file, the key path
(``space.keep_prob.low``) and what is allowed; an unknown key gets the closest
known one. The hyperparameter types live in `sweep.config.space` (domains and the error
type in `sweep.config.domains`) and are re-exported here.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

from sweep.config.budget import parse_duration
from sweep.config.domains import (
    DOMAINS,
    MAX_DEPTH,
    NORMALIZATIONS,
    UPDATE_RULES,
    ConfigError,
    Domain,
    check_keys,
)
from sweep.config.factors import Factors, check_vary, level_text, parse_vary_args
from sweep.config.model_spec import MODEL_KEYS, ModelSpec, model_from_overrides, model_from_table
from sweep.config.space import (
    Choice,
    Fixed,
    Param,
    Range,
    SearchSpace,
    TrainParams,
    params_from_mapping,
)
from sweep.config.until import UNTIL_KEYS, check_until, until_overrides
from sweep.data.spec import DataSpec
from sweep.paths import check_study_name

__all__ = [
    "DATASETS",
    "MAX_DEPTH",
    "NORMALIZATIONS",
    "PRUNERS",
    "SUBSETS",
    "UPDATE_RULES",
    "AblationConfig",
    "Choice",
    "ConfigError",
    "Fixed",
    "Param",
    "Range",
    "SearchSpace",
    "SweepConfig",
    "TrainParams",
    "apply_overrides",
    "load_config",
]

DATASETS = ("digits", "cifar10")
PRUNERS = ("hyperband", "median", "none")
# How an ablation picks each size's training rows: one subset for every seed, or a
# fresh (still nested) subset per seed, so that the intervals cover the choice of rows too.
SUBSETS = ("fixed", "per-seed")

# Training-set sizes of an ablation when none are given. CIFAR-10 follows cs231n
# (49 000 = the whole training split); digits has ~1 250 training rows in all.
DEFAULT_ABLATION_SIZES: dict[str, tuple[int, ...]] = {
    "cifar10": (500, 2000, 10000, 49000),
    "digits": (100, 300, 1000),
}

_SWEEP_DOMAINS: dict[str, Domain] = {
    "dataset": Domain(str, choices=DATASETS),
    "num_train": Domain(int, 1, note="training rows; absent = the dataset's full split"),
    "num_val": Domain(int, 1, note="validation rows; absent = the dataset's default"),
    "trials": Domain(int, 1, note="the study's TOTAL target; a rerun adds only the missing ones"),
    "jobs": Domain(int, 0, note="worker processes; 0 = all cores"),
    "seed": Domain(int, 0, 2**32 - 1),  # numpy and Optuna's samplers take 32-bit seeds
    "pruner": Domain(str, choices=PRUNERS),
    "reproducible_lag": Domain(int, 0, note="trial n's sampler and pruner see only trials < n - k; unset = off"),
}
_SWEEP_TEXT = ("data_dir", "study", "storage", "tracking_uri")  # optional non-empty strings
_SWEEP_KEYS = (*_SWEEP_DOMAINS, *_SWEEP_TEXT, "timeout", "oversubscribe")
_ABLATION_KEYS = ("keep_probs", "sizes", "seeds", "epochs", "subsets", "vary", "params", *UNTIL_KEYS)
_SECTIONS: dict[str, tuple[str, ...]] = {
    "sweep": _SWEEP_KEYS,
    "space": SearchSpace.KEYS,
    "ablation": _ABLATION_KEYS,
    "model": MODEL_KEYS,
}
_SEEDS = Domain(int, 1, note="seeds per cell of the ablation grid")
_SUBSETS = Domain(str, choices=SUBSETS)
_EPOCHS = DOMAINS["epochs"]
_SIZE = Domain(int, 1, note="training examples")


def _check_sweep_field(name: str, value: object, key: str) -> object:
    """Validate one [sweep] setting (None = unset is allowed for the optional ones)."""
    if value is None and (name in _SWEEP_TEXT or name in ("num_train", "num_val", "timeout", "reproducible_lag")):
        return None
    if name == "oversubscribe" and not isinstance(value, bool):  # jobs above the cores, on purpose (sweep.config.bounds)
        raise ConfigError(f"must be true or false, got {value!r}", key=key)
    if name == "timeout":  # kept as written ("45m"), so the file round-trips; seconds: timeout_seconds
        try:
            parse_duration(value)
        except ValueError as err:
            raise ConfigError(str(err), key=key) from None
        return value
    if name == "study":  # a folder name under .sweep/ and reports/: never a path elsewhere
        return check_study_name(value, key)
    if name in _SWEEP_TEXT:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"must be a non-empty string, got {value!r}", key=key)
        return value
    return value if name == "oversubscribe" else _SWEEP_DOMAINS[name].check(value, key)


def _check_list(value: object, dom: Domain, key: str) -> tuple[Any, ...]:
    """A non-empty list of distinct values of `dom`."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"must be a non-empty list, each {dom.describe()}, got {value!r}", key=key)
    items = tuple(dom.check(v, f"{key}[{i}]") for i, v in enumerate(value))
    if len(set(items)) != len(items):
        raise ConfigError(f"repeats a value: {list(items)!r}", key=key)
    return items


def available_cores() -> int:
    """Cores this process may use (honours taskset/cgroup pinning, unlike cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class AblationConfig:
    """What `sweep ablate` re-trains: one configuration over keep_prob x training size x seeds.

    Attributes:
        keep_probs: keep probabilities to compare; must include 1.0 (no dropout), the
            baseline every paired difference is taken against.
        sizes: training-set sizes; None = the dataset's default (`resolved_sizes`).
        seeds: seeds per (keep_prob, size) cell, >= 1 (confidence intervals need >= 2).
        params: the configuration to ablate (its keep_prob is replaced by the grid's);
            None = the best trial of the study.
        epochs: replaces the configuration's epochs when set (``--epochs``).
        subsets: "fixed": every seed trains on the same nested subset of each size
            (the verdict is about those rows); "per-seed": seed k draws its own nested
            subset, shared by every keep_prob of that seed (the verdict covers the
            choice of rows too). Sizes equal to the whole training pool use it all.
        vary: more factors, ``((name, (value, ...)), ...)`` over fixed training parameters
            (`sweep.config.factors.VARY_FACTORS`); the grid is keep_prob x size x every factor x seeds.
        until: "decided": seeds are added in rounds until each comparison is decided
            (`sweep.ablation.sequential`); `seeds` is then not used. None: `seeds` seeds.
        precision: with `until`, also stop a comparison whose anytime interval is at most
            this many points wide. max_seeds: with `until`, the cap (default 20).
    """

    keep_probs: tuple[float, ...] = (1.0, 0.9, 0.75, 0.5, 0.25)
    sizes: tuple[int, ...] | None = None
    seeds: int = 5
    params: TrainParams | None = None
    epochs: int | None = None
    subsets: str = "fixed"
    vary: Factors = ()
    until: str | None = None
    precision: float | None = None
    max_seeds: int | None = None

    def __post_init__(self) -> None:
        for key, value in zip(UNTIL_KEYS, check_until(self.until, self.precision, self.max_seeds), strict=True):
            object.__setattr__(self, key, value)
        keep_probs = _check_list(self.keep_probs, DOMAINS["keep_prob"], "ablation.keep_probs")
        if 1.0 not in keep_probs:
            raise ConfigError(
                f"must include 1.0 (no dropout), the baseline of every paired comparison, got {list(keep_probs)}",
                key="ablation.keep_probs",
            )
        object.__setattr__(self, "keep_probs", keep_probs)
        if self.sizes is not None:
            object.__setattr__(self, "sizes", _check_list(self.sizes, _SIZE, "ablation.sizes"))
        _SEEDS.check(self.seeds, "ablation.seeds")
        if self.epochs is not None:
            _EPOCHS.check(self.epochs, "ablation.epochs")
        _SUBSETS.check(self.subsets, "ablation.subsets")
        if self.params is not None and not isinstance(self.params, TrainParams):
            raise ConfigError(f"must be TrainParams or None, got {self.params!r}", key="ablation.params")
        vary = check_vary(self.vary, "ablation.vary")
        if self.epochs is not None and "epochs" in dict(vary):
            raise ConfigError("is varied, so epochs cannot also be fixed for every cell (--epochs / ablation.epochs): "
                              "give one of the two", key="ablation.vary.epochs")
        object.__setattr__(self, "vary", vary)

    def resolved_sizes(self, dataset: str) -> tuple[int, ...]:
        """`sizes`, or the default sizes for `dataset` (cifar10: 500..49 000, digits: 100..1 000).

        Raises:
            ValueError: `dataset` is not one of DATASETS.
        """
        if self.sizes is not None:
            return self.sizes
        if dataset not in DEFAULT_ABLATION_SIZES:
            raise ConfigError(f"must be one of {', '.join(map(repr, DATASETS))}, got {dataset!r}", key="dataset")
        return DEFAULT_ABLATION_SIZES[dataset]

    def base_params(self, best: TrainParams | None = None) -> TrainParams:
        """The configuration to ablate: `params`, else `best`, with `epochs` applied.

        Args:
            best: the study's best trial, used when no explicit params were given.

        Raises:
            ValueError: neither explicit params nor a best trial.
        """
        params = self.params or best
        if params is None:
            raise ValueError(
                "nothing to ablate: give [ablation.params] in the sweep file or run a sweep "
                "first so the study has a best trial"
            )
        return params if self.epochs is None else replace(params, epochs=self.epochs)


@dataclass(frozen=True)
class SweepConfig:
    """Validated settings of one sweep (and its ablation). See the module docstring for the file.

    Attributes:
        dataset: 'digits' (offline default) or 'cifar10'.
        data_dir: where the dataset lives; None = SWEEP_DATA_DIR or the user cache.
        num_train: training rows; None = the dataset's full training split.
        num_val: validation rows; None = the dataset's default.
        study: Optuna study (and MLflow experiment) name; None = `study_name`'s default.
        trials: the study's TOTAL target of trials; a rerun adds only the missing ones.
        jobs: worker processes; 0 = all cores (`resolved_jobs`); above the cores only with `oversubscribe`.
        seed: study seed; each trial's seed derives from (seed, trial number).
        storage: Optuna storage URL; None = a journal file next to the MLflow store.
        tracking_uri: MLflow tracking URI; None = MLflow's default (sqlite:///mlflow.db).
        pruner: one of PRUNERS.
        timeout: time budget of one `sweep run` ("90s", "45m", "2h", "1h30m"); None = none.
        reproducible_lag: k of sweep.search.reproducible (trial n sees only trials < n - k); None = off.
        space: the search space.
        ablation: settings of `sweep ablate`; None = not given (use AblationConfig()).
        model: your own net ([model], --model); None = the built-in model.FullyConnectedNet.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    num_train: int | None = None
    num_val: int | None = None
    study: str | None = None
    trials: int = 60
    jobs: int = 0
    seed: int = 0
    storage: str | None = None
    tracking_uri: str | None = None
    pruner: str = "hyperband"
    timeout: str | None = None
    oversubscribe: bool = False
    reproducible_lag: int | None = None
    space: SearchSpace = field(default_factory=SearchSpace)
    ablation: AblationConfig | None = None
    model: ModelSpec | None = None

    def __post_init__(self) -> None:
        for name in _SWEEP_KEYS:
            object.__setattr__(self, name, _check_sweep_field(name, getattr(self, name), f"sweep.{name}"))
        if not isinstance(self.space, SearchSpace):
            raise ConfigError(f"must be a SearchSpace, got {self.space!r}", key="space")
        if self.ablation is not None and not isinstance(self.ablation, AblationConfig):
            raise ConfigError(f"must be an AblationConfig or None, got {self.ablation!r}", key="ablation")
        from sweep.config.images import check_config_augmentation  # issue 20: images only

        check_config_augmentation(self)

    @property
    def study_name(self) -> str:
        """`study`, or ``dropout-<dataset>`` (derived, so ``--dataset cifar10`` gets its own study)."""
        return self.study or f"dropout-{self.dataset}"

    @property
    def data(self) -> DataSpec:
        """The sweep's data: dataset, folder, training and validation rows, the study seed's subset."""
        return DataSpec(self.dataset, self.data_dir, self.num_train, self.num_val, self.seed)

    @property
    def grid(self) -> AblationConfig:
        """The ablation grid: `[ablation]` of the sweep file, else the defaults."""
        return self.ablation or AblationConfig()

    @property
    def timeout_seconds(self) -> float | None:
        """`timeout` in seconds (None: no budget)."""
        return None if self.timeout is None else parse_duration(self.timeout)

    def resolved_jobs(self) -> int:
        """`jobs`, or the number of cores this process may use when jobs is 0."""
        return self.jobs or available_cores()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The sweep-file form (unset values left out, as TOML has no null); JSON-able."""
        out: dict[str, dict[str, Any]] = {
            "sweep": {k: getattr(self, k) for k in _SWEEP_KEYS if getattr(self, k) is not None},
            "space": self.space.to_dict(),
        }
        if self.ablation is not None:
            abl = self.ablation
            table: dict[str, Any] = {"keep_probs": list(abl.keep_probs), "seeds": abl.seeds}
            if abl.sizes is not None:
                table["sizes"] = list(abl.sizes)
            if abl.epochs is not None:
                table["epochs"] = abl.epochs
            if abl.subsets != "fixed":
                table["subsets"] = abl.subsets
            table.update({k: getattr(abl, k) for k in UNTIL_KEYS if getattr(abl, k) is not None})
            if abl.vary:
                table["vary"] = {n: [level_text(n, v) if n == "hidden_dims" else v for v in values]
                                 for n, values in abl.vary}
            if abl.params is not None:
                flat = abl.params.to_flat()
                table["params"] = {f.name: flat[f.name] for f in fields(TrainParams) if f.name in flat}  # off: absent
                table["params"]["hidden_dims"] = list(abl.params.hidden_dims)
            out["ablation"] = table
        if self.model is not None:
            out["model"] = {"class": self.model.target, **({"path": self.model.path} if self.model.path else {})}
        return out

    def to_toml(self) -> str:
        """The sweep file of this config; ``load_config`` of it gives an equal config."""
        lines: list[str] = []
        for section, table in self.to_dict().items():
            nested = {k: v for k, v in table.items() if isinstance(v, dict) and section == "ablation"}
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if k not in nested]
            for name, sub in nested.items():
                lines += ["", f"[{section}.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in sub.items()]
            lines.append("")
        return "\n".join(lines)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)  # shortest repr round-trips; '1e-05' is valid TOML
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} to TOML")


# --------------------------------------------------------------------------- the file


def _check_section_keys(table: Mapping[str, object], section: str) -> None:
    """Unknown keys of [section]: say where a misplaced key belongs, else the closest match."""
    for key in table:
        if key in _SECTIONS[section] or (section, key) == ("space", "hidden_dims"):
            continue  # SearchSpace.from_dict explains how hidden sizes are searched
        home = [s for s, keys in _SECTIONS.items() if key in keys]
        # A near-miss of a key of this section ('seed' in [ablation] -> 'seeds') wins over a move.
        if home and not difflib.get_close_matches(key, _SECTIONS[section], n=1, cutoff=0.8):
            raise ConfigError(f"'{key}' belongs in [{home[0]}], not [{section}]", key=f"{section}.{key}")
        check_keys([key], _SECTIONS[section], section=f"[{section}]", prefix=f"{section}.")


def _section(raw: Mapping[str, object], name: str) -> dict[str, object]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"must be a table ([{name}] with keys under it), got {table!r}", key=name)
    _check_section_keys(table, name)
    return table


def config_from_dict(raw: Mapping[str, object]) -> SweepConfig:
    """Build a SweepConfig from a parsed sweep file (the `SweepConfig.to_dict` shape).

    Raises:
        ConfigError: naming the key path of the first problem.
    """
    for key in raw:
        if key in _SECTIONS:
            continue
        home = [s for s, keys in _SECTIONS.items() if key in keys]
        if home:
            raise ConfigError(f"settings go in tables: put '{key}' under [{home[0]}]", key=key)
        check_keys([key], tuple(_SECTIONS), section="the top level (tables: [sweep], [space], [ablation], [model])")
    sweep = _section(raw, "sweep")
    space = SearchSpace.from_dict(_section(raw, "space"))
    ablation = _ablation_from_table(_section(raw, "ablation")) if "ablation" in raw else None
    model = model_from_table(_section(raw, "model")) if "model" in raw else None
    return SweepConfig(**sweep, space=space, ablation=ablation, model=model)  # type: ignore[arg-type]


def _ablation_from_table(table: Mapping[str, object]) -> AblationConfig:
    kwargs: dict[str, Any] = {k: v for k, v in table.items() if k != "params"}
    if "params" in table:
        # keep_prob is optional here: the grid's keep_probs replace it in every cell.
        kwargs["params"] = params_from_mapping(
            table["params"],  # type: ignore[arg-type]
            prefix="ablation.params.",
            section="[ablation.params]",
            defaults={"keep_prob": 1.0},
        )
    return AblationConfig(**kwargs)


def load_config(path: str | Path | None = None, overrides: Mapping[str, object] | None = None) -> SweepConfig:
    """Read a sweep file and apply command-line overrides.

    Args:
        path: the TOML sweep file; None = built-in defaults (identical to examples/digits.toml).
        overrides: flat CLI settings (see `apply_overrides`); None values are ignored.

    Returns:
        The validated SweepConfig.

    Raises:
        ConfigError: a missing or unreadable file, bad TOML, or a bad setting, with the file and key named.

    Example:
        >>> cfg = load_config(None, {"trials": 8, "epochs": 5, "jobs": None})
        >>> cfg.trials, cfg.space.epochs, cfg.study_name
        (8, Fixed(value=5), 'dropout-digits')
    """
    cfg = SweepConfig() if path is None else _read(Path(path))
    return apply_overrides(cfg, overrides) if overrides else cfg


def _read(path: Path) -> SweepConfig:
    source = str(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("no such sweep file (examples/ has digits.toml and cifar10.toml)", source=source) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the sweep file: {err}", source=source) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", source=source) from None
    try:
        return config_from_dict(raw)
    except ConfigError as err:
        raise err.with_source(source) from None


# --------------------------------------------------------------------------- overrides

_OVERRIDE_KEYS = (*_SWEEP_KEYS, "epochs", "keep_probs", "sizes", "seeds", "subsets", "vary", *UNTIL_KEYS, "model", "model_path")


def _cli_number(value: object, dom: Domain, key: str) -> object:
    """CLI values may still be text ("8"); parse them as the domain's number type."""
    if isinstance(value, str) and dom.kind is not str:
        try:
            return int(value) if dom.kind is int else float(value)
        except ValueError:
            raise ConfigError(f"must be {dom.describe()}, got {value!r}", key=key) from None
    return value


def _cli_list(value: object, dom: Domain, key: str) -> tuple[Any, ...]:
    """A list override from text ("1,0.75,0.5") or a sequence."""
    if isinstance(value, str):
        value = [_cli_number(v.strip(), dom, key) for v in value.split(",") if v.strip()]
    return _check_list(value, dom, key)


def apply_overrides(cfg: SweepConfig, overrides: Mapping[str, object]) -> SweepConfig:
    """Return `cfg` with command-line settings applied.

    Args:
        cfg: the config from the file (or defaults).
        overrides: flat keys: dataset, data_dir, num_train, num_val, study, trials, jobs, seed,
            storage, tracking_uri, pruner, reproducible_lag (the [sweep] keys); epochs (fixes the space's epochs
            to N and sets the ablation's epochs); keep_probs, sizes (lists or "a,b,c" text)
            seeds, subsets, until, precision and max_seeds (the ablation's); vary (the --vary flags, ``["NAME=V1,V2", ...]``, or a
            table ``{NAME: [values]}``; replaces the file's vary); model, model_path (``--model MODULE:CLASS``,
            ``--model-path DIR``: over [model]). None values are ignored; numbers may be text.

    Raises:
        ConfigError: an unknown key (closest suggested) or a bad value, located at ``command line``.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        check_keys(given, _OVERRIDE_KEYS, section="the command-line overrides")
        sweep: dict[str, Any] = {}
        for name in _SWEEP_KEYS:
            if name in given:
                value = given[name]
                if name in _SWEEP_DOMAINS:
                    value = _cli_number(value, _SWEEP_DOMAINS[name], name)
                sweep[name] = _check_sweep_field(name, value, "--timeout" if name == "timeout" else name)
        ablation: dict[str, Any] = {}
        if "epochs" in given:
            epochs = _EPOCHS.check(_cli_number(given["epochs"], _EPOCHS, "epochs"), "epochs")
            sweep["space"] = replace(cfg.space, epochs=Fixed(epochs), epochs_override=epochs)
            ablation["epochs"] = epochs
        if "keep_probs" in given:
            ablation["keep_probs"] = _cli_list(given["keep_probs"], DOMAINS["keep_prob"], "keep_probs")
        if "sizes" in given:
            ablation["sizes"] = _cli_list(given["sizes"], _SIZE, "sizes")
        if "seeds" in given:
            ablation["seeds"] = _SEEDS.check(_cli_number(given["seeds"], _SEEDS, "seeds"), "seeds")
        if "subsets" in given:
            ablation["subsets"] = _SUBSETS.check(given["subsets"], "subsets")
        if "vary" in given:
            vary = given["vary"]
            is_flags = isinstance(vary, list | tuple) and all(isinstance(v, str) for v in vary)
            ablation["vary"] = parse_vary_args(cast(list[str], vary)) if is_flags else check_vary(vary, "vary")
        ablation.update(until_overrides(given, cfg.ablation))
        if ablation:
            sweep["ablation"] = replace(cfg.ablation or AblationConfig(), **ablation)
        sweep["model"] = model_from_overrides(cfg.model, given.get("model"), given.get("model_path"))
        return replace(cfg, **sweep)
    except ConfigError as err:
        raise err.with_source("command line") from None
