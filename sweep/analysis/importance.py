"""How much keep_prob matters in a finished sweep: Optuna's PED-ANOVA and fANOVA importances.

Two targets per completed trial:
    * "value": the objective, best validation accuracy (higher is better);
    * "gap":   the trial's user attr ``gap`` = final train acc - final val acc
               (lower is better; trials without a finite gap are left out).

Restriction to shared parameters: the search space is conditional (``hidden_3``
exists only for depth >= 3, ...). fANOVA cannot fit a forest on missing
columns and Optuna raises on them, so both evaluators assess only the params
present, with one and the same distribution, in *every* trial used for that
target. Depth itself (always present) stands in for the conditional widths.
Using the same param set for both evaluators keeps their rankings comparable.

Few trials: instead of raising (or Optuna's silent "all importances equal"),
a result carries an explanatory ``note`` and no importances.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.importance import (
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "EVALUATORS",
    "MIN_TRIALS",
    "TARGETS",
    "ImportanceResult",
    "TrendPoint",
    "cached_importance",
    "keep_prob_importance",
    "trend_vs_keep_prob",
]

TARGETS: tuple[str, ...] = ("value", "gap")
EVALUATORS: tuple[str, ...] = ("ped_anova", "fanova")
# PED-ANOVA compares the top-quantile trials with all trials, so it needs a
# top group of >= 2 that is not everything; fANOVA needs 2 points to fit.
MIN_TRIALS: dict[str, int] = {"ped_anova": 5, "fanova": 2}
# Below this many trials any importance is a rough hint; said in the note.
_FEW_TRIALS = 20
# fANOVA's forest and its marginals cost grows with the trials (85 s of a 98-s report at 1 300
# trials): above this many it is fitted on a seeded random sample of them, and the note says so.
# PED-ANOVA (linear in the trials, cheap) always sees them all.
FANOVA_MAX_TRIALS = 200


@dataclass(frozen=True)
class ImportanceResult:
    """Importances of one evaluator for one target.

    ``importances`` is normalized to sum 1 and ordered most important first;
    it is empty when ``note`` explains why nothing could be computed.
    ``n_trials`` counts completed trials with a finite target; ``params`` are
    the parameters assessed (present in all of them).
    """

    target: str
    evaluator: str
    importances: dict[str, float]
    n_trials: int
    params: tuple[str, ...]
    note: str = ""

    def rank(self, param: str) -> int | None:
        """1-based rank of ``param`` (1 = most important), None if not assessed."""
        names = list(self.importances)
        return names.index(param) + 1 if param in names else None


@dataclass(frozen=True)
class TrendPoint:
    """One completed trial for the sweep scatter plot (accuracies as fractions)."""

    number: int
    keep_prob: float
    value: float
    gap: float  # NaN when the trial has no finite ``gap`` user attr


def _gap(trial: FrozenTrial) -> float:
    """The trial's ``gap`` user attr as a float; NaN when missing or not a number."""
    try:
        return float(trial.user_attrs["gap"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _value(trial: FrozenTrial) -> float:
    return math.nan if trial.value is None else float(trial.value)


def _shared_params(trials: list[FrozenTrial], complete: list[FrozenTrial]) -> list[str]:
    """Params present in every one of ``trials``, sorted by name.

    A param whose distribution differs between completed trials (a search
    space changed on resume) is left out too: Optuna raises on it. So are
    fixed params (the sweep suggests them as one-value distributions so that
    ``trial.params`` is complete): their importance is 0 by construction.
    """
    common = dict(trials[0].distributions)
    for t in trials[1:]:
        common = {k: d for k, d in common.items() if t.distributions.get(k) == d}
    stable = (
        k
        for k, d in common.items()
        if not d.single() and all(t.distributions.get(k, d) == d for t in complete)
    )
    return sorted(stable)


def _optuna_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Optuna's warnings worth reporting, deduplicated.

    Dropped as expected: normalize= being experimental, and PED-ANOVA's reminder
    that a ``target`` is minimized (what we want for the gap).
    """
    out: list[str] = []
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, ExperimentalWarning) or "achieve low `target`" in text:
            continue
        if text not in out:
            out.append(text)
    return out


def _evaluate(
    study: optuna.Study,
    target: str,
    evaluator: str,
    trials: list[FrozenTrial],
    params: list[str],
    seed: int,
    top_quantile: float,
) -> ImportanceResult:
    n = len(trials)
    assessed = tuple(params)
    if n < MIN_TRIALS[evaluator]:
        note = (
            f"{n} completed trial(s) with a finite {target}: {evaluator} needs at least "
            f"{MIN_TRIALS[evaluator]}"
        )
        return ImportanceResult(target, evaluator, {}, n, assessed, note)
    if not params:
        note = "no parameter is present in every completed trial"
        return ImportanceResult(target, evaluator, {}, n, assessed, note)

    get = _value if target == "value" else _gap
    if len({get(t) for t in trials}) == 1:
        # fANOVA raises on zero variance; PED-ANOVA would return all zeros.
        note = f"every trial has the same {target}: no parameter effect to attribute"
        return ImportanceResult(target, evaluator, {}, n, assessed, note)

    fn: Callable[[FrozenTrial], float] | None
    notes: list[str] = []
    if evaluator == "fanova":
        ev: optuna.importance.BaseImportanceEvaluator = FanovaImportanceEvaluator(seed=seed)
        # fANOVA explains variance; the direction of "better" does not matter.
        fn = None if target == "value" else _gap
        study = _bounded_for_fanova(study, trials, seed, notes)
    else:
        # Top group of >= 2 trials: top_quantile once n >= 2 / top_quantile, larger before.
        quantile = max(top_quantile, 2.0 / n)
        ev = PedAnovaImportanceEvaluator(target_quantile=quantile)
        if quantile != top_quantile:
            notes.append(f"top {quantile:.0%} of trials used (too few for {top_quantile:.0%})")
        # PED-ANOVA asks which params it takes to reach the best trials; with a
        # target it assumes lower is better, which is right for the gap. For the
        # value, None lets it follow the study's direction (maximize).
        fn = None if target == "value" else _gap
    if n < _FEW_TRIALS:
        notes.append(f"only {n} trials: importances are a rough hint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = get_param_importances(
            study, evaluator=ev, params=params, target=fn, normalize=False
        )
    notes.extend(_optuna_warnings(caught))
    total = float(sum(raw.values()))
    if not total > 0:
        # Optuna would report equal shares here, which reads as "all matter equally".
        notes.insert(0, "all importances are zero: the evaluator found no parameter effect")
        return ImportanceResult(target, evaluator, {}, n, assessed, "; ".join(notes))
    ordered = dict(sorted(((k, float(v) / total) for k, v in raw.items()), key=lambda kv: -kv[1]))
    return ImportanceResult(target, evaluator, ordered, n, assessed, "; ".join(notes))


def _bounded_for_fanova(study: optuna.Study, trials: list[FrozenTrial], seed: int, notes: list[str]) -> optuna.Study:
    """`study`, or above FANOVA_MAX_TRIALS an in-memory study of a seeded random FANOVA_MAX_TRIALS
    of `trials` (in trial order), said in `notes`."""
    import numpy as np

    n, k = len(trials), FANOVA_MAX_TRIALS
    if n <= k:
        return study
    notes.append(f"fANOVA on a random {k} of the {n} trials (seed {seed}): its cost grows with the trials")
    picked = np.sort(np.random.default_rng([seed, n]).choice(n, size=k, replace=False))
    sample = optuna.create_study(directions=study.directions)
    sample.add_trials([trials[i] for i in picked])
    return sample


def study_version(study: optuna.Study) -> str:
    """What changes whenever the study does: trial count, last start, last end (for caches)."""
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return (f"{study.study_name}|{len(trials)}|{max(starts).isoformat() if starts else ''}|"
            f"{max(ends).isoformat() if ends else ''}|{sum(1 for t in trials if t.state.is_finished())}")


def cached_importance(study: optuna.Study, cache_file: Path, **kwargs: Any) -> dict[str, dict[str, ImportanceResult]]:
    """`keep_prob_importance(study, **kwargs)`, reused from `cache_file` while the study has not changed.

    The cache is keyed by `study_version` and the arguments; one that cannot be read or
    written is ignored (the importances are then computed, as without it).
    """
    key = json.dumps({"study": study_version(study), "args": kwargs, "fanova_max": FANOVA_MAX_TRIALS,
                      "optuna": optuna.__version__}, sort_keys=True, default=str)
    try:
        stored = json.loads(cache_file.read_text())
        if stored.get("key") == key:
            return {target: {ev: ImportanceResult(**{**res, "params": tuple(res["params"])})
                             for ev, res in by_eval.items()}
                    for target, by_eval in stored["results"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    results = keep_prob_importance(study, **kwargs)
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "results": {
            target: {ev: asdict(res) for ev, res in by_eval.items()} for target, by_eval in results.items()}}))
        os.replace(tmp, cache_file)
    return results


def keep_prob_importance(
    study: optuna.Study, *, seed: int = 0, param: str = "keep_prob", top_quantile: float = 0.1
) -> dict[str, dict[str, ImportanceResult]]:
    """Parameter importances for the objective and for the train-val gap.

    Args:
        study: a single-objective study (objective = best validation accuracy);
            completed trials carry a ``gap`` user attr.
        seed: fANOVA's forest seed (PED-ANOVA is deterministic).
        param: the parameter of interest; if it is not shared by every trial
            used for a target, that target's notes say so.
        top_quantile: PED-ANOVA's ``target_quantile`` in (0, 1): importance
            for reaching the best ``top_quantile`` of trials (Optuna's default
            0.1); raised to 2 / n_trials so the top group has >= 2 trials.

    Returns:
        ``{target: {evaluator: ImportanceResult}}`` for targets "value" and
        "gap" and evaluators "ped_anova" and "fanova".
    """
    if not 0.0 < top_quantile < 1.0:
        raise ValueError(f"top_quantile must be in (0, 1), got {top_quantile}")
    if len(study.directions) != 1:
        raise ValueError(
            f"study {study.study_name!r} must be single-objective (best validation accuracy)"
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    out: dict[str, dict[str, ImportanceResult]] = {}
    for target in TARGETS:
        get = _value if target == "value" else _gap
        trials = [t for t in complete if math.isfinite(get(t))]
        params = _shared_params(trials, complete) if trials else []
        results = {}
        for evaluator in EVALUATORS:
            res = _evaluate(study, target, evaluator, trials, params, seed, top_quantile)
            if trials and param not in params:
                extra = f"{param!r} is not a parameter of every completed trial"
                res = ImportanceResult(
                    res.target, res.evaluator, res.importances, res.n_trials, res.params,
                    "; ".join(n for n in (res.note, extra) if n),
                )
            results[evaluator] = res
        out[target] = results
    return out


def trend_vs_keep_prob(study: optuna.Study, *, param: str = "keep_prob") -> list[TrendPoint]:
    """keep_prob, objective value and gap of every completed trial, in trial order.

    Args:
        study: the sweep's study.
        param: name of the keep-probability parameter.

    Returns:
        One :class:`TrendPoint` per completed trial that has ``param`` and a value.
    """
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if param in t.params and t.value is not None:
            points.append(TrendPoint(t.number, float(t.params[param]), float(t.value), _gap(t)))
    return points
