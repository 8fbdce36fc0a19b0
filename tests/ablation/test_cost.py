"""`sweep ablate`'s cost estimate (sweep.ablation.cost): its arithmetic, that it is printed before the first
cell, and its --yes gate. Its accuracy against a real grid is a benchmark: bench/cost_estimate.py."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from sweep.ablation.cost import Measured, cell_seconds, describe, estimate_cost
from sweep.ablation.grid import Cell
from sweep.ablation.runner import study_timing
from sweep.config.sweep_file import TrainParams, load_config
from sweep_helpers import SWEEP, mlflow_runs, run_cli, sweep_env, write_config

SPACE = """
keep_prob = {low = 0.3, high = 1.0, step = 0.05}
depth = 2
width = 512
learning_rate = {low = 1e-3, high = 3e-3, log = true}
normalization = "none"
weight_scale = 0.05
batch_size = 50
epochs = 10
lr_decay = 1.0
"""
GRID = ["--sizes", "500,1000", "--seeds", "2", "--keep-probs", "1,0.5", "--jobs", "2"]
HUGE = ["--sizes", "1000", "--seeds", "30", "--epochs", "700", "--jobs", "2"]  # hours of wall time, under the 200-cell limit


def _params(**kw: object) -> TrainParams:
    base: dict[str, object] = dict(keep_prob=1.0, hidden_dims=(100,), learning_rate=1e-3, normalization="none", epochs=4)
    return TrainParams(**{**base, **kw})  # type: ignore[arg-type]


def test_cells_scale_by_rows_net_epochs_and_threads_and_fill_the_first_free_worker() -> None:
    m = Measured(epoch_seconds=1.0, params=_params(), num_train=1000, num_val=200, input_dim=64, source="x", threads=2)
    # Same config and rows, 4 epochs, on the 2 threads it was measured with: 4 s.
    assert cell_seconds(_params(), 1000, m, threads=2) == pytest.approx(4.0)
    # 1 thread: twice as long; twice the epochs: twice again.
    assert cell_seconds(_params(epochs=8), 1000, m, threads=1) == pytest.approx(16.0)
    # 100 rows: (3*100 + 100 + 200) / (3*1000 + 1000 + 200) of the work per epoch.
    assert cell_seconds(_params(), 100, m, threads=2) == pytest.approx(4.0 * 600 / 4200)
    # Twice the hidden units: (64*200 + 200*10) / (64*100 + 100*10) of the work per row.
    assert cell_seconds(_params(hidden_dims=(200,)), 1000, m, threads=2) == pytest.approx(4.0 * 14800 / 7400)
    cells = [1000, 1000, 1000, 100]
    est = estimate_cost(cells, lambda n: (_params(), n), m, workers=2, threads=2)
    small = 4.0 * 600 / 4200
    # Worker A: 4 then 4; worker B: 4 then the small one -> the wall time is 8 s.
    assert est.wall_seconds == pytest.approx(8.0) and est.cpu_seconds == pytest.approx((12 + small) * 2)
    assert est.cell_seconds == pytest.approx((4.0, 4.0, 4.0, small))


def test_the_estimate_is_printed_before_the_first_cell_from_the_sweeps_measured_timing(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "s.toml", SPACE, sweep='pruner = "none"')
    run_cli(tmp_path, "run", str(cfg_path), "--jobs", "2", "--trials", "4")
    cfg = load_config(cfg_path, {"sizes": "500,1000", "seeds": 2, "keep_probs": "1,0.5", "jobs": 2})
    measured = study_timing(cfg, tmp_path)
    assert measured is not None and measured.threads == 1 and measured.num_train == 1197, measured
    params = cfg.space.params_from_trial(_best_params(tmp_path))
    cells = [Cell(n, k, s) for n in (500, 1000) for s in range(2) for k in (1.0, 0.5)]
    est = estimate_cost(cells, lambda c: (replace(params, keep_prob=c.keep_prob), c.size), measured, workers=2)

    out = run_cli(tmp_path, "ablate", str(cfg_path), *GRID).stdout
    print(out)
    assert describe(est) in out  # printed before the first cell
    assert out.index("estimated ") < out.index("[  1/8]")
    _, _parents, children = mlflow_runs(tmp_path)
    cells_runs = [r for r in children if r.data.tags.get("sweep.kind") == "cell"]
    assert len(cells_runs) == 8 and {r.info.status for r in cells_runs} == {"FINISHED"}
    # How close the estimate comes to the wall time depends on the machine's load:
    # bench/cost_estimate.py measures it (docs/benchmarks.md), no timing assert here.


def _best_params(workdir: Path) -> dict[str, object]:
    from sweep_helpers import load_study

    return load_study(workdir).best_trial.params


def _ablate(workdir: Path, *args: str, stdin: int | None = subprocess.DEVNULL, text_in: bytes = b"") -> tuple[int, str, str]:
    proc = subprocess.Popen([*SWEEP, "ablate", *args], cwd=workdir, env=sweep_env(workdir), stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def test_a_grid_over_ten_minutes_needs_yes_or_a_yes_on_a_terminal(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "s.toml", SPACE, sweep='pruner = "none"')
    run_cli(tmp_path, "run", str(cfg_path), "--jobs", "2", "--trials", "2", "--epochs", "2")

    code, out, err = _ablate(tmp_path, str(cfg_path), *HUGE)  # stdin is not a terminal
    assert code == 2, (out, err)
    [line] = err.strip().splitlines()
    assert line.startswith("sweep ablate: error: the grid is estimated at ") and \
        line.endswith("wall, over 0:10:00; pass --yes to start it without a terminal (nothing was trained)"), line
    assert "estimated " in out and "150 cell(s)" in out
    _, parents, children = mlflow_runs(tmp_path)
    assert not [k for k in parents if k.startswith("ablation:")]  # not even a parent run
    assert not [r for r in children if r.data.tags.get("sweep.kind") == "cell"]

    # On a terminal it asks; anything but y/yes starts nothing.
    master, slave = os.openpty()
    try:
        os.write(master, b"n\n")
        code, out, err = _ablate(tmp_path, str(cfg_path), *HUGE, stdin=slave)
    finally:
        os.close(master)
        os.close(slave)
    assert code == 2 and "Start it? [y/N]" in out, (out, err)
    assert "not confirmed, nothing was trained" in err
    _, parents, _ = mlflow_runs(tmp_path)
    assert not [k for k in parents if k.startswith("ablation:")]
