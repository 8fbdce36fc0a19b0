"""Each trial's MLflow run id, kept on its trial (`mlflow_run_id`) as the tracker thread creates the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna


class RunLinks:
    """`on_run_created` for the sweep's Tracker: the run id on the trial, or on the study when the
    trial has ended (`mlflow_run_id:<number>`); `on_first()` is called after the first one.

    Writes through a storage object of its own, opened on first use: Optuna's journal
    storage holds its thread lock while it waits for the file lock (which the workers
    hold most of the time on short trials), and the sweep's main thread must not wait
    behind the tracker's write to count a trial's end (the mirror's gate).
    """

    def __init__(self, study: optuna.Study, storage_url: str | None, journal: Path,
                 on_first: Callable[[], Any] = lambda: None) -> None:
        self.study, self.storage_url, self.journal, self.on_first = study, storage_url, journal, on_first
        self._storage: Any = None
        self.recorded = 0

    def __call__(self, start: dict[str, Any], run_id: str) -> None:
        from sweep.search.study import make_storage

        if self._storage is None:
            self._storage = make_storage(self.storage_url, self.journal)
        storage, study_id = self._storage, self.study._study_id
        number = int(start["tags"]["optuna.trial_number"])
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        try:
            # A short trial has mostly ended by now: asked first, since a journal writes
            # the refused record anyway (one more locked, fsynced append per run).
            if storage.get_trial(trial_id).state.is_finished():
                raise optuna.exceptions.UpdateFinishedTrialError()
            storage.set_trial_user_attr(trial_id, "mlflow_run_id", run_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            # The trial ended before MLflow was up (its start-up overlaps the
            # first trials instead of delaying them): keep the link on the study.
            storage.set_study_user_attr(study_id, f"mlflow_run_id:{number}", run_id)
        self.recorded += 1
        if self.recorded == 1:  # once: where `sweep status` finds the runs without asking MLflow
            self.on_first()
