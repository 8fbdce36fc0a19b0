"""Log lines of the libraries a sweep uses print masked, never as a logging error (sweep.redact).

Optuna's own handler formats with colorlog (`%(log_color)s`); the masking wraps it. Run in a
fresh interpreter: logging's handlers are process-wide.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("colorlog")  # installed with Optuna here: the case that broke

SCRIPT = """
import optuna, colorlog
from sweep.redact import install_log_masking
[handler] = optuna.logging._get_library_root_logger().handlers
assert isinstance(handler.formatter, colorlog.ColoredFormatter), handler.formatter
install_log_masking()
optuna.logging.get_logger("optuna.storages").warning(
    "Forcibly releasing the lock file of postgresql://u:p@ss@db/optuna")
"""


def test_optuna_log_lines_print_masked_without_a_logging_error() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Logging error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if "Forcibly" in line]
    assert "Forcibly releasing the lock file of postgresql://u:***@db/optuna" in line, line
    assert "p@ss" not in proc.stderr and "ss@db" not in proc.stderr
