"""Helpers for the sweep integration tests: run the real `sweep` CLI, read back Optuna and MLflow."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

SWEEP = [sys.executable, "-m", "sweep.cli"]


def sweep_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Each test gets its own array cache, so tests don't depend on each other's state.
    env["SWEEP_CACHE_DIR"] = str(tmp / "cache")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_cli(workdir: Path, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*SWEEP, *args], cwd=workdir, env=sweep_env(workdir), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sweep {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dead_pid() -> int:
    """The pid of a process that has exited (a worker killed without a trace, for liveness checks)."""
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(exited.stdout)


def load_study(workdir: Path, name: str = "dropout-digits") -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(workdir / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def mlflow_runs(
    workdir: Path | None, experiment: str = "dropout-digits", *, tracking_uri: str | None = None
) -> tuple[Any, dict[str, Any], list[Any]]:
    """(client, parent runs by key, child runs) of one experiment.

    Read from the workdir's SQLite store, or from `tracking_uri` (a server) when given.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = {r.data.tags["sweep.parent_key"]: r for r in runs if "sweep.parent_key" in r.data.tags}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def write_config(path: Path, space: str, sweep: str = "") -> Path:
    path.write_text(f"[sweep]\ndataset = \"digits\"\n{sweep}\n[space]\n{space}\n")
    return path


# A small, fixed-cost space: every trial trains a similar net, so timing-based
# tests (killing a worker mid-trial) are predictable.
SLOW_SPACE = """
keep_prob = {low = 0.2, high = 1.0, step = 0.05}
depth = 2
width = 512
learning_rate = {low = 1e-3, high = 3e-3, log = true}
normalization = "batchnorm"
weight_scale = 0.05
batch_size = 50
epochs = 12
lr_decay = 1.0
"""


def wait_for(predicate: Any, timeout: float = 120) -> None:
    """Poll `predicate` every 50 ms until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


def running_worker(spool_dir: Path, timeout: float = 120) -> tuple[int, int]:
    """(trial number, pid) of a trial that has reported an epoch and is still going."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(spool_dir.glob("trial-*.jsonl")):
            events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kinds = [e["event"] for e in events]
            if "epoch" in kinds and "end" not in kinds:
                return int(path.stem.split("-")[1]), events[0]["pid"]
        time.sleep(0.05)
    raise AssertionError("no trial got going in time")


def run_cli_interrupted(
    workdir: Path, args: list[str], study: str, interrupt: Any, timeout: float = 300
) -> tuple[int, int, str]:
    """Run `sweep ARGS`, call interrupt(proc, worker pid) once a trial is mid-training.

    Returns (exit code, number of the trial that was running, combined output).
    """
    proc = subprocess.Popen([*SWEEP, *args], cwd=workdir, env=sweep_env(workdir),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        number, pid = running_worker(workdir / ".sweep" / study / "spool")
        interrupt(proc, pid)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, number, out


def trial_context(cfg: Any, state_dir: Path, *, target: bool = False) -> Any:
    """The TrialContext run_sweep hands its workers, with the sweep's files under `state_dir`;
    `target`: with the study's --trials target (workers then skip tasks once it is reached)."""
    from sweep.search.objective import TrialContext

    return TrialContext(
        study_name=cfg.study_name, storage_url=cfg.storage, journal_path=state_dir / "optuna.journal",
        seed=cfg.seed, space=cfg.space, spool_dir=state_dir / "spool", weights_dir=state_dir / "weights",
        data=cfg.data, pruner=cfg.pruner,
        max_epochs=cfg.space.max_epochs, target_trials=cfg.trials if target else None,
    )


@contextlib.contextmanager
def on_dask_workers(client: Any, cache_dir: Path, cwd: Path | None = None) -> Iterator[None]:
    """Give the (session-wide) cluster's workers this test's array cache, and optionally
    another working folder, restoring both afterwards."""
    before = client.run(lambda: (os.getcwd(), os.environ.get("SWEEP_CACHE_DIR")))

    def enter(cache: str, folder: str | None) -> None:
        os.environ["SWEEP_CACHE_DIR"] = cache
        if folder:
            os.chdir(folder)

    def leave(folder: str, cache: str | None) -> None:
        os.chdir(folder)
        if cache is None:
            os.environ.pop("SWEEP_CACHE_DIR", None)
        else:
            os.environ["SWEEP_CACHE_DIR"] = cache

    client.run(enter, str(cache_dir), str(cwd) if cwd else None)
    try:
        yield
    finally:
        for address, (folder, cache) in before.items():
            client.run(leave, folder, cache, workers=[address])
