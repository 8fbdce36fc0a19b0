"""The `sweep` command line: data download, ui, and the errors a user meets first."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from services import free_port
from sweep_helpers import SWEEP, run_cli, sweep_env
from test_download import build_archive, left_in, serve, server  # noqa: F401  (fixture)


def test_data_download_refuses_an_archive_with_the_wrong_checksum(server, tmp_path: Path) -> None:  # noqa: F811
    archive, _ = build_archive()  # a valid layout, but not the official archive's MD5
    url = serve(server, archive)
    proc = run_cli(tmp_path, "data", "download", "cifar10", "--data-dir", str(tmp_path / "data"), "--url", url,
                   check=False)
    assert proc.returncode == 2
    assert "checksum" in proc.stderr.lower() or "md5" in proc.stderr.lower()
    assert left_in(tmp_path / "data") == []


def test_ui_serves_mlflow_and_prints_the_runs_table_address(tmp_path: Path) -> None:
    run_cli(tmp_path, "run", "--trials", "1", "--epochs", "1", "--jobs", "1")
    port = free_port()
    proc = subprocess.Popen([*SWEEP, "ui", "--study", "dropout-digits", "--port", str(port)], cwd=tmp_path,
                            env=sweep_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the server's workers go with it
    try:
        first = proc.stdout.readline() + proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=" in first
        parent_line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/#/experiments/1/runs/" in parent_line, parent_line
        assert parent_line.rstrip().endswith("?workflowType=machine_learning"), parent_line
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "mlflow ui did not come up"
                time.sleep(0.5)
        # The UI reads this folder's store: the study's experiment is there.
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=dropout-digits")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert b"dropout-digits" in resp.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C does to the terminal's foreground group
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(1)
        assert subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True).stdout == b"", "server left behind"


def test_ablate_without_a_sweep_or_params_says_what_to_do(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "ablate", "--seeds", "2", check=False)
    assert proc.returncode == 2
    assert "sweep run" in proc.stderr and "ablation.params" in proc.stderr


def test_report_with_nothing_recorded_names_the_study(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "report", "--study", "nothing-here", check=False)
    assert proc.returncode == 2
    assert "nothing-here" in proc.stderr


def test_bad_flag_values_are_refused_before_anything_runs(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "run", "--trials", "0", check=False)
    assert proc.returncode == 2 and "trials" in proc.stderr
    proc = run_cli(tmp_path, "ablate", "--keep-probs", "1,1.5", check=False)
    assert proc.returncode == 2 and "keep" in proc.stderr
    proc = run_cli(tmp_path, "ui", "--workers", "0", check=False)
    assert proc.returncode == 2 and "--workers" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()
