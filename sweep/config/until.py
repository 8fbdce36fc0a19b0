"""The sequential ablation's settings: `until = "decided"`, `precision`, `max_seeds`.

`[ablation] until = "decided"` (``sweep ablate --until-decided``) adds seeds in
rounds until every comparison is decided (`sweep.ablation.sequential`);
`precision` (points, ``--precision``) also stops a comparison whose anytime
interval is that narrow; `max_seeds` (``--max-seeds``) caps each comparison.
Both need `until`: without it the ablation trains a fixed number of seeds, and
a cap or a target would silently do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweep.config.domains import ConfigError, Domain

UNTIL_KEYS = ("until", "precision", "max_seeds")
UNTIL_MODES = ("decided",)
DEFAULT_MAX_SEEDS = 20  # the range the validity simulation covers (tests/analysis/test_confseq.py)

_UNTIL = Domain(str, choices=UNTIL_MODES)
_PRECISION = Domain(float, 0.0, 200.0, low_open=True,
                    note="full width of the anytime interval, in points of accuracy")
_MAX_SEEDS = Domain(int, 2, 1000, note="seeds per comparison at most")


def check_until(until: object, precision: object, max_seeds: object,
                prefix: str = "ablation.") -> tuple[str | None, float | None, int | None]:
    """The three settings checked (precision as a float); refuses a bad value, or a
    precision/cap given without `until` (it would do nothing).

    Raises:
        ConfigError: naming the key and what is allowed.
    """
    checked = (None if until is None else _UNTIL.check(until, prefix + "until"),
               None if precision is None else _PRECISION.check(precision, prefix + "precision"),
               None if max_seeds is None else _MAX_SEEDS.check(max_seeds, prefix + "max_seeds"))
    if until is None:
        for key, value in (("precision", precision), ("max_seeds", max_seeds)):
            if value is not None:
                raise ConfigError('only applies with until = "decided" (--until-decided): without it the '
                                  "ablation trains a fixed number of seeds (--seeds)", key=prefix + key)
    return checked


def until_overrides(given: Mapping[str, object], current: Any) -> dict[str, Any]:
    """The command line's until/precision/max_seeds (numbers may be text), checked; {} when none given.

    `current`: the file's AblationConfig (or None), whose `until` a --precision alone may rely on.
    """
    out: dict[str, Any] = {}
    if given.get("until") is not None:
        out["until"] = _UNTIL.check(given["until"], "until")
    for key, dom in (("precision", _PRECISION), ("max_seeds", _MAX_SEEDS)):
        value = given.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = int(value) if dom.kind is int else float(value)
            except ValueError:
                raise ConfigError(f"must be {dom.describe()}, got {value!r}", key=key) from None
        out[key] = dom.check(value, key)
    until = out.get("until", getattr(current, "until", None))
    if out:
        check_until(until, out.get("precision"), out.get("max_seeds"), prefix="")
    if until is not None and given.get("seeds") is not None:  # one would silently win over the other
        raise ConfigError('fixes the number of seeds, which until = "decided" (--until-decided) chooses itself: '
                          "give its cap as --max-seeds (max_seeds) instead", key="seeds")
    return out
