"""Hyperparameters: what one training run takes (`TrainParams`) and what a sweep searches (`SearchSpace`).

Every setting has a `Domain` (its type and allowed values, in sweep.config.domains).
`TrainParams`, `SearchSpace` and the sweep file (`sweep.config`) all check
values against the same domains, so a bad value gets the same message wherever
it comes from.

Dropout is parameterised ONLY by `keep_prob`, the probability of KEEPING a
unit (1.0 = no dropout). Keys such as `dropout`, `dropout_p` or `p_drop` are
refused everywhere: they mean the drop probability in PyTorch and the keep
probability in old Keras/TensorFlow code, and confusing the two silently
inverts the experiment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sweep.config.domains import (
    DOMAINS,
    MAX_DEPTH,
    NORMALIZATIONS,
    ConfigError,
    Domain,
    check_keys,
    is_dropout_key,
)

if TYPE_CHECKING:  # optuna is only needed to suggest; importing it costs ~0.3 s
    import optuna

# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class TrainParams:
    """Everything one training run needs besides the data and the seed.

    Attributes:
        keep_prob: probability of KEEPING a unit, 0 < keep_prob <= 1; 1.0 = no dropout.
        hidden_dims: units per hidden layer, e.g. (512, 256).
        learning_rate: initial learning rate, > 0.
        normalization: one of NORMALIZATIONS ('none' -> the model gets None).
        reg: L2 strength, >= 0.
        weight_scale: std of the initial weights, > 0.
        batch_size: minibatch size, >= 1.
        update_rule: one of UPDATE_RULES.
        epochs: passes over the training set, >= 1.
        lr_decay: learning rate factor applied after each epoch, in (0, 1].
        input_keep_prob: probability of KEEPING an input feature, in (0, 1]; 1.0 = no input dropout.
        max_norm: bound c on every hidden unit's incoming weight norm, >= 0; 0 = no constraint.
        augment_flip: mirror training images left-right at random (images only).
        augment_shift: translate training images by up to this many pixels, >= 0 (images only).

    Raises:
        ConfigError (a ValueError): a field outside its domain; the message names the field.
    """

    keep_prob: float
    hidden_dims: tuple[int, ...]
    learning_rate: float
    normalization: str
    reg: float = 0.0
    weight_scale: float = 1e-2
    batch_size: int = 100
    update_rule: str = "adam"
    epochs: int = 10
    lr_decay: float = 1.0
    # --- regularizers (issue 20); each default is "off" and then left out of to_flat (see OFF)
    input_keep_prob: float = 1.0
    max_norm: float = 0.0
    augment_flip: bool = False
    augment_shift: int = 0

    def __post_init__(self) -> None:
        # Coerce as well as check (1 -> 1.0, [512] -> (512,)) so equal settings compare equal.
        for f in fields(self):
            if f.name == "hidden_dims":
                value: Any = _check_hidden_dims(self.hidden_dims, "hidden_dims")
            else:
                value = DOMAINS[f.name].check(getattr(self, f.name), f.name)
            object.__setattr__(self, f.name, value)

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.hidden_dims)

    @property
    def model_normalization(self) -> str | None:
        """`normalization` as `FullyConnectedNet` takes it: None, 'batchnorm' or 'layernorm'."""
        return None if self.normalization == "none" else self.normalization

    def to_flat(self) -> dict[str, str | int | float]:
        """Flat scalars for MLflow params and Optuna user attrs.

        `hidden_dims` becomes ``"512-256"``, plus ``depth`` and ``hidden_1..hidden_k`` so every
        Optuna parameter name of `SearchSpace.suggest` appears with Optuna's value.
        """
        flat: dict[str, str | int | float] = {
            "keep_prob": self.keep_prob,
            "hidden_dims": "-".join(str(w) for w in self.hidden_dims),
            "depth": self.depth,
        }
        flat.update({f"hidden_{i}": w for i, w in enumerate(self.hidden_dims, start=1)})
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in flat or f.name == "hidden_dims" or (f.name in OFF and value == OFF[f.name]):
                continue
            flat[f.name] = value
        return flat

    @classmethod
    def from_flat(cls, d: Mapping[str, object], *, strict: bool = True) -> TrainParams:
        """Inverse of `to_flat`; also takes Optuna's ``trial.params`` and MLflow's string params.

        Hidden sizes come from ``hidden_dims`` (``"512-256"`` or a list) or from ``depth`` with
        ``hidden_1..hidden_<depth>``; when both are given they must agree.

        Args:
            d: flat settings. Numbers may be strings (MLflow stores params as text).
            strict: refuse unknown keys (suggesting the closest); False ignores them.

        Returns:
            Validated TrainParams.

        Raises:
            ConfigError: a missing, unknown or invalid key, named.
        """
        return params_from_mapping(d, strict=strict)


#: The regularizers' "off" values. A setting at its off value is left out of `TrainParams.to_flat`,
#: `SearchSpace.to_dict` and the trial's suggestions, so the names of ablations, the identity of
#: studies and the trials made before these settings existed stay as they were.
OFF: dict[str, object] = {"input_keep_prob": 1.0, "max_norm": 0.0, "augment_flip": False, "augment_shift": 0}

_PARAM_NAMES = tuple(f.name for f in fields(TrainParams))
_FLAT_KEYS = (*_PARAM_NAMES, "depth", *(f"hidden_{i}" for i in range(1, MAX_DEPTH + 1)))
_REQUIRED = ("keep_prob", "learning_rate", "normalization")


def params_from_mapping(
    d: Mapping[str, object],
    *,
    strict: bool = True,
    prefix: str = "",
    section: str = "the params",
    defaults: Mapping[str, object] | None = None,
) -> TrainParams:
    """Build TrainParams from flat keys (see `TrainParams.from_flat`).

    Args:
        d: flat settings.
        strict: refuse unknown keys.
        prefix: key path prepended in errors, e.g. ``ablation.params.``.
        section: section name shown for unknown keys, e.g. ``[ablation.params]``.
        defaults: values used for keys absent from `d` (e.g. keep_prob for an ablation).
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"must be a table of settings, got {d!r}", key=prefix.rstrip(".") or None)
    if strict:
        check_keys(d.keys(), _FLAT_KEYS, section=section, prefix=prefix)
    else:
        for key in d:  # never silently ignore a dropout-like key
            if is_dropout_key(key):
                check_keys([key], _FLAT_KEYS, section=section, prefix=prefix)
    merged = {**(defaults or {}), **d}
    missing = [k for k in _REQUIRED if k not in merged]
    if "hidden_dims" not in merged and "depth" not in merged:
        missing.append("hidden_dims (or depth with hidden_1..)")
    if missing:
        raise ConfigError("missing " + ", ".join(missing), key=prefix.rstrip(".") or None)
    values: dict[str, Any] = {
        k: _from_text(merged[k], k, prefix + k) for k in _PARAM_NAMES if k in merged and k != "hidden_dims"
    }
    values["hidden_dims"] = _hidden_from_mapping(merged, strict, prefix)
    try:
        return TrainParams(**values)
    except ConfigError as err:
        raise ConfigError(err.detail, key=prefix + (err.key or "")) from None


def _from_text(value: object, name: str, key: str) -> object:
    """Parse MLflow's text params ("0.5", "100") as numbers where domain `name` wants a number."""
    dom = DOMAINS[name]
    if not isinstance(value, str) or dom.kind is str:
        return value
    if dom.kind is bool:
        return {"true": True, "false": False}.get(value.strip().lower(), value)
    try:
        return int(value) if dom.kind is int else float(value)
    except ValueError:
        raise ConfigError(f"must be {dom.describe()}, got {value!r}", key=key) from None


def _hidden_from_mapping(d: Mapping[str, object], strict: bool, prefix: str) -> tuple[int, ...]:
    dims: tuple[int, ...] | None = None
    if "hidden_dims" in d:
        dims = _check_hidden_dims(d["hidden_dims"], prefix + "hidden_dims")
    if "depth" not in d:
        if dims is None:  # pragma: no cover - guarded by the caller's missing-key check
            raise ConfigError("missing hidden_dims", key=prefix.rstrip("."))
        layer_keys = [k for k in d if re.fullmatch(r"hidden_\d+", k)]
        for k in layer_keys:  # to_flat output carries both; they must agree
            i = int(k.split("_")[1])
            if i > len(dims) or _from_text(d[k], "width", prefix + k) != dims[i - 1]:
                raise ConfigError(f"{d[k]!r} disagrees with hidden_dims {d['hidden_dims']!r}", key=prefix + k)
        return dims
    depth = DOMAINS["depth"].check(_from_text(d["depth"], "depth", prefix + "depth"), prefix + "depth")
    layers = []
    for i in range(1, depth + 1):
        key = f"hidden_{i}"
        if key not in d:
            if dims is not None and len(dims) == depth:
                layers.append(dims[i - 1])
                continue
            raise ConfigError(f"missing (depth is {depth}: give hidden_1..hidden_{depth})", key=prefix + key)
        layers.append(DOMAINS["width"].check(_from_text(d[key], "width", prefix + key), prefix + key))
    extra = [k for k in d if re.fullmatch(r"hidden_\d+", k) and int(k.split("_")[1]) > depth]
    if strict and extra:
        raise ConfigError(f"given but depth is {depth}", key=prefix + extra[0])
    if dims is not None and dims != tuple(layers):
        raise ConfigError(
            f"{d['hidden_dims']!r} disagrees with depth/hidden_i {tuple(layers)}", key=prefix + "hidden_dims"
        )
    return tuple(layers)


def _check_hidden_dims(value: object, key: str) -> tuple[int, ...]:
    """Hidden sizes from a sequence of ints or text like "512-256" (MLflow)."""
    if isinstance(value, str):
        tokens = [t for t in re.split(r"[-,x\s]+", value.strip("()[] ")) if t]
        if not tokens or not all(t.isdigit() for t in tokens):
            raise ConfigError(f"must be hidden sizes like '512-256' or [512, 256], got {value!r}", key=key)
        value = [int(t) for t in tokens]
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) == 0:
        raise ConfigError(f"must be a non-empty list of hidden sizes (integers >= 1), got {value!r}", key=key)
    return tuple(DOMAINS["width"].check(w, f"{key}[{i}]") for i, w in enumerate(value))


# --------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class Fixed:
    """A setting that is not searched. In the sweep file: a scalar, e.g. ``epochs = 15``."""

    value: int | float | str


@dataclass(frozen=True)
class Range:
    """A searched number. In the sweep file: a table, e.g. ``{low = 1e-4, high = 1e-2, log = true}``.

    `step` (linear only) makes a grid low, low+step, ..., high; it must divide high - low
    so that `high` itself (keep_prob 1.0, "no dropout") can be drawn.
    """

    low: int | float
    high: int | float
    step: int | float | None = None
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """A categorical setting. In the sweep file: a list, e.g. ``["none", "batchnorm"]``."""

    choices: tuple[int | float | str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))


Param = Fixed | Range | Choice
_RANGE_KEYS = ("low", "high", "step", "log")


def as_param(value: object, name: str, key: str) -> Param:
    """Check one search-space entry against the domain of `name` and return it normalised.

    A scalar means fixed, a list (or tuple) a categorical choice, a mapping a range; `Fixed`,
    `Range` and `Choice` objects are checked the same way.

    Args:
        value: the entry.
        name: hyperparameter whose domain applies (``width`` for hidden sizes).
        key: key path for errors, e.g. ``space.keep_prob``.
    """
    dom = DOMAINS[name]
    if isinstance(value, Fixed):
        return Fixed(dom.check(value.value, key))
    if isinstance(value, Choice):
        value = list(value.choices)
    if isinstance(value, Range):
        value = {"low": value.low, "high": value.high, "step": value.step, "log": value.log}
    if isinstance(value, Mapping):
        if dom.kind in (str, bool):
            raise ConfigError(
                f"is categorical: give one value or a list of choices ({dom.describe()}), not a range",
                key=key,
            )
        return _as_range(value, dom, key)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"an empty list of choices; give at least one ({dom.describe()})", key=key)
        choices = tuple(dom.check(v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(set(choices)) != len(choices):
            raise ConfigError(f"repeats a choice: {list(value)!r}", key=key)
        return Choice(choices)
    return Fixed(dom.check(value, key))


def _as_range(table: Mapping[str, object], dom: Domain, key: str) -> Range:
    check_keys(table.keys(), _RANGE_KEYS, section=f"the range {key}", prefix=key + ".")
    for k in ("low", "high"):
        if k not in table:
            raise ConfigError(f"a range needs low and high; missing {k}", key=key)
    low = dom.check(table["low"], key + ".low")
    high = dom.check(table["high"], key + ".high")
    if low > high:
        raise ConfigError(f"low ({low}) must be <= high ({high})", key=key)
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"must be true or false, got {log!r}", key=key + ".log")
    if log and low <= 0:
        raise ConfigError(f"a log-scale range needs low > 0, got {low}", key=key + ".low")
    step = table.get("step")
    if step is not None:
        if log:
            raise ConfigError("step cannot be combined with log = true (Optuna refuses it)", key=key + ".step")
        step_dom = Domain(int, 1) if dom.kind is int else Domain(float, 0.0, low_open=True)
        step = step_dom.check(step, key + ".step")
        # Decimal of the shortest repr: 0.8 / 0.05 is exactly 16, not 15.999999999999998.
        span, d_step = Decimal(str(high)) - Decimal(str(low)), Decimal(str(step))
        if span % d_step != 0:
            raise ConfigError(
                f"high - low = {span} is not a multiple of step {step}, so high ({high}) could never be drawn",
                key=key + ".step",
            )
    elif dom.kind is int and not log:
        step = 1  # canonical, so Range(1, 4) == Range(1, 4, step=1)
    return Range(low, high, step, log)


def _param_to_plain(p: Param) -> object:
    """The sweep-file (and JSON) form of a Param: scalar, list or table."""
    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Choice):
        return list(p.choices)
    table: dict[str, object] = {"low": p.low, "high": p.high, "log": p.log}
    if p.step is not None:
        table["step"] = p.step
    return table


def _suggest(trial: optuna.Trial, name: str, p: Param, dom: Domain) -> Any:
    """Ask Optuna for `name`. Fixed values are suggested too (a one-value distribution costs
    nothing and no sampling) so that ``trial.params`` always holds the whole configuration.
    """
    if isinstance(p, Choice):
        return trial.suggest_categorical(name, list(p.choices))
    if isinstance(p, Fixed):
        if dom.kind in (str, bool):
            return trial.suggest_categorical(name, [p.value])
        assert not isinstance(p.value, str)  # a Fixed of a numeric domain (str domains returned above)
        low = high = p.value
        step, log = None, dom.log and p.value > 0  # same log flag as a typical search of this name
    else:
        low, high, step, log = p.low, p.high, p.step, p.log
    if dom.kind is int:
        return trial.suggest_int(name, int(low), int(high), step=int(step or 1), log=log)
    return trial.suggest_float(name, float(low), float(high), step=step, log=log)


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep searches. Each hyperparameter is `Fixed`, a `Range` or a `Choice`.

    Plain values are accepted and normalised: a scalar is fixed, a list a choice, a mapping a
    range (the sweep-file syntax), e.g. ``SearchSpace(epochs=5, normalization=["none"])``.
    Defaults are the offline digits sweep (examples/digits.toml).

    Optuna parameter names: keep_prob, depth, hidden_1..hidden_<depth> (each drawn from
    `width`), learning_rate, normalization, reg, weight_scale, batch_size, update_rule,
    epochs, lr_decay, and the regularizers input_keep_prob, max_norm, augment_flip, augment_shift.
    Every one is suggested, fixed ones as one-value distributions, except a regularizer fixed
    at its off value (`OFF`): studies made before it existed keep their identity and params.
    """

    keep_prob: Param = Range(0.2, 1.0, step=0.05)
    depth: Param = Range(1, 4)
    width: Param = Range(32, 512, log=True)
    learning_rate: Param = Range(1e-4, 1e-2, log=True)
    normalization: Param = Choice(NORMALIZATIONS)
    reg: Param = Fixed(0.0)
    weight_scale: Param = Range(1e-2, 1e-1, log=True)
    batch_size: Param = Fixed(100)
    update_rule: Param = Fixed("adam")
    epochs: Param = Fixed(15)
    lr_decay: Param = Fixed(0.95)
    input_keep_prob: Param = Fixed(1.0)
    max_norm: Param = Fixed(0.0)
    augment_flip: Param = Fixed(False)
    augment_shift: Param = Fixed(0)
    # Set by the --epochs override (which also fixes `epochs`), so an ablation can apply it to
    # a configuration that did not come from this space. Not a search key: not in to_dict().
    epochs_override: int | None = None

    KEYS: ClassVar[tuple[str, ...]] = (
        "keep_prob", "depth", "width", "learning_rate", "normalization", "reg",
        "weight_scale", "batch_size", "update_rule", "epochs", "lr_decay",
        "input_keep_prob", "max_norm", "augment_flip", "augment_shift",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name in self.KEYS:
            object.__setattr__(self, name, as_param(getattr(self, name), name, f"space.{name}"))
        if self.epochs_override is not None:
            DOMAINS["epochs"].check(self.epochs_override, "epochs_override")

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial of this space trains (the pruner's maximum resource)."""
        p = self.epochs
        if isinstance(p, Fixed):
            return int(p.value)
        return int(max(p.choices) if isinstance(p, Choice) else p.high)

    def params_from_trial(self, params: Mapping[str, object]) -> TrainParams:
        """TrainParams of a trial from its ``trial.params``.

        Keys the trial lacks are filled from this space's fixed values, so trials recorded
        before a setting was suggested (or given partially to ``enqueue_trial``) still load.

        Raises:
            ConfigError: a value missing here and not fixed in the space, or an invalid one.
        """
        filled: dict[str, object] = {n: p.value for n in self.KEYS if isinstance(p := getattr(self, n), Fixed)}
        width = filled.pop("width", None)
        if width is not None and "depth" in filled and "depth" not in params:
            filled["hidden_dims"] = [width] * int(filled["depth"])  # type: ignore[call-overload]
        if "depth" in params:
            filled.pop("depth", None)
        return params_from_mapping({**filled, **params})

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> SearchSpace:
        """Build from the ``[space]`` table (or `to_dict` output); absent keys keep their defaults.

        Raises:
            ConfigError: unknown key (closest suggested), `dropout`-like key, or a bad value.
        """
        if "hidden_dims" in d:
            raise ConfigError(
                "the search space gives hidden sizes as depth and width (depth = 2, width = 256 "
                "is the fixed net [256, 256]); an explicit list belongs in [ablation.params]",
                key="space.hidden_dims",
            )
        check_keys(d.keys(), cls.KEYS, section="[space]", prefix="space.")
        return cls(**d)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """JSON-able sweep-file form of every key (a regularizer fixed at its off value is left out,
        as absent means off); ``from_dict(to_dict())`` gives an equal space."""
        return {name: _param_to_plain(getattr(self, name)) for name in self.KEYS if not self._off(name)}

    def _off(self, name: str) -> bool:
        """True for a regularizer fixed at its off value (not suggested, not in to_dict)."""
        p = getattr(self, name)
        return name in OFF and isinstance(p, Fixed) and p.value == OFF[name]

    def suggest(self, trial: optuna.Trial) -> TrainParams:
        """Draw one configuration (define-by-run: hidden_i exists only for i <= depth).

        Args:
            trial: an Optuna trial (or `optuna.trial.FixedTrial`).

        Returns:
            The TrainParams of this trial; ``trial.params`` then holds every field.
        """
        def draw(name: str) -> Any:
            return _suggest(trial, name, getattr(self, name), DOMAINS[name])

        keep_prob, depth = draw("keep_prob"), draw("depth")
        width = DOMAINS["width"]
        hidden = tuple(_suggest(trial, f"hidden_{i}", self.width, width) for i in range(1, depth + 1))
        rest = {name: draw(name) for name in self.KEYS
                if name not in ("keep_prob", "depth", "width") and not self._off(name)}
        return TrainParams(keep_prob=keep_prob, hidden_dims=hidden, **rest)

    def contains(self, params: TrainParams) -> bool:
        """True when `params` could have been drawn from this space."""
        values = {f.name: getattr(params, f.name) for f in fields(params)}
        values["depth"] = params.depth
        ok = all(_param_contains(getattr(self, n), values[n]) for n in self.KEYS if n != "width")
        return ok and all(_param_contains(self.width, w) for w in params.hidden_dims)


def _param_contains(p: Param, value: object) -> bool:
    if isinstance(p, Fixed):
        return value == p.value
    if isinstance(p, Choice):
        return value in p.choices
    assert isinstance(value, (int, float))
    if not p.low <= value <= p.high:
        return False
    if p.step is None:
        return True
    k = (value - p.low) / p.step
    return abs(k - round(k)) < 1e-8  # Optuna's own tolerance for stepped floats
