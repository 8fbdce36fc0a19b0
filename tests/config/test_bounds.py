"""Resource bounds: never more workers than tasks; --oversubscribe lets --jobs exceed the cores."""

from __future__ import annotations

from pathlib import Path

from sweep.config.sweep_file import available_cores
from sweep_helpers import run_cli


def test_no_more_workers_than_trials_and_oversubscribe_allows_more_than_the_cores(tmp_path: Path) -> None:
    jobs = available_cores() + 1
    refused = run_cli(tmp_path, "run", "--trials", "1", "--epochs", "1", "--jobs", str(jobs), check=False)
    assert refused.returncode == 2 and "--oversubscribe" in refused.stderr, refused.stderr
    proc = run_cli(tmp_path, "run", "--trials", "1", "--epochs", "1", "--jobs", str(jobs), "--oversubscribe",
                   "--pruner", "none")
    # One trial to run: one worker process, not `jobs` of them (each an interpreter and a copy of the data).
    assert "running 1 more on 1 worker(s)" in proc.stdout, proc.stdout


def test_optunas_own_warnings_print_as_one_line_under_log_masking() -> None:
    """Optuna warns when it breaks the journal lock of a worker killed at Ctrl-C; under the
    masking formatter its colorlog format raised KeyError 'log_color' (a page of traceback)."""
    import subprocess
    import sys

    code = ("import logging, optuna\nfrom sweep.redact import install_log_masking\ninstall_log_masking()\n"
            "logging.getLogger('optuna.storages.journal._file').warning('Forcibly releasing the lock file.')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "Logging error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [proc.stderr.strip()]
    assert "Forcibly releasing the lock file." in proc.stderr
