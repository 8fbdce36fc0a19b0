"""The net a study trains, recorded on it: a resumed study refuses another one (one line naming both)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from sweep.config.model_spec import built_in_record

if TYPE_CHECKING:
    import optuna

    from sweep.config.model_spec import ModelSpec

MODEL_ATTR = "model"  # the study's user attr: {"module", "class"[, "path"]}


def _name(record: dict[str, Any]) -> str:
    return f"{record.get('module')}:{record.get('class')}"


def check_model(study: optuna.Study, spec: ModelSpec | None, *, record: bool = True) -> None:
    """Record the net on a new study; refuse a study trained with another one.

    A study from before the record existed was trained by the built-in net.

    Raises:
        ValueError: the study's net is another one (`sweep run` / `sweep ablate` exit 2).
    """
    now = built_in_record() if spec is None else spec.record()
    stored = study.user_attrs.get(MODEL_ATTR)
    # Only trials that ran say which net trained them: a new study already holds the
    # queued keep 1.0 baseline (sweep.search.baseline), WAITING, trained by nothing yet.
    if stored is None and any(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        stored = built_in_record()
    if stored is None:
        if record:
            study.set_user_attr(MODEL_ATTR, now)
        return
    if _name(stored) != _name(now):
        given = "the built-in net (no --model)" if spec is None else _name(now)
        want = "no --model" if _name(stored) == _name(built_in_record()) else f"--model {_name(stored)}"
        raise ValueError(f"study {study.study_name!r} was trained with {_name(stored)}; this command trains "
                         f"{given}: give {want}, or another --study name for a new study of this net")
    if record and study.user_attrs.get(MODEL_ATTR) is None:
        study.set_user_attr(MODEL_ATTR, now)
