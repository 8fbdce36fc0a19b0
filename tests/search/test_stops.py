"""Stops that say what happened: a signal after `sweep run`'s last trial, and one during `sweep report`
(which swaps its new report and figures in whole, or leaves the previous ones).

Real parts: the `sweep` CLI in a subprocess, loky workers, the journal, a real `mlflow
server` SIGKILLed mid-sweep (as in test_faults) so the sweep's end waits for it; the
signal comes during that wait, after the last trial.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sweep_helpers import SWEEP, mlflow_runs, run_cli, sweep_env
from test_faults import FAST, STUDY, Sweep, _sigkill, _wait_for_created_run


@pytest.mark.faults
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_after_the_last_trial_says_what_mlflow_lacks_and_sweep_sync_sends_it(
    mlflow_server_factory: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    server = mlflow_server_factory(f"sqlite:///{tmp_path / 'server.db'}")
    sweep = Sweep(tmp_path, ["run", *FAST, "--tracking-uri", server.url], env={"SWEEP_TRACKING_WAIT": "300"})
    spool = tmp_path / ".sweep" / STUDY / "spool"
    _wait_for_created_run(spool)
    _sigkill(server)  # the other runs wait in the spool folder
    deadline = time.monotonic() + 300
    while sweep.when("waiting up to 300 s for MLflow") is None:  # every trial has ended
        assert sweep.proc.poll() is None and time.monotonic() < deadline, sweep.output
        time.sleep(0.1)
    sweep.proc.send_signal(sig)
    code, out = sweep.wait(timeout=60)
    print(out)
    name = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C (SIGINT)"
    assert code == 130, out
    assert "Traceback" not in out
    assert f"stopped by {name} after the last trial, while the sweep was ending" in out, out
    assert re.search(r"NOT ALL IN MLFLOW: [1-6] run\(s\) .*are not at http://", out), out
    assert f"they are kept in {spool}" in out
    assert f"sweep sync --study {STUDY} --tracking-uri {server.url}\n" in out

    # What it says to run sends everything; the parent run ends as the sweep recorded (FINISHED).
    server.start()
    synced = run_cli(tmp_path, "sync", "--study", STUDY, "--tracking-uri", server.url)
    assert "completed" in synced.stdout, synced.stdout
    _, parents, children = mlflow_runs(tmp_path, tracking_uri=server.url)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == list(range(6))
    assert {r.info.status for r in children} == {"FINISHED"}
    assert parents["study"].info.status == "FINISHED"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_a_report_stopped_midway_keeps_the_previous_report_and_figures(tmp_path: Path) -> None:
    run_cli(tmp_path, "run", "--trials", "3", "--epochs", "2", "--jobs", "1")
    run_cli(tmp_path, "report")
    out_dir = tmp_path / "reports" / STUDY
    before = _snapshot(out_dir)
    assert "report.md" in before and any(name.endswith(".png") for name in before), before.keys()
    run_cli(tmp_path, "run", "--trials", "5", "--epochs", "2", "--jobs", "1")  # new trials: new figures

    proc = subprocess.Popen([*SWEEP, "report"], cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:  # its first new figure, wherever it writes it
            if any(p.stat().st_mtime_ns > (out_dir / "report.md").stat().st_mtime_ns
                   for p in out_dir.rglob("*.png")):
                os.kill(proc.pid, signal.SIGSTOP)  # held there while the SIGTERM is queued
                os.kill(proc.pid, signal.SIGTERM)
                os.kill(proc.pid, signal.SIGCONT)
                break
            time.sleep(0.005)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    print(out, err)
    assert proc.returncode == 130, (out, err)
    [line] = err.strip().splitlines()  # one line, no traceback
    assert line == (f"sweep report: stopped by SIGTERM before the new report was complete; {out_dir} keeps the "
                    "previous report and figures as they were"), line
    assert _snapshot(out_dir) == before  # nothing new beside the old text, no build folder left

    run_cli(tmp_path, "report")  # the same command then replaces both
    text = (out_dir / "report.md").read_text()
    assert "5 trials" in text, text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all((out_dir / f).is_file() for f in figures), figures
    assert not list(out_dir.glob(".report-build-*"))
