"""Stops that say what happened: a signal after `sweep run`'s last trial, and one during `sweep report`.

Real parts: the `sweep` CLI in a subprocess, loky workers, the journal, a real `mlflow
server` SIGKILLed mid-sweep (as in test_faults) so the sweep's end waits for it; the
signal comes during that wait, after the last trial.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from sweep_helpers import mlflow_runs, run_cli
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
