"""The public Python API: a digits sweep, its ablation and its report in-process (no subprocess),
the returned tables checked against what Optuna and MLflow hold."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import pytest

import sweep
from sweep_helpers import load_study, mlflow_runs, write_config

TINY_SPACE = """
keep_prob = {low = 0.5, high = 1.0, step = 0.25}
depth = 1
width = 16
learning_rate = 3e-3
normalization = "none"
batch_size = 50
epochs = 3
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_import_sweep_loads_nothing_heavy_and_names_the_api() -> None:
    import subprocess
    import sys

    code = ("import sys, sweep; heavy = [m for m in ('optuna', 'mlflow', 'pandas', 'numpy') if m in sys.modules];"
            "print(heavy); print(sorted(sweep.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]", f"import sweep imported {out[0]}"
    for name in ("load_config", "run", "ablate", "report", "status", "load_study", "ConfigError"):
        assert name in out[1]
        assert getattr(sweep, name).__doc__, f"sweep.{name} has no docstring"


def test_bad_settings_raise_the_clis_one_line_config_error(in_tmp: Path) -> None:
    with pytest.raises(sweep.ConfigError, match=r"trials.*>= 1") as err:
        sweep.load_config(trials=0)
    assert "\n" not in str(err.value)
    with pytest.raises(sweep.ConfigError, match="study"):
        sweep.run(study="../escape", trials=1)
    assert not (in_tmp / "optuna.journal").exists() and not (in_tmp / ".sweep").exists()


def test_sweep_ablation_and_report_through_the_api(in_tmp: Path) -> None:
    cfg = sweep.load_config(write_config(in_tmp / "tiny.toml", TINY_SPACE, "trials = 4\nseed = 3\njobs = 1\n"))
    log = io.StringIO()

    result = sweep.run(cfg, out=log, progress=False)
    assert result.exit_code == 0 and result.counted == 4 and not result.interrupted and result.all_in_mlflow
    assert "[  4/4]" in log.getvalue()  # the terminal's progress lines, written to `out`
    study = load_study(in_tmp)
    best = study.best_trial
    assert (result.best_trial, result.best_val_acc, result.best_params) == (best.number, best.value, best.params)
    assert 0 < result.test_acc <= 1
    trials = result.trials.set_index("number")
    assert sorted(trials.index) == [t.number for t in study.trials]
    for t in study.trials:
        assert trials.loc[t.number, "state"] == t.state.name
        assert math.isclose(trials.loc[t.number, "params_keep_prob"], t.params["keep_prob"])
    assert "best trial" in repr(result) and "**Sweep" in result._repr_markdown_()

    ab = sweep.ablate(cfg, keep_probs=[1.0, 0.5], sizes=[300], seeds=3, out=log, progress=False)
    assert ab.exit_code == 0 and (ab.cells_done, ab.cells_total) == (6, 6)
    _, _parents, children = mlflow_runs(in_tmp)
    cell_runs = [r for r in children if r.data.tags.get("mlflow.parentRunId") == ab.parent_run_id]
    assert len(cell_runs) == len(ab.runs) == 6
    by_cell = {(int(r.data.tags["ablation.keep_prob"] == "0.5"), int(r.data.tags["ablation.seed"])): r
               for r in cell_runs}
    for row in ab.runs.itertuples():
        run = by_cell[(int(row.keep_prob == 0.5), row.seed)]
        assert math.isclose(row.best_val_acc, float(run.data.tags["summary/best_val_acc"]), abs_tol=1e-4)
    # The paired differences: recomputed by hand from the per-run table.
    comp = ab.comparisons.query("metric == 'best_val_acc'").iloc[0]
    runs = ab.runs.set_index(["keep_prob", "seed"])["best_val_acc"]
    diffs = np.array([runs[(0.5, k)] - runs[(1.0, k)] for k in range(3)])
    assert comp["n"] == 3 and math.isclose(comp["mean_diff"], diffs.mean(), abs_tol=1e-12)
    assert comp["low"] < comp["mean_diff"] < comp["high"]
    cell = ab.cells.query("metric == 'best_val_acc' and keep_prob == 1.0").iloc[0]
    assert math.isclose(cell["mean"], np.mean([runs[(1.0, k)] for k in range(3)]), abs_tol=1e-12)
    assert "In short" in ab.verdict and "Ablation" in ab._repr_markdown_()

    rep = sweep.report(cfg, out=log)
    assert rep.path == (in_tmp / "reports" / "dropout-digits" / "report.md").resolve() and rep.path.exists()
    assert rep.figures and all(f.exists() and f.suffix == ".png" for f in rep.figures)
    assert "In short" in rep.verdict and rep.verdict in rep._repr_markdown_()

    statuses = sweep.status(workdir=in_tmp)
    assert [(s.name, s.counted) for s in statuses] == [("dropout-digits", 4)]

    loaded = sweep.load_study(cfg)
    net = loaded.best_model()
    data = sweep.data.load_dataset("digits", num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed)
    acc = float(np.mean(np.argmax(net.loss(data["X_test"]), axis=1) == data["y_test"]))
    assert math.isclose(acc, result.test_acc, abs_tol=1e-9), "the best model is not the one the sweep tested"


def test_a_notebook_progress_bar_counts_the_trials(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = sweep.load_config(write_config(in_tmp / "tiny.toml", TINY_SPACE, "trials = 2\njobs = 1\n"))
    started = time.monotonic()
    result = sweep.run(cfg, out=io.StringIO(), progress=True, tables=False)
    assert result.counted == 2 and time.monotonic() - started < 600
    assert "2/2" in capsys.readouterr().err  # tqdm's bar, on stderr in a terminal (a widget in Jupyter)
