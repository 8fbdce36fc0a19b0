"""Two sweeps of one folder ending at once: a parent-run update the other, still running,
sweep queued after this one's final drain is the other's to send, not missing from MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sweep.tracking.tracker import ParentSpec, Tracker

# The other sweep's end, as finish() and Tracker.stop() queue it; it then waits (still running).
OTHER_SWEEP = """
import sys
from sweep.tracking.tracker import ParentSpec, Tracker
t = Tracker(sys.argv[1], "exp", sys.argv[2], [ParentSpec("study", "exp")])
t.log_parent("study", tags={"best_trial": 3})
print("queued", flush=True)
sys.stdin.readline()
"""


def test_a_parent_update_queued_by_another_live_sweep_is_not_reported_missing(tmp_path: Path) -> None:
    uri, spool_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "spool"
    mine = Tracker(uri, "exp", spool_dir, [ParentSpec("study", "exp")], poll_seconds=0.05)
    mine.start()
    assert mine.wait_ready(60)
    mine.log_parent("study", tags={"best_trial": 3})
    assert mine.stop(parent_status="FINISHED").empty  # its own update and end were sent
    # The other sweep queues its update just after this one's final drain (the race: 1 time in 2).
    other = subprocess.Popen([sys.executable, "-c", OTHER_SWEEP, uri, str(spool_dir)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "queued\n"
        assert mine.backlog().parents == 1  # it is in the folder, unsent ...
        # ... and stop()'s count (what `NOT ALL IN MLFLOW` says; its drain is over, so it returns at
        # once) leaves it to its live owner.
        assert mine.stop().empty
    finally:
        other.communicate("\n", timeout=60)
    # Its owner gone without sending it: nobody else will, so it counts (for `sweep sync`).
    assert mine.stop().parents == 1
