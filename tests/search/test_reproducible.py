"""`sweep run --reproducible`: the same study seed gives the same trials at any --jobs and on Dask.

Tiny trials (300 digits rows, 3 epochs, small nets) so that 30-trial sweeps take seconds.
Without the mode, two --jobs 2 sweeps of this file differed in 19 of 30 trials when this was
written (bench/reproducible_cost.py measures it again); with it, nothing may differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweep.search.reproducible import ATTR, LaggedPruner, LaggedSampler, check_study, given_up_line, wait_for_past
from sweep.tracking.store import CURVE_METRICS
from sweep_helpers import load_study, mlflow_runs, run_cli, write_config

TINY_SPACE = """
keep_prob = {low = 0.2, high = 1.0, step = 0.05}
depth = {low = 1, high = 2}
width = {low = 16, high = 64, log = true}
learning_rate = {low = 1e-3, high = 1e-1, log = true}
normalization = ["none", "batchnorm"]
weight_scale = {low = 1e-2, high = 1e-1, log = true}
batch_size = 50
epochs = 3
"""
TRIALS = 30
# Wall-clock figures differ from run to run by nature; every other curve must be identical.
TIMED = {"epoch_seconds"}


def _sweep(folder: Path, *args: str) -> Path:
    folder.mkdir()
    cfg = write_config(folder / "tiny.toml", TINY_SPACE, "num_train = 300\n")
    run_cli(folder, "run", str(cfg), "--trials", str(TRIALS), "--reproducible", *args)
    return folder


def _optuna_record(study: optuna.Study) -> dict[int, Any]:
    return {t.number: (t.state.name, t.params, t.intermediate_values, t.value, t.user_attrs.get("pruned_at_epoch"))
            for t in study.get_trials()}


def _mlflow_record(workdir: Path | None, tracking_uri: str | None = None) -> dict[int, Any]:
    client, _, children = mlflow_runs(workdir, tracking_uri=tracking_uri)
    out = {}
    for run in children:
        curves = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                          key=lambda m: m.step)]
                  for key in CURVE_METRICS if key not in TIMED}
        out[int(run.data.tags["optuna.trial_number"])] = (
            run.data.params, run.data.tags["state"], run.data.tags.get("pruned_at_epoch"), run.info.status, curves)
    return out


@pytest.fixture(scope="module")
def jobs2_twice_and_jobs1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reproducible")
    return {"a": _sweep(root / "jobs2-a", "--jobs", "2"), "b": _sweep(root / "jobs2-b", "--jobs", "2"),
            "one": _sweep(root / "jobs1", "--jobs", "1")}


def test_same_seed_gives_the_same_trials_at_two_jobs_twice_and_at_one_job(jobs2_twice_and_jobs1) -> None:
    optuna_records = {k: _optuna_record(load_study(p)) for k, p in jobs2_twice_and_jobs1.items()}
    mlflow_records = {k: _mlflow_record(p) for k, p in jobs2_twice_and_jobs1.items()}
    ref = optuna_records["a"]
    assert sorted(ref) == list(range(TRIALS))
    # The comparison means something: the sampler left its start-up phase and the pruner pruned.
    states = [s for s, *_ in ref.values()]
    assert states.count("PRUNED") >= 3 and states.count("COMPLETE") >= 10, states
    for key in ("b", "one"):
        assert optuna_records[key] == ref, [n for n in ref if optuna_records[key].get(n) != ref[n]]
        assert mlflow_records[key] == mlflow_records["a"], [
            n for n in mlflow_records["a"] if mlflow_records[key].get(n) != mlflow_records["a"][n]]
    # MLflow mirrors Optuna: the same states and one point per epoch reported.
    for number, (_, state, _, _, curves) in mlflow_records["a"].items():
        assert state == ref[number][0]
        assert [s for s, _ in curves["val_acc"]] == sorted(ref[number][2])
    # The best trial's test accuracy, evaluated once by the parent, too.
    assert len({repr(load_study(p).user_attrs["best_test_acc"]) for p in jobs2_twice_and_jobs1.values()}) == 1
    study = load_study(jobs2_twice_and_jobs1["a"])
    assert all(t.system_attrs[ATTR]["lag"] == 4 and "waited_out" not in t.system_attrs[ATTR]  # none gave up
               for t in study.trials)
    assert study.user_attrs["sweep.reproducible_lag"] == 4


def test_a_reproducible_sweep_on_dask_matches_the_loky_one(
    tmp_path: Path, dask_client: Any, jobs2_twice_and_jobs1: dict[str, Path]
) -> None:
    from sweep_helpers import on_dask_workers

    storage = f"journal:{tmp_path / 'dask' / 'optuna.journal'}"
    with on_dask_workers(dask_client, tmp_path / "cache"):
        _sweep(tmp_path / "dask", "--storage", storage, "--dask-scheduler", dask_client.scheduler.address)
    study = optuna.load_study(study_name="dropout-digits",
                              storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
                                  storage.removeprefix("journal:"))))
    assert _optuna_record(study) == _optuna_record(load_study(jobs2_twice_and_jobs1["one"]))
    assert _mlflow_record(tmp_path / "dask") == _mlflow_record(jobs2_twice_and_jobs1["one"])


def _study_with(states: list[TrialState], values: dict[int, list[float]] | None = None) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for number, state in enumerate(states):
        curve = (values or {}).get(number, [])
        study.add_trial(optuna.create_trial(
            state=state, value=max(curve, default=0.5) if state == TrialState.COMPLETE else None,
            intermediate_values=dict(enumerate(curve, start=1)),
            params={}, distributions={}))
    return study


def test_the_pruner_of_trial_n_ignores_trials_within_the_lag() -> None:
    """Trial 5 reports 0.5 at epoch 1; trials 0-1 reached 0.3, trials 2-4 0.9. Optuna's median pruner
    prunes it against all five (median 0.9); with lag 2 it sees only trials 0-2 (median 0.3)."""
    curves = {0: [0.3, 0.3], 1: [0.3, 0.3], 2: [0.9, 0.9], 3: [0.9, 0.9], 4: [0.9, 0.9]}
    study = _study_with([TrialState.COMPLETE] * 5, curves)
    trial = study.ask()
    trial.report(0.5, 1)
    frozen = study._storage.get_trial(trial._trial_id)
    median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    assert median.prune(study, frozen)  # median of 0.3, 0.3, 0.9, 0.9, 0.9 is 0.9
    lagged = LaggedPruner(median, study.sampler, lag=2)  # trials < 5 - 2: 0.3, 0.3, 0.9 -> median 0.3
    assert not lagged.prune(study, frozen)


def test_waiting_for_the_past_gives_up_on_a_queued_trial_and_says_which() -> None:
    study = _study_with([TrialState.COMPLETE, TrialState.WAITING, TrialState.COMPLETE])
    trial = study._storage.get_trial(study._storage.create_new_trial(study._study_id))  # number 3
    slept: list[float] = []
    assert wait_for_past(study, trial, 1, queued_seconds=0.0, sleep=slept.append) == [1]
    assert wait_for_past(study, trial, 2, queued_seconds=0.0, sleep=slept.append) == []  # sees only trial 0


def test_a_trial_that_gave_up_waiting_is_recorded_and_named_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    import sweep.search.reproducible as reproducible

    monkeypatch.setattr(reproducible, "WAIT_QUEUED_SECONDS", 0.0)
    study = _study_with([TrialState.COMPLETE, TrialState.WAITING])
    assert given_up_line(study) is None
    sampler = LaggedSampler(optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(), lag=0)
    trial = study._storage.get_trial(study._storage.create_new_trial(study._study_id))  # number 2
    sampler.before_trial(study, trial)
    assert study._storage.get_trial(trial._trial_id).system_attrs[ATTR]["waited_out"] == [1]
    assert given_up_line(study) == ("not reproducible: trial(s) [2] stopped waiting for older trials [1] "
                                    "and ran without them")


def test_waiting_for_the_past_waits_for_a_running_trial_until_it_ends() -> None:
    study = _study_with([TrialState.COMPLETE, TrialState.COMPLETE])
    running = study.ask()  # number 2
    trial = study._storage.get_trial(study._storage.create_new_trial(study._study_id))  # number 3
    polls: list[float] = []

    def sleep(seconds: float) -> None:  # the running trial ends after three polls
        polls.append(seconds)
        if len(polls) == 3:
            study.tell(running, 0.7)

    assert wait_for_past(study, trial, 0, queued_seconds=0.0, sleep=sleep) == []
    assert len(polls) == 3


def test_changing_the_mode_on_a_resumed_study_is_said() -> None:
    fresh = _study_with([])
    assert check_study(fresh, 4) is None and fresh.user_attrs["sweep.reproducible_lag"] == 4
    old = _study_with([TrialState.COMPLETE])  # trials from before the mode existed
    assert check_study(old, None) is None
    note = check_study(old, 4)
    assert note and "ran without --reproducible, this run with lag 4" in note and "not reproducible" in note
    assert old.user_attrs["sweep.reproducible_lag"] == "mixed"


@pytest.mark.parametrize("args, lag", [(["--reproducible"], 4), (["--reproducible-lag", "0"], 0), ([], None)])
def test_the_flags_set_the_lag(args: list[str], lag: int | None) -> None:
    from sweep.cli import _load, build_parser

    parsed = build_parser().parse_args(["run", *args, "--tracking-uri", "sqlite:///x.db"])
    assert _load(parsed, storage=False).reproducible_lag == lag


def test_a_negative_lag_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "bad.toml", TINY_SPACE, "reproducible_lag = -1\n")
    proc = run_cli(tmp_path, "run", str(cfg), check=False)
    assert proc.returncode == 2
    assert "reproducible_lag" in proc.stderr and "integer >= 0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "optuna.journal").exists()
