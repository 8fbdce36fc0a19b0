"""The best trial's MLflow run says it is the best, and shows its test accuracy.

A trial's run is written while it trains, before anyone knows which trial
wins; its test accuracy is measured once, after the search (search.finish).
So `sweep run` marks the run at its end, once the tracker has sent every
trial's own records (whose end sets the description this goes on top of):
a first line in its description (`mlflow.note.content`, the Overview's
Description) and the tags `best_trial_of_study = true` and `test_acc`. A
later `sweep run` of the study whose best is another trial moves the mark:
one run under the study's parent carries it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweep.config.display import NOTE_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["BEST_TAG", "TEST_ACC_TAG", "best_note", "mark_best_trial", "unmarked_note"]

BEST_TAG = "best_trial_of_study"  # "true" on the study's best trial's run, absent elsewhere
TEST_ACC_TAG = "test_acc"  # that trial's test accuracy, a fraction as `summary/best_val_acc` is
_NOTE_OPENING = "**Best trial of study "


def best_note(study: str, test_acc: float, note: str) -> str:
    """`note` (a trial run's description) with the line saying it is the study's best, and its test accuracy."""
    line = (f"{_NOTE_OPENING}{study}** (the highest best val acc of its complete trials): "
            f"test acc {test_acc:.4f} ({test_acc * 100:.1f} %), evaluated once on the test set after the search.")
    rest = unmarked_note(note)
    return f"{line}\n\n{rest}" if rest else line


def unmarked_note(note: str) -> str:
    """A description without the best-trial line `best_note` put first."""
    if not note.startswith(_NOTE_OPENING):
        return note
    return note.split("\n\n", 1)[1] if "\n\n" in note else ""


def mark_best_trial(client: MlflowClient, experiment_id: str, parent_run_id: str, run_id: str, study: str,
                    test_acc: float) -> None:
    """Mark `run_id` as the best trial under `parent_run_id` (description, tags); unmark any other there."""
    marked = client.search_runs(
        [experiment_id], filter_string=f"tags.`{BEST_TAG}` = 'true' and tags.`mlflow.parentRunId` = '{parent_run_id}'")
    for old in marked:
        if old.info.run_id != run_id:  # a best of an earlier `sweep run`, beaten since
            client.set_tag(old.info.run_id, NOTE_TAG, unmarked_note(old.data.tags.get(NOTE_TAG, "")))
            client.delete_tag(old.info.run_id, BEST_TAG)
            client.delete_tag(old.info.run_id, TEST_ACC_TAG)
    note = client.get_run(run_id).data.tags.get(NOTE_TAG, "")
    client.set_tag(run_id, NOTE_TAG, best_note(study, test_acc, note))
    client.set_tag(run_id, TEST_ACC_TAG, f"{test_acc:.4f}")
    client.set_tag(run_id, BEST_TAG, "true")
