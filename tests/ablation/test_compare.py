"""`sweep compare` on digits end to end: pairing, the test split, resuming, refusals (seconds)."""

from __future__ import annotations

import fcntl
import io
import json
from pathlib import Path

import numpy as np
import pytest

import sweep
from sweep.ablation.compare import CompareOutcome
from sweep.ablation.compare_runs import ArmTask, run_arm_task
from sweep.ablation.grid import cell_seeds
from sweep.config.sweep_file import load_config
from sweep.reporting.compare_report import arms_figure
from sweep.training import evaluate, num_classes_of, train
from tests.sweep_helpers import mlflow_runs, run_cli

CONFIG = """
[sweep]
dataset = "digits"
jobs = 2
[ablation.params]
keep_prob = 1.0
hidden_dims = [48]
learning_rate = 3e-3
normalization = "none"
epochs = 4
weight_scale = 0.05
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "c.toml").write_text(CONFIG)
    return tmp_path


def _compare(workdir: Path, **kw: object) -> tuple[CompareOutcome, str]:
    out = io.StringIO()
    o = sweep.compare(workdir / "c.toml", workdir=workdir, out=out, size=250, **kw)
    return o, out.getvalue()


def test_every_arm_of_seed_k_starts_from_the_same_weights_batches_and_rows(workdir: Path) -> None:
    # l2 with reg 0 and max-norm with a bound never reached ARE the unregularized net: if seed k of
    # every arm starts from the same weights and sees the same batches in the same order, they
    # give none's result bit for bit; dropout starts from the same weights but trains differently.
    o, _ = _compare(workdir, arms=["none", "l2", "max-norm", "dropout"], seeds=3,
                    fix=["l2:reg=0", "max-norm:max_norm=1e6", "dropout:keep_prob=0.5"])
    by = {(r["arm"], r["seed"]): r for r in o.records}
    for k in range(3):
        none = by[("none", k)]
        for arm in ("l2", "max-norm", "dropout"):
            r = by[(arm, k)]
            assert (r["init_digest"], r["order_seed"], r["data_seed"]) == (
                none["init_digest"], none["order_seed"], none["data_seed"])
        for arm in ("l2", "max-norm"):
            assert by[(arm, k)]["curve"] == [{**e, "epoch_seconds": by[(arm, k)]["curve"][i]["epoch_seconds"]}
                                             for i, e in enumerate(none["curve"])]
            assert by[(arm, k)]["test_acc"] == none["test_acc"]
        assert by[("dropout", k)]["curve"][0]["train_acc"] != none["curve"][0]["train_acc"]
    assert len({by[("none", k)]["init_digest"] for k in range(3)}) == 3  # seeds differ from each other
    assert o.summary is not None and all(c.result.mean_diff == 0 for c in o.summary.test_pairs
                                         if {c.treated, c.control} <= {"none", "l2", "max-norm"})


def test_numbers_and_figure_come_from_the_test_split(workdir: Path) -> None:
    o, text = _compare(workdir, arms=["none", "dropout", "input-dropout"], seeds=2, budget=2)
    assert "choosing each arm's strength on the validation set" in text
    assert "for 10 training run(s)" in text  # the estimate: 2 x 2 tuning trials, 3 arms x 2 seeds
    assert set(o.strengths["dropout"]) == {"keep_prob"} and set(o.strengths["input-dropout"]) == {"input_keep_prob"}
    cfg = load_config(workdir / "c.toml")
    rec = next(r for r in o.records if r["arm"] == "dropout" and r["seed"] == 1)
    # The same run again, by hand: its best-validation weights evaluated on X_test give the recorded number.
    from sweep.ablation.arms import arm_params, arms_for

    params = arm_params(cfg.grid.base_params(), arms_for("digits")["dropout"], o.strengths["dropout"], "digits")
    data = cfg.data.subset(250, rec["data_seed"]).load()
    res = train(params, data, cell_seeds(cfg.seed, 1), keep_best_weights=True)
    assert res.best_weights is not None
    test = evaluate(params, res.best_weights, data["X_test"], data["y_test"], num_classes_of(data))
    val = evaluate(params, res.best_weights, data["X_val"], data["y_val"], num_classes_of(data))
    assert rec["test_acc"] == test and rec["val_acc"] == val
    assert any(r["test_acc"] != r["val_acc"] for r in o.records)  # two splits, not one read twice
    assert rec["gap"] == pytest.approx(rec["train_acc"] - test)
    # The summary and the figure show those test numbers.
    s = o.summary
    for arm in s.arms:
        mine = [r["test_acc"] for r in o.records if r["arm"] == arm.name]
        assert arm.test_acc.mean == pytest.approx(np.mean(mine))
    bars = [p.get_height() for p in arms_figure(s).axes[0].patches]
    assert bars == pytest.approx([a.test_acc.mean * 100 for a in s.arms])
    report = (o.report or Path()).read_text()
    assert "**test** split" in report and f"{s.arm(s.winner).test_acc.mean * 100:.1f}" in report
    assert (o.report.parent / "figures" / "arms.png").stat().st_size > 0  # type: ignore[union-attr]
    assert (o.report.parent / "figures" / "curves.png").stat().st_size > 0  # type: ignore[union-attr]
    # Resumed: nothing is tuned or trained again, the same numbers come back.
    again, text = _compare(workdir, arms=["none", "dropout", "input-dropout"], seeds=2, budget=2)
    assert "re-training 0 of 6 runs" in text and again.records == o.records and again.strengths == o.strengths
    assert "estimated" not in text  # nothing left to train
    # MLflow: the comparison's parent run and one child per (arm, seed), its curve and its test figure.
    _, parents, children = mlflow_runs(workdir)
    parent = parents[f"compare:{o.name}"]
    assert parent.data.tags["sweep.kind"] == "compare" and parent.info.status == "FINISHED"
    runs = {c.info.run_name: c for c in children if c.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(runs) == sorted(f"{r['arm']}-s{r['seed']}" for r in o.records)
    for r in o.records:
        run = runs[f"{r['arm']}-s{r['seed']}"]
        assert run.info.status == "FINISHED" and float(run.data.tags["summary/test_acc"]) == pytest.approx(r["test_acc"])
        assert run.data.metrics["val_acc"] == pytest.approx(r["curve"][-1]["val_acc"])
    tuning = (o.folder / "tuning.jsonl").read_text().splitlines()
    assert len(tuning) == 4 and all(json.loads(line)["arm"] != "none" for line in tuning)
    # A second process of the same comparison is refused while the first holds it (both would train).
    with open(o.folder / "compare.flock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_cli(workdir, "compare", "c.toml", "--arms", "none,dropout,input-dropout", "--seeds", "2",
                       "--budget", "2", "--size", "250", check=False)
    assert proc.returncode == 2 and "another `sweep compare` of this comparison is running" in proc.stderr
    assert (o.folder / "runs.jsonl").read_text().count("\n") == 6  # nothing appended


def test_the_arm_task_reads_the_test_split_once_per_run(workdir: Path) -> None:
    cfg = load_config(workdir / "c.toml")
    params = cfg.grid.base_params()
    rec = run_arm_task(ArmTask("none", 0, params, cfg.data.subset(200, 0), cfg.seed))
    assert set(rec) >= {"test_acc", "train_acc", "val_acc", "gap", "seconds", "curve", "init_digest"}
    assert all(set(e) == {"train_acc", "val_acc", "epoch_seconds"} for e in rec["curve"])  # no test curve


def test_bad_arms_and_strengths_are_refused_in_one_line(workdir: Path) -> None:
    for args, says in [
        (["--arms", "l2,dropout"], "arms: must include 'none'"),
        (["--arms", "none,lasso"], "arms: unknown arm 'lasso'"),
        (["--arms", "none,l2", "--fix", "l2:rg=1"], "fix.l2: arm 'l2' sets only reg"),
        (["--arms", "none,augmentation", "--fix", "augmentation:augment_shift=5"],
         "fix.augmentation.augment_shift: must be at most 2 pixels for digits"),
        (["--seeds", "1"], "seeds: must be an integer >= 2"),
    ]:
        proc = run_cli(workdir, "compare", "c.toml", *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (workdir / ".sweep").exists() or not list((workdir / ".sweep").rglob("runs.jsonl"))
