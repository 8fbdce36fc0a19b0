"""The best trial's run says it is the best, with its test accuracy (sweep.tracking.best), on a real SQLite store."""

from __future__ import annotations

from pathlib import Path

from sweep.config.display import NOTE_TAG
from sweep.tracking.best import BEST_TAG, TEST_ACC_TAG, mark_best_trial
from sweep.tracking.store import make_client


def test_the_mark_moves_to_a_new_best_and_leaves_the_old_runs_description_as_it_was(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("study")
    parent = client.create_run(exp, run_name="study s").info.run_id
    other_parent = client.create_run(exp, run_name="study other").info.run_id
    notes = {"a": "keep_prob 0.5, hidden 64: complete, best val acc 0.9500 (epoch 3)",
             "b": "keep_prob 0.8, hidden 32: complete, best val acc 0.9700 (epoch 4)"}
    runs = {k: client.create_run(exp, run_name=f"trial-{k}", tags={"mlflow.parentRunId": parent, NOTE_TAG: note})
            .info.run_id for k, note in notes.items()}
    elsewhere = client.create_run(exp, run_name="trial-x", tags={"mlflow.parentRunId": other_parent,
                                                                  NOTE_TAG: "x", BEST_TAG: "true"}).info.run_id

    mark_best_trial(client, exp, parent, runs["a"], "s", 0.9433333333)
    a = client.get_run(runs["a"]).data.tags
    assert a[BEST_TAG] == "true" and a[TEST_ACC_TAG] == "0.9433"
    assert a[NOTE_TAG] == ("**Best trial of study s** (the highest best val acc of its complete trials): test acc "
                           "0.9433 (94.3 %), evaluated once on the test set after the search.\n\n" + notes["a"])
    mark_best_trial(client, exp, parent, runs["a"], "s", 0.9433333333)  # the same best again: marked once
    assert client.get_run(runs["a"]).data.tags[NOTE_TAG].count("Best trial") == 1

    mark_best_trial(client, exp, parent, runs["b"], "s", 0.96)  # a later sweep found a better trial
    a, b = client.get_run(runs["a"]).data.tags, client.get_run(runs["b"]).data.tags
    assert BEST_TAG not in a and TEST_ACC_TAG not in a and a[NOTE_TAG] == notes["a"]
    assert b[BEST_TAG] == "true" and b[TEST_ACC_TAG] == "0.9600" and b[NOTE_TAG].endswith("\n\n" + notes["b"])
    assert client.get_run(elsewhere).data.tags[BEST_TAG] == "true"  # another study's parent: not touched
