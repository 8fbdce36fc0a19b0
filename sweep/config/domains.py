"""Settings and the values they accept: one `Domain` per hyperparameter, and `ConfigError`.

`TrainParams`, `SearchSpace` (sweep.config.space), the ablation factors (sweep.config.factors)
and the sweep file (sweep.config) all check values against these domains, so a
bad value gets the same message wherever it comes from.

Dropout is parameterised ONLY by `keep_prob`, the probability of KEEPING a unit
(1.0 = no dropout); `check_keys` refuses `dropout`-like keys with that explanation.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

NORMALIZATIONS = ("none", "batchnorm", "layernorm")
UPDATE_RULES = ("sgd", "sgd_momentum", "rmsprop", "adam")
MAX_DEPTH = 8  # deepest net a search space may ask for (hidden layers)

KEEP_PROB_HELP = (
    "this project has no 'dropout' setting because the word is ambiguous "
    "(PyTorch's p is the DROP probability, old Keras/TensorFlow code passed the KEEP probability); "
    "it uses keep_prob = the probability of KEEPING a unit = 1 - drop probability, 0 < keep_prob <= 1, "
    "1.0 = no dropout (torch.nn.Dropout(p=0.2) is keep_prob = 0.8)"
)


class ConfigError(ValueError):
    """A bad setting. The message names the source (file), the key path and what is allowed.

    Args:
        detail: what is wrong and what is allowed.
        key: dotted key path, e.g. ``space.keep_prob.low``.
        source: where the setting came from, e.g. a file name or ``command line``.
    """

    def __init__(self, detail: str, *, key: str | None = None, source: str | None = None) -> None:
        self.detail, self.key, self.source = detail, key, source
        super().__init__(": ".join(part for part in (source, key, detail) if part))

    def with_source(self, source: str) -> ConfigError:
        """Return the same error located in `source` (kept if already set)."""
        return ConfigError(self.detail, key=self.key, source=self.source or source)

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling to/from loky workers intact
        return (_config_error, (self.detail, self.key, self.source))


def _config_error(detail: str, key: str | None, source: str | None) -> ConfigError:
    return ConfigError(detail, key=key, source=source)


def is_dropout_key(key: str) -> bool:
    """True for keys like `dropout`, `dropout_p`, `p_drop`, `drop_rate` that this project refuses."""
    return "drop" in key.lower()


def check_keys(
    given: Iterable[str], known: Sequence[str], *, section: str, prefix: str = ""
) -> None:
    """Refuse unknown keys, suggesting the closest known one.

    Args:
        given: keys found.
        known: keys allowed here.
        section: name shown to the user, e.g. ``[space]``.
        prefix: key path of the section, e.g. ``space.``.

    Raises:
        ConfigError: for the first unknown key (a `dropout`-like key gets the keep_prob explanation).
    """
    for key in given:
        if key in known:
            continue
        if is_dropout_key(key):
            wanted = "keep_probs" if "keep_probs" in known else "keep_prob"
            raise ConfigError(f"{KEEP_PROB_HELP}; write {wanted} instead", key=prefix + key)
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)
        raise ConfigError(f"unknown key '{key}' in {section}; {hint}", key=prefix + key)


@dataclass(frozen=True)
class Domain:
    """The values one setting accepts: a number in an interval, or one of some strings."""

    kind: type  # int, float, str or bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is excluded
    high_open: bool = False
    choices: tuple[str, ...] = ()
    note: str = ""  # appended to error messages
    log: bool = False  # the scale a fixed value is suggested on (Optuna refuses a log change per name)

    def describe(self) -> str:
        """Human text, e.g. ``a number in (0, 1]`` or ``one of 'sgd', 'adam'``."""
        if self.kind is str:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        noun = "an integer" if self.kind is int else "a number"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{_fmt(lo)}, {_fmt(hi)}{right}"
        if lo is not None:
            return f"{noun} {'>' if self.low_open else '>='} {_fmt(lo)}"
        return noun

    def check(self, value: object, key: str) -> Any:
        """Return `value` as this domain's type, or raise ConfigError naming `key`."""
        note = f" ({self.note})" if self.note else ""
        bad = ConfigError(f"must be {self.describe()}{note}, got {value!r}", key=key)
        if self.kind is str:
            if not isinstance(value, str) or value not in self.choices:
                raise bad
            return value
        if self.kind is bool:  # a switch: only a real bool (1 or "yes" would be a guess)
            if not isinstance(value, bool):
                raise bad
            return value
        # bool is an int in Python; `true` for a batch size is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad
        if self.kind is int:
            if not isinstance(value, numbers.Integral):
                raise bad
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise bad
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise bad
        return value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# One entry per hyperparameter of a training run (width is per hidden layer).
DOMAINS: dict[str, Domain] = {
    "keep_prob": Domain(
        float, 0.0, 1.0, low_open=True, note="the probability of KEEPING a unit; 1.0 = no dropout"
    ),
    "depth": Domain(int, 1, MAX_DEPTH, note="number of hidden layers"),
    "width": Domain(int, 1, log=True, note="units in one hidden layer"),
    "learning_rate": Domain(float, 0.0, low_open=True, log=True),
    "normalization": Domain(str, choices=NORMALIZATIONS),
    "reg": Domain(float, 0.0, note="L2 strength, 0 = none"),
    "weight_scale": Domain(float, 0.0, low_open=True, log=True, note="std of the initial weights"),
    "batch_size": Domain(int, 1),
    "update_rule": Domain(str, choices=UPDATE_RULES),
    "epochs": Domain(int, 1),
    "lr_decay": Domain(float, 0.0, 1.0, low_open=True, note="learning rate factor per epoch"),
    # Regularizers besides L2 (reg) and dropout (keep_prob); each default is "off".
    "input_keep_prob": Domain(
        float, 0.0, 1.0, low_open=True, note="the probability of KEEPING an input feature; 1.0 = no input dropout"
    ),
    "max_norm": Domain(
        float, 0.0, note="bound on each hidden unit's incoming weight norm; 0 = no constraint"
    ),
    "augment_flip": Domain(bool, note="mirror training images left-right at random (image data only)"),
    "augment_shift": Domain(int, 0, note="pixels of random translation of training images; 0 = none"),
}
