"""`sweep ablate --dask-scheduler ADDR`: an ablation's cells trained on a Dask cluster's workers.

The cluster is the session's LocalCluster (2 worker processes x 1 thread,
tests/conftest.py); the grid is tiny (digits, 4 cells of 2 epochs on 100 rows)
and trains a cs231n-style fixture net (`--model`), not this project's class.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sweep.tracking import spool
from sweep_helpers import SWEEP, mlflow_runs, on_dask_workers, sweep_env

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NET = f"{FIXTURES / 'cs231n_net.py'}:FullyConnectedNet"
GRID = """[sweep]
dataset = "digits"
num_train = 200
jobs = 2
[ablation]
keep_probs = [1.0, 0.5]
sizes = [100]
seeds = 2
[ablation.params]
hidden_dims = [24]
learning_rate = 3e-3
normalization = "none"
epochs = 2
"""


def _ablate_and_report(workdir: Path, monkeypatch: pytest.MonkeyPatch, **where: Any) -> tuple[str, list[str]]:
    """The Python API's ablation and report of GRID with the fixture net: (its output, the report's headings)."""
    import sweep

    workdir.mkdir()
    (workdir / "grid.toml").write_text(GRID)
    monkeypatch.chdir(workdir)
    cfg = sweep.load_config(workdir / "grid.toml", model=NET)
    out = io.StringIO()
    result = sweep.ablate(cfg, workdir=workdir, out=out, progress=False, tables=False, **where)
    assert result.exit_code == 0 and result.cells_done == 4, out.getvalue()
    sweep.report(cfg, workdir=workdir, out=io.StringIO())
    report = next((workdir / "reports").glob("*/report.md")).read_text()
    return out.getvalue(), [line for line in report.splitlines() if line.startswith("#")]


def _cell_pids(workdir: Path) -> set[int]:
    """The pid each cell's spool file says trained it."""
    files = [p for d in (workdir / ".sweep" / "dropout-digits").glob("*/spool") for p in spool.spool_files(d)]
    assert len(files) == 4, files
    return {spool.read_state(p).start["pid"] for p in files}


def test_an_own_net_ablation_on_a_local_dask_cluster_is_the_loky_one_run_elsewhere(
    tmp_path: Path, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    on_loky, loky_headings = _ablate_and_report(tmp_path / "loky", monkeypatch)
    with on_dask_workers(dask_client, tmp_path / "cache"):
        on_dask, dask_headings = _ablate_and_report(tmp_path / "dask", monkeypatch,
                                                     dask_scheduler=dask_client.scheduler.address)

    assert "training 4 on 2 worker(s)" in on_loky, on_loky
    assert f"training 4 on the Dask cluster at {dask_client.scheduler.address} (at most 2 at a time)" in on_dask, on_dask
    # The cells ran in the cluster's worker processes: neither here nor in a loky worker.
    dask_pids = set(dask_client.run(os.getpid).values())
    assert _cell_pids(tmp_path / "dask") <= dask_pids
    assert not _cell_pids(tmp_path / "loky") & (dask_pids | {os.getpid()})
    # MLflow has every cell (the parent's tracker read what the workers wrote), of the student's net.
    _, parents, children = mlflow_runs(tmp_path / "dask")
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["sweep.model"] for r in [*children, *parents.values()]} == {NET}
    assert all(r.data.metrics.get("val_acc") is not None for r in children)
    # The report reads the same, section for section.
    assert dask_headings == loky_headings and any("Paired differences" in h for h in dask_headings)


def test_cells_a_worker_trained_on_another_disk_reach_the_parents_spool(
    tmp_path: Path, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dask worker on another machine writes a cell's spool file on its own disk: the
    result carries the events back and the parent writes them where its tracker reads."""
    from sweep.ablation.runner import plan_ablation, prepare_subsets, train_cells
    from sweep.ablation.workers import cell_workers
    from sweep.config.sweep_file import load_config

    parent, worker = tmp_path / "parent", tmp_path / "worker"
    parent.mkdir()
    worker.mkdir()
    (parent / "grid.toml").write_text(GRID)
    monkeypatch.chdir(parent)
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(parent / "grid.toml", {})
    plan = plan_ablation(cfg, None, parent, True, io.StringIO())
    # The same relative folder names a different place on each "machine".
    plan = replace(plan, spool_dir=plan.spool_dir.relative_to(parent))
    prepare_subsets(cfg, plan)
    todo = list(plan.cells)
    with on_dask_workers(dask_client, tmp_path / "cache", cwd=worker):
        ended = train_cells(cfg, plan, todo, cell_workers(cfg, len(todo), dask_client.scheduler.address),
                            io.StringIO(), None)

    assert ended.trained == 4 and not todo
    on_worker = list(spool.spool_files(worker / plan.spool_dir))
    assert len(on_worker) == 4 and len(list(spool.spool_files(parent / plan.spool_dir))) == 4
    for original in on_worker:
        copied = parent / plan.spool_dir / original.name
        assert copied.read_text() == original.read_text()
        events = spool.read_state(copied)
        assert events.end is not None and [e["step"] for e in events.epochs] == [1, 2]


@pytest.mark.parametrize("command", [["ablate", "grid.toml"], ["run", "grid.toml", "--trials", "2"]])
def test_a_scheduler_that_does_not_answer_is_one_line_and_nothing_is_trained(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "grid.toml").write_text(GRID)
    # Dask's own setting of how long to try (the default 10 s would only slow the test down).
    proc = subprocess.run([*SWEEP, *command, "--dask-scheduler", "tcp://127.0.0.1:9"], cwd=tmp_path,
                          env={**sweep_env(tmp_path), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert re.match(rf"sweep {command[0]}: error: --dask-scheduler: no Dask scheduler answers at 'tcp://127\.0\.0\.1:9' "
                    r"\(Timed out trying to connect .* after 1 s\); start one", proc.stderr), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]  # no study, no MLflow store, no .sweep


def test_until_decided_adds_its_rounds_of_seeds_on_the_dask_cluster(
    tmp_path: Path, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sweep

    (tmp_path / "grid.toml").write_text(GRID)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    out = io.StringIO()
    with on_dask_workers(dask_client, tmp_path / "cache"):
        result = sweep.ablate(tmp_path / "grid.toml", workdir=tmp_path, out=out, progress=False, tables=False,
                              dask_scheduler=dask_client.scheduler.address, until="decided", max_seeds=4)
    text = out.getvalue()
    assert result.exit_code == 0 and result.cells_done == 8, text  # a first look at 3 seeds, then a 4th: capped
    assert f"first round on the Dask cluster at {dask_client.scheduler.address}" in text, text
    assert "round 2: training 2 cell(s)" in text, text
    files = list(spool.spool_files(next((tmp_path / ".sweep" / "dropout-digits").glob("*/spool"))))
    assert len(files) == 8 and {spool.read_state(p).start["pid"] for p in files} <= set(dask_client.run(os.getpid).values())


@pytest.mark.faults
def test_a_dask_worker_killed_mid_cell_leaves_one_finished_run_per_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the Dask worker training a cell: Dask re-runs the task on a restarted worker,
    which continues the cell's spool file under its claim; MLflow keeps one run per cell."""
    import json
    import logging
    import signal
    import time

    from distributed import LocalCluster

    from sweep.ablation.claims import attempt_files

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))  # the cluster's workers inherit it
    # Cells of a few seconds each, so the kill lands mid-cell even on a quiet machine:
    # with 40 epochs of a 24-unit net all four cells ended between two looks at the spool in one CI run.
    (tmp_path / "grid.toml").write_text(GRID.replace("epochs = 2", "epochs = 150").replace("sizes = [100]", "sizes = [300]")
                                        .replace("hidden_dims = [24]", "hidden_dims = [512, 512]"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster:
        proc = subprocess.Popen([*SWEEP, "ablate", "grid.toml", "--dask-scheduler", cluster.scheduler_address],
                                cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            killed, deadline = None, time.monotonic() + 180
            while killed is None and time.monotonic() < deadline and proc.poll() is None:
                for path in tmp_path.glob(".sweep/dropout-digits/*/spool/*.jsonl"):
                    events = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
                    if any(e["event"] == "epoch" for e in events) and not any(e["event"] == "end" for e in events):
                        os.kill(events[0]["pid"], signal.SIGKILL)
                        killed = path
                        break
                time.sleep(0.05)
            out = proc.communicate(timeout=300)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert killed is not None and proc.returncode == 0, out
    assert "4/4 cells done" in out, out
    # The re-run continued the killed attempt's file: one attempt, two starts, one end.
    assert attempt_files(killed.parent, killed.name.rsplit("-a", 1)[0]) == [killed]
    kinds = [json.loads(line)["event"] for line in killed.read_text().splitlines()]
    assert kinds.count("start") == 2 and kinds.count("end") == 1, kinds
    _, _, children = mlflow_runs(tmp_path)
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert len({r.info.run_name for r in children}) == 4
