"""A study's files and MLflow runs belong to the study, not to its name (issue 22, items 2 and 3).

A new journal or database makes a new study even under an old name: it must
get its own spool folder, weights, report and MLflow parent run, and never
read the old study's spool files as its own.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep.paths import RECORD_NAME, STUDY_KEY_ATTR, STUDY_KEY_TAG, check_study_name, study_paths
from sweep.tracking.spool import RunRecorder
from sweep_helpers import dead_pid, load_study, mlflow_runs, run_cli

STUDY = "dropout-digits"
SMALL = ["--dataset", "digits", "--epochs", "2", "--jobs", "2"]


def _study_parents(workdir: Path) -> dict[str | None, str]:
    """The MLflow parent runs of the study's experiment: study key tag -> run id."""
    client, _, _ = mlflow_runs(workdir)
    exp = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`sweep.parent_key` = 'study'")
    return {r.data.tags.get(STUDY_KEY_TAG): r.info.run_id for r in runs}


def _key_and_trials(study: optuna.Study) -> tuple[str, list[optuna.trial.FrozenTrial], dict[int, str]]:
    """The study's key, trials and their MLflow run ids, read now (before its journal is deleted)."""
    from sweep.search.finish import _run_id_of

    trials = study.get_trials()
    run_ids = {t.number: _run_id_of(study, t.number) for t in trials}
    return study._storage.get_study_system_attrs(study._study_id)[STUDY_KEY_ATTR], trials, run_ids


def _assert_trials_in_mlflow(workdir: Path, key: str, trials: list[optuna.trial.FrozenTrial],
                             run_ids: dict[int, str]) -> None:
    """Every trial has its own MLflow run, under its study's own parent (tagged with its key), with its params."""
    _, _, children = mlflow_runs(workdir)
    parent = _study_parents(workdir)[key]
    by_id = {r.info.run_id: r for r in children}
    for t in trials:
        run = by_id[run_ids[t.number]]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert int(run.data.tags["optuna.trial_number"]) == t.number
        assert float(run.data.params["keep_prob"]) == pytest.approx(t.params["keep_prob"], rel=5e-4)


def test_a_new_journal_under_an_old_name_is_a_new_study_with_its_own_files_and_runs(tmp_path: Path) -> None:
    run_cli(tmp_path, "run", *SMALL, "--trials", "2", "--seed", "1")
    old = _key_and_trials(load_study(tmp_path))
    (tmp_path / "optuna.journal").unlink()
    out = run_cli(tmp_path, "run", *SMALL, "--trials", "2", "--seed", "99").stdout
    new = load_study(tmp_path)

    _assert_trials_in_mlflow(tmp_path, *old)
    _assert_trials_in_mlflow(tmp_path, *_key_and_trials(new))  # before: none of them reached MLflow
    assert len(_study_parents(tmp_path)) == 2
    # The printed best-trial link opens the new study's run, not the old trial-000N.
    assert _key_and_trials(new)[2][new.best_trial.number] in out
    folders = sorted(p.name for p in (tmp_path / ".sweep").iterdir())
    assert len(folders) == 2 and folders[0] == STUDY, folders
    records = [json.loads((tmp_path / ".sweep" / f / RECORD_NAME).read_text()) for f in folders]
    assert {r["study"] for r in records} == {STUDY} and len({r["key"] for r in records}) == 2
    sync = run_cli(tmp_path, "sync", "--study", STUDY).stdout
    assert all(f".sweep/{f}/spool: nothing to do" in sync for f in folders), sync


def test_another_storage_in_a_folder_with_an_old_spool_neither_reaps_nor_hides_its_trials(tmp_path: Path) -> None:
    run_cli(tmp_path, "run", *SMALL, "--trials", "4", "--seed", "1")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    proc = run_cli(tmp_path, "run", *SMALL, "--trials", "4", "--seed", "99", "--storage", other)
    text = proc.stdout + proc.stderr
    # Before: the old trial-000N.jsonl (its worker long dead) was read as the new trial's
    # owner, so a running trial was reaped ("Cannot tell a FAIL trial", "worker process died").
    assert "Cannot tell" not in text and "worker process died" not in text and "Traceback" not in text, text
    new = optuna.load_study(study_name=STUDY, storage=other)
    assert [t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in new.get_trials()] == [True] * 4
    _assert_trials_in_mlflow(tmp_path, *_key_and_trials(new))
    _assert_trials_in_mlflow(tmp_path, *_key_and_trials(load_study(tmp_path)))


def _legacy_study(workdir: Path) -> optuna.Study:
    """A study as `sweep run` made it before keys: no key, its `sweep` attr set, one trial RUNNING."""
    from sweep.search.study import make_storage

    storage = make_storage(None, workdir / "optuna.journal")
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.set_user_attr("sweep", {"seed": 1})
    study.ask({"keep_prob": optuna.distributions.FloatDistribution(0.2, 1.0)})
    return study


def _spool_file(spool_dir: Path, number: int, pid: int) -> Path:
    path = spool_dir / f"trial-{number:04d}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with RunRecorder(path) as rec:
        rec.start(f"trial-{number:04d}", "study", {"keep_prob": 0.5},
                  {"optuna.trial_number": number, "optuna.study": STUDY, "sweep.kind": "trial"})
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["pid"] = pid  # the worker that wrote it
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    return path


def test_a_folder_from_before_records_is_adopted_by_its_own_study(tmp_path: Path) -> None:
    study = _legacy_study(tmp_path)
    _spool_file(tmp_path / ".sweep" / STUDY / "spool", 0, os.getpid())  # written after its trial started

    paths = study_paths(tmp_path, study, None, claim=True)

    assert paths.state_dir == (tmp_path / ".sweep" / STUDY).resolve()
    assert paths.key is None and paths.identity_tags == {}  # its MLflow parent is the untagged one it had
    record = json.loads((paths.state_dir / RECORD_NAME).read_text())
    assert record == {"study": STUDY, "key": None, "storage": f"journal:{(tmp_path / 'optuna.journal').resolve()}",
                      "study_id": 0}
    assert study_paths(tmp_path, study, None, claim=False) == paths


def test_a_folder_of_an_older_study_of_the_name_is_not_adopted(tmp_path: Path) -> None:
    # Spool files written before this study's trials started: another (deleted) study's.
    _spool_file(tmp_path / ".sweep" / STUDY / "spool", 0, dead_pid())
    time.sleep(1.5)  # past the clock slack
    study = _legacy_study(tmp_path)

    paths = study_paths(tmp_path, study, None, claim=True)

    assert paths.state_dir.parent == (tmp_path / ".sweep").resolve()
    assert paths.state_dir.name.startswith(f"{STUDY}-")
    assert not (tmp_path / ".sweep" / STUDY / RECORD_NAME).exists()  # left to whoever wrote it


def test_a_new_studys_running_trial_is_not_reaped_for_an_old_spool_file_of_its_number(tmp_path: Path) -> None:
    """The 'Cannot tell a FAIL trial' / reaped-in-50-ms root cause, without timing: an old
    trial-0000.jsonl whose worker is dead must not make the new study's RUNNING trial 0 look orphaned."""
    from sweep.config.sweep_file import load_config
    from sweep.search.study import WORKER_ATTR, make_storage, open_study, reap_stale_trials
    from sweep.tracking.spool import process_start_time

    _spool_file(tmp_path / ".sweep" / STUDY / "spool", 0, dead_pid())
    time.sleep(1.5)  # an earlier sweep's file: past the clock slack
    url = f"sqlite:///{tmp_path / 'other.db'}"
    cfg = load_config(None, {"dataset": "digits", "storage": url})
    study = open_study(cfg, make_storage(url, tmp_path / "optuna.journal"))
    trial = study.ask()
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": process_start_time(os.getpid())}
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, owner)  # as a live worker writes it

    paths = study_paths(tmp_path, study, url, claim=True)
    reap_stale_trials(study, paths.spool_dir, "worker process died", min_age_seconds=0)

    assert paths.spool_dir != (tmp_path / ".sweep" / STUDY / "spool").resolve()
    assert study.get_trials()[0].state == TrialState.RUNNING


@pytest.mark.parametrize("name", ["../../escape", "/some/other/folder", "a" * 300, ".hidden", "..", "a\x00b",
                                  "tab\there", "back\\slash"])
def test_unsafe_study_names_are_refused(name: str) -> None:
    from sweep.config.domains import ConfigError

    with pytest.raises(ConfigError) as err:
        check_study_name(name, "--study")
    assert "\n" not in str(err.value) and "--study" in str(err.value)


@pytest.mark.parametrize("name", ["dropout-digits", "my study 2", "run_2024.v2", "ü-study", "a" * 100])
def test_safe_study_names_are_kept(name: str) -> None:
    assert check_study_name(name) == name


def _new_study(workdir: Path, url: str | None = None) -> optuna.Study:
    from sweep.config.sweep_file import load_config
    from sweep.search.study import make_storage, open_study

    cfg = load_config(None, {"dataset": "digits", "storage": url})
    return open_study(cfg, make_storage(url, workdir / "optuna.journal"))


def test_two_processes_claiming_one_new_studys_folder_get_the_same_one(tmp_path: Path) -> None:
    """The second of two `sweep run`s starting a new study at once finds `.sweep/NAME` made by the
    first (after its own lookup found nothing): it must take it, not make `.sweep/NAME-KEY`."""
    from sweep.paths import _claim_folder, identity_of

    ident = identity_of(_new_study(tmp_path), None, tmp_path)
    first = _claim_folder(tmp_path / ".sweep", ident)
    second = _claim_folder(tmp_path / ".sweep", ident)
    assert first == second == tmp_path / ".sweep" / STUDY
    assert sorted(p.name for p in (tmp_path / ".sweep").iterdir()) == [STUDY]  # no temporary folder left


def test_a_new_study_takes_an_empty_folder_made_for_it(tmp_path: Path) -> None:
    """`.sweep/NAME/spool` made beforehand (say, a small disk mounted there): nothing in it is
    another study's, so the new study uses it."""
    (tmp_path / ".sweep" / STUDY / "spool").mkdir(parents=True)
    paths = study_paths(tmp_path, _new_study(tmp_path), None, claim=True)
    assert paths.spool_dir == (tmp_path / ".sweep" / STUDY / "spool").resolve() and paths.key
    assert json.loads((paths.state_dir / RECORD_NAME).read_text())["key"] == paths.key
