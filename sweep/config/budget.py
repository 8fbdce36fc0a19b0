"""A sweep's time budget (`sweep run --timeout 45m`): durations and the deadline they set.

The budget counts from the start of each `sweep run` invocation. Workers check
the deadline (wall-clock `time.time()`, so every process on every machine reads
it alike) before they start a trial, as they check the trial target; trials
running at the deadline finish, or with `--timeout-kill` are stopped and
re-queued like an interrupt (sweep.search.runner).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

DURATION_FORMS = "a number with a unit: 90s, 45m, 2h, or combined like 1h30m (units h, m, s)"
_UNITS = {"h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: object) -> float:
    """'90s' | '45m' | '2h' | '1h30m' -> seconds (> 0).

    Raises:
        ValueError: anything else (a bare number, an unknown unit, zero), with the allowed forms.
    """
    if isinstance(text, str):
        match = _DURATION.fullmatch(text.strip().lower())
        if match and any(match.groups()):
            seconds = sum(float(v) * unit for v, unit in zip(match.groups(), _UNITS.values(), strict=True) if v)
            if seconds > 0:
                return seconds
    raise ValueError(f"must be {DURATION_FORMS}; got {text!r}")


@dataclass(frozen=True)
class Budget:
    """The deadline of one invocation: `seconds` after `started` (both wall-clock)."""

    seconds: float
    started: float
    kill: bool = False  # --timeout-kill: stop the trials still running at the deadline

    @classmethod
    def start(cls, seconds: float | None, *, kill: bool = False) -> Budget | None:
        return None if seconds is None else cls(seconds, time.time(), kill)

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def left(self, now: float | None = None) -> float:
        """Seconds until the deadline (0 once past it)."""
        return max(0.0, self.deadline - (time.time() if now is None else now))

    def over(self, now: float | None = None) -> bool:
        return self.left(now) <= 0.0


def over_deadline(deadline: float | None) -> bool:
    """Whether a worker must start no trial: the deadline (wall-clock) has passed."""
    return deadline is not None and time.time() >= deadline
