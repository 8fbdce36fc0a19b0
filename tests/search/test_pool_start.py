"""A signal while `sweep run` starts its loky pool stops it cleanly (sweep.search.stops.signals_deferred).

joblib/loky's pool start-up (executor, manager thread, resource tracker, worker
processes) is not safe against the exception a signal handler raises in the middle of
it: the pool was left half made and joblib's abort failed on it (RuntimeError 'cannot
join thread before it is started', BrokenPipeError from the resource tracker), and
workers cut before their start-up data printed EOFError tracebacks. Provoked for real:
the --timeout-kill alarm of the runner (`_arm_budget_kill`) fires at delays spread over
the pool's start, in one process that starts a new pool each time (the interrupt kills
the previous one), through the runner's own `_parallel_trials`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_helpers import sweep_env

SCRIPT = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from sweep.config.budget import Budget
from sweep.config.sweep_file import load_config
from sweep.data.datasets import load_dataset
from sweep.search.runner import _arm_budget_kill, _disarm_budget_kill, _parallel_trials
from sweep.search.study import make_storage, open_study
from sweep_helpers import trial_context

work = Path(sys.argv[1])
cfg = load_config(None, {"epochs": 1})
load_dataset(cfg.dataset, num_train=cfg.num_train, num_val=cfg.num_val, seed=cfg.seed)  # the cache, as the parent
open_study(cfg, make_storage(None, work / "optuna.journal"))
ctx = trial_context(cfg, work)
for step in range(int(sys.argv[3])):
    delay = 0.005 + 0.01 * step  # across the pool's start (tens of ms here, longer on a loaded machine)
    old = _arm_budget_kill(Budget.start(delay, kill=True))
    try:
        for res in _parallel_trials(ctx, 4, 2, 1, None):
            pass
        print(f"{delay:.3f} finished before the alarm", flush=True)
    except KeyboardInterrupt as exc:
        print(f"{delay:.3f} stopped cleanly ({type(exc).__name__})", flush=True)
    finally:
        _disarm_budget_kill(old)
"""


@pytest.mark.faults
def test_the_timeout_kill_alarm_during_the_pools_start_stops_cleanly(tmp_path: Path) -> None:
    steps = 30
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(Path(__file__).resolve().parents[1]), str(steps)],
                          cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True, text=True, timeout=600)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == steps and all("stopped cleanly (_BudgetOver)" in line or "finished" in line
                                       for line in lines), lines


# Injected into every Python process of the sweep through PYTHONPATH: the first loky
# resource tracker to start exits at once (as one did in CI: BrokenPipeError from its
# first message, a traceback, exit 1), later ones run as usual.
TRACKER_DIES_ONCE = r"""
import os, sys
if os.environ.get("TRACKER_PARENT_SLOW"):
    # The sweep process: descheduled right after it launched the tracker (as on a loaded
    # machine), so the tracker is gone before its first message is written.
    os.environ.pop("TRACKER_PARENT_SLOW")
    from joblib.externals.loky.backend import resource_tracker as _rt
    _launch = _rt.ResourceTracker._launch
    def _slow_launch(self):
        _launch(self)
        if not os.path.exists(os.environ["TRACKER_MARKER"] + ".seen"):
            open(os.environ["TRACKER_MARKER"] + ".seen", "w").close()
            os.waitpid(self._pid, 0)
    _rt.ResourceTracker._launch = _slow_launch
try:
    cmdline = open("/proc/self/cmdline", "rb").read()
except OSError:
    cmdline = b""
if b"resource_tracker import main" in cmdline:
    marker = os.environ["TRACKER_MARKER"]
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pass
    else:
        os._exit(1)
"""


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_a_resource_tracker_that_dies_as_the_pool_starts_is_replaced_and_the_sweep_completes(tmp_path: Path) -> None:
    from sweep_helpers import SWEEP

    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(TRACKER_DIES_ONCE)
    env = sweep_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(inject), env.get("PYTHONPATH", "")]))
    env["TRACKER_MARKER"] = str(tmp_path / "tracker-died")
    env["TRACKER_PARENT_SLOW"] = "1"
    proc = subprocess.run([*SWEEP, "run", "--trials", "2", "--epochs", "1", "--jobs", "2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert (tmp_path / "tracker-died").exists(), "the injected fault did not fire"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "loky's resource tracker died as the worker pool started; started a new one" in proc.stderr
    assert "[  2/2]" in proc.stdout
