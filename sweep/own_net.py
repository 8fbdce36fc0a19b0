"""Your own net (``--model MODULE:CLASS``) in a worker: import its class, build it for a run, catch its errors.

A loky or Dask worker gets only the `ModelSpec` (strings and numbers) with its
task and imports the class itself. The class was checked in
the parent before any trial (sweep.check.contract), which also measured what its
dropout keyword means and whether its seed freezes the masks. Its code may still
raise mid-training: that run fails with the traceback kept (`OwnCodeFailed`),
the sweep goes on.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sweep.config.model_spec import ModelSpec
    from sweep.config.space import TrainParams

TRACEBACK_TAG = "traceback"  # the trial's user attr and the run's tag holding your net's traceback
MODEL_TAG = "sweep.model"  # every run's tag: MODULE:CLASS of the net it trained
TRACEBACK_CHARS = 6000  # an MLflow tag holds 8000; the innermost frames are the ones that say what broke


def own_class(spec: ModelSpec) -> type:
    """The class, imported for each run (milliseconds): a worker that stays up between two sweeps (loky
    reuses its processes in a notebook) trains the code as it is now, not as it was at its first run."""
    from sweep.check.contract import import_model_class

    return import_model_class(spec)


def build_own_net(spec: ModelSpec, params: TrainParams, input_dim: int, num_classes: int, seed: int | None) -> Any:
    """The class built with a run's params, as `sweep.training.build_net` builds the built-in net.

    cs231n nets draw their weights (and, without a seed, their dropout masks)
    from numpy's global RNG: it is seeded from the run's init seed here, so a
    run is the same whichever worker trains it.
    """
    cls = own_class(spec)
    if seed is not None:
        np.random.seed(seed % 2**32)
    kwargs: dict[str, Any] = {
        "input_dim": input_dim,
        "num_classes": num_classes,
        spec.keep_kw: spec.keyword_value(params.keep_prob),
        "normalization": params.model_normalization,
        "reg": params.reg,
        "weight_scale": params.weight_scale,
        "dtype": np.float32,
        "seed": seed if spec.pass_seed else None,
    }
    return cls(list(params.hidden_dims), **kwargs)


class OwnCodeFailed(Exception):
    """Your net's code raised during a run: `reason` is one line, `text` the traceback."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason)
        self.reason, self.text = reason, text


@contextmanager
def own_code(spec: ModelSpec | None, ours: list[BaseException]) -> Iterator[None]:
    """Turn an exception of the net's code into `OwnCodeFailed`; numpy's global RNG is restored after.

    Args:
        spec: the net; None (the built-in net): nothing is caught.
        ours: exceptions raised by this project's own hooks (recording, pruning): they pass unchanged.
    """
    if spec is None:
        yield
        return
    from model import TrainingDiverged
    from sweep.check.common import one_line

    state = np.random.get_state()
    try:
        yield
    except Exception as exc:
        if isinstance(exc, TrainingDiverged) or any(exc is e for e in ours):
            raise
        text = "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]
        raise OwnCodeFailed(f"{spec.class_name} raised {one_line(exc)}", text) from exc
    finally:
        np.random.set_state(state)


def model_tags(spec: ModelSpec | None) -> dict[str, str]:
    """The MLflow tags naming the net a run trained (the built-in one too)."""
    from sweep.config.model_spec import BUILT_IN

    tags = {MODEL_TAG: BUILT_IN if spec is None else f"{spec.module}:{spec.class_name}"}
    if spec is not None and spec.path:
        tags[MODEL_TAG + "_path"] = spec.path
    return tags


def traceback_tags(result: Any) -> dict[str, str]:
    """The failed run's traceback tag when your net's code raised (a `RunResult`)."""
    return {TRACEBACK_TAG: result.traceback} if getattr(result, "traceback", None) else {}
