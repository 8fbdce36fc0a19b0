"""The arms of `sweep compare`: named regularizers, each with the knob(s) its own search tunes.

Every arm starts from the same base configuration with EVERY regularizer off
(keep_prob 1, reg 0, input_keep_prob 1, max_norm 0, no augmentation), then turns
on its own: so "none" is really unregularized and each arm differs from it in
one regularizer (two for dropout+max-norm). Its strength is searched on the
validation set (sweep.ablation.tuning) or given fixed (``--fix l2:reg=1e-3``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sweep.config.domains import DOMAINS, ConfigError
from sweep.config.images import IMAGE_SHAPES, check_params_augmentation
from sweep.config.space import OFF, Range, TrainParams

__all__ = ["ARM_NAMES", "Arm", "arm_params", "arms_for", "parse_fixed", "resolve_arms"]

#: Every regularizer off: the base of every arm.
ALL_OFF: dict[str, Any] = {"keep_prob": 1.0, "reg": 0.0, **OFF}


@dataclass(frozen=True)
class Arm:
    """One regularizer: the knobs its search tunes (name -> range) and the switches that turn it on."""

    name: str
    knobs: tuple[tuple[str, Range], ...]
    switches: tuple[tuple[str, Any], ...] = ()

    @property
    def knob_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.knobs)


def arms_for(dataset: str) -> dict[str, Arm]:
    """The arms `dataset` can take, by name. Augmentation only for image data: on CIFAR-10 flips plus
    shifts of 0..4 pixels (searched), on digits shifts of 1..2 pixels and no flips (sweep.config.images)."""
    arms = [
        Arm("none", ()),
        Arm("l2", (("reg", Range(1e-5, 1e-1, log=True)),)),
        Arm("dropout", (("keep_prob", Range(0.3, 0.95)),)),
        Arm("max-norm", (("max_norm", Range(0.5, 10.0, log=True)),)),
        Arm("input-dropout", (("input_keep_prob", Range(0.5, 0.98)),)),
        Arm("dropout+max-norm", (("keep_prob", Range(0.3, 0.95)), ("max_norm", Range(0.5, 10.0, log=True)))),
    ]
    if dataset == "cifar10":
        arms.insert(5, Arm("augmentation", (("augment_shift", Range(0, 4, step=1)),), (("augment_flip", True),)))
    elif dataset in IMAGE_SHAPES:
        arms.insert(5, Arm("augmentation", (("augment_shift", Range(1, 2, step=1)),)))
    return {a.name: a for a in arms}


#: Every arm name (the augmentation arm only where the data are images).
ARM_NAMES = tuple(arms_for("cifar10"))


def resolve_arms(names: Sequence[str] | None, dataset: str) -> list[Arm]:
    """The arms asked for, in the order given (default: every arm the dataset takes); 'none' must be one.

    Raises:
        ConfigError: keyed ``arms``: an unknown or repeated arm, no 'none', augmentation on non-images.
    """
    known = arms_for(dataset)
    if names is None:
        return list(known.values())
    names = [n.strip() for n in names if n.strip()]
    for n in names:
        if n == "augmentation" and n not in known:
            raise ConfigError(f"augmentation needs image data ({', '.join(IMAGE_SHAPES)}), dataset is {dataset!r}",
                              key="arms")
        if n not in known:
            raise ConfigError(f"unknown arm {n!r}; arms are {', '.join(known)}", key="arms")
    if len(set(names)) != len(names):
        raise ConfigError(f"repeats an arm: {names}", key="arms")
    if "none" not in names:
        raise ConfigError(f"must include 'none', the unregularized arm every other is compared with, got {names}",
                          key="arms")
    return [known[n] for n in names]


def parse_fixed(items: Sequence[str] | Mapping[str, Mapping[str, Any]] | None,
                arms: Sequence[Arm]) -> dict[str, dict[str, Any]]:
    """``["l2:reg=1e-3", "dropout+max-norm:keep_prob=0.5,max_norm=3"]`` (the --fix flags) or a mapping
    -> {arm: {knob: value}}; an arm given here is not searched, so it must give every knob of the arm.

    Raises:
        ConfigError: keyed ``fix``, naming the arm or knob and what is allowed.
    """
    by_name = {a.name: a for a in arms}
    table: dict[str, dict[str, Any]] = {}
    pairs = items.items() if isinstance(items, Mapping) else [_split_fix(t) for t in items or ()]
    for arm_name, knobs in pairs:
        arm = by_name.get(arm_name)
        if arm is None:
            raise ConfigError(f"no arm {arm_name!r} in this comparison; arms: {', '.join(by_name)}", key="fix")
        if not arm.knobs:
            raise ConfigError(f"arm {arm_name!r} has nothing to set", key=f"fix.{arm_name}")
        values: dict[str, Any] = {}
        for knob, value in dict(knobs).items():
            if knob not in arm.knob_names:
                raise ConfigError(f"arm {arm_name!r} sets only {', '.join(arm.knob_names)}, not {knob!r}",
                                  key=f"fix.{arm_name}")
            values[knob] = _knob_value(knob, value, f"fix.{arm_name}.{knob}")
        missing = [k for k in arm.knob_names if k not in values]
        if missing:
            raise ConfigError(f"give every knob of the arm ({', '.join(arm.knob_names)}); missing {', '.join(missing)}",
                              key=f"fix.{arm_name}")
        table[arm_name] = values
    return table


def _split_fix(text: str) -> tuple[str, dict[str, str]]:
    arm, sep, rest = str(text).partition(":")
    knobs = dict(part.partition("=")[::2] for part in rest.split(",") if part.strip())
    if not sep or not arm.strip() or not knobs or any(not k.strip() or not v.strip() for k, v in knobs.items()):
        raise ConfigError(f"expected ARM:NAME=VALUE[,NAME=VALUE] (e.g. l2:reg=1e-3), got {text!r}", key="fix")
    return arm.strip(), {k.strip(): v.strip() for k, v in knobs.items()}


def _knob_value(name: str, value: Any, key: str) -> Any:
    dom = DOMAINS[name]
    if isinstance(value, str):
        try:
            value = int(value) if dom.kind is int else float(value)
        except ValueError:
            raise ConfigError(f"must be {dom.describe()}, got {value!r}", key=key) from None
    return dom.check(value, key)


def arm_params(base: TrainParams, arm: Arm, strengths: Mapping[str, Any], dataset: str,
               key: str = "arms") -> TrainParams:
    """`base` with every regularizer off, then `arm`'s switches and `strengths` (its knobs' values).

    Raises:
        ConfigError: augmentation the dataset does not allow (sweep.config.images).
    """
    params = replace(base, **{**ALL_OFF, **dict(arm.switches), **dict(strengths)})
    check_params_augmentation(dataset, params, key)
    return params
