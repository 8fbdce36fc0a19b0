"""Resource bounds: never more workers than tasks; --oversubscribe lets --jobs exceed the cores."""

from __future__ import annotations

from pathlib import Path

from sweep_helpers import run_cli

from sweep.config import available_cores


def test_no_more_workers_than_trials_and_oversubscribe_allows_more_than_the_cores(tmp_path: Path) -> None:
    jobs = available_cores() + 1
    refused = run_cli(tmp_path, "run", "--trials", "1", "--epochs", "1", "--jobs", str(jobs), check=False)
    assert refused.returncode == 2 and "--oversubscribe" in refused.stderr, refused.stderr
    proc = run_cli(tmp_path, "run", "--trials", "1", "--epochs", "1", "--jobs", str(jobs), "--oversubscribe",
                   "--pruner", "none")
    # One trial to run: one worker process, not `jobs` of them (each an interpreter and a copy of the data).
    assert "running 1 more on 1 worker(s)" in proc.stdout, proc.stdout
