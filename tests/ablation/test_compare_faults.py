"""`sweep compare` killed with SIGKILL mid-way, then the same command: it continues, each run once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.sweep_helpers import SWEEP, mlflow_runs, run_cli, sweep_env

CONFIG = """
[sweep]
dataset = "digits"
jobs = 1
[ablation.params]
keep_prob = 1.0
hidden_dims = [128]
learning_rate = 1e-3
normalization = "none"
epochs = 10
"""
ARGS = ["compare", "c.toml", "--arms", "none,l2,dropout", "--fix", "l2:reg=1e-3", "--fix", "dropout:keep_prob=0.6",
        "--seeds", "6"]


@pytest.mark.faults
def test_compare_killed_mid_retraining_continues_and_trains_each_run_once(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONFIG)
    proc = subprocess.Popen([*SWEEP, *ARGS], cwd=tmp_path, env=sweep_env(tmp_path), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        logs: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list((tmp_path / ".sweep").rglob("runs.jsonl")) if (tmp_path / ".sweep").exists() else []
            if logs and logs[0].read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"ended before it could be killed:\n{proc.communicate()[0]}"
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers: the group this test started
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = logs[0]
    before = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert 2 <= len(before) < 18
    with open(log, "a") as fh:  # what a kill in the middle of a write leaves
        fh.write('{"arm": "none", "seed": 5, "test_')
    again = run_cli(tmp_path, *ARGS)
    assert f"re-training {18 - len(before)} of 18 runs (arm x seed; {len(before)} done before)" in again.stdout
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    keys = [(r["arm"], r["seed"]) for r in records]
    assert sorted(keys) == sorted((a, k) for a in ("none", "l2", "dropout") for k in range(6))  # each run once
    assert records[: len(before)] == before  # what the killed command recorded is kept as it was
    assert "report" in again.stdout
    # MLflow: one run per (arm, seed) under the comparison's parent, none left RUNNING (a run the kill
    # cut off continued in its own spool file, so its MLflow run was reused and ended).
    _, parents, children = mlflow_runs(tmp_path)
    parent = next(p for key, p in parents.items() if key.startswith("compare:"))
    mine = [c for c in children if c.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.info.run_name for c in mine) == sorted(f"{a}-s{k}" for a in ("none", "l2", "dropout")
                                                           for k in range(6))
    assert {c.info.status for c in mine} == {"FINISHED"} and parent.info.status == "FINISHED"
