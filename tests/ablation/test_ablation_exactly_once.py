"""`sweep ablate` trains every cell once and MLflow holds one run per cell: one worker, a SIGKILL
and the same command again, two processes on one grid, `sweep report` while it is unfinished."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from sweep_helpers import SWEEP, mlflow_runs, run_cli, sweep_env, wait_for

# Small and quick per cell; many cells, so a skipped one shows.
FAST_TOML = """
[sweep]
dataset = "digits"
study = "once"

[ablation]
keep_probs = [1.0, 0.5]
sizes = [60, 90]
seeds = 10

[ablation.params]
hidden_dims = [16]
learning_rate = 2e-3
normalization = "none"
weight_scale = 0.05
batch_size = 30
epochs = 1
lr_decay = 1.0
"""

# Cells that take a few seconds each, so a kill lands mid-training.
SLOW_TOML = """
[sweep]
dataset = "digits"
study = "once"

[ablation]
keep_probs = [1.0, 0.5]
sizes = [400, 800]
seeds = 3

[ablation.params]
hidden_dims = [512, 512]
learning_rate = 2e-3
normalization = "batchnorm"
weight_scale = 0.05
batch_size = 25
epochs = 6
lr_decay = 1.0
"""

WAIT_SECONDS = 180  # for a state of the ablation under a loaded 2-core machine


def cell_key(run) -> tuple[str, str, str]:
    t = run.data.tags
    return t["ablation.size"], t["ablation.keep_prob"], t["ablation.seed"]


def assert_one_finished_run_per_cell(workdir: Path, cells: int) -> None:
    _, parents, children = mlflow_runs(workdir, "once")
    per_cell = Counter(cell_key(r) for r in children)
    assert len(per_cell) == cells and set(per_cell.values()) == {1}, per_cell
    assert {r.info.status for r in children} == {"FINISHED"}
    [parent] = [p for k, p in parents.items() if k.startswith("ablation:")]
    assert parent.info.status == "FINISHED"


def test_one_worker_trains_every_cell(tmp_path: Path) -> None:
    """--jobs 1 (the default on a 1-core machine): the loop removed cells from the list joblib
    was still drawing tasks from, so every other cell was skipped in each round."""
    cfg = tmp_path / "a.toml"
    cfg.write_text(FAST_TOML)
    out = run_cli(tmp_path, "ablate", str(cfg), "--jobs", "1", "--yes").stdout
    assert "0/40 cells done, training 40" in out
    assert "[ 40/40]" in out, out
    assert_one_finished_run_per_cell(tmp_path, 40)


def spool_dir_of(workdir: Path) -> Path:
    [spool] = list((workdir / ".sweep" / "once").glob("ablation-*/spool"))
    return spool


def cells_mid_training(workdir: Path) -> int:
    """How many cells have reported an epoch and not ended (0 before the spool folder exists)."""
    found = list((workdir / ".sweep" / "once").glob("ablation-*/spool/*.jsonl"))
    n = 0
    for path in found:
        kinds = [json.loads(line)["event"] for line in path.read_text().splitlines() if line.endswith("}")]
        n += "epoch" in kinds and "end" not in kinds
    return n


@pytest.mark.faults
def test_ablation_sigkilled_then_the_same_command_leaves_one_run_per_cell(tmp_path: Path) -> None:
    """SIGKILL the whole process group mid-ablation (cells mid-training, some ended but never
    sent), then the same command: one MLflow run per cell, none RUNNING, nothing for `sweep sync`."""
    cfg = tmp_path / "a.toml"
    cfg.write_text(SLOW_TOML)
    args = [*SWEEP, "ablate", str(cfg), "--jobs", "2", "--yes"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # Past the first cells' ends, with two cells mid-training.
        wait_for(lambda: any((tmp_path / ".sweep" / "once").glob("ablation-*/spool/*.jsonl")), WAIT_SECONDS)
        spool = spool_dir_of(tmp_path)
        wait_for(lambda: sum('"event":"end"' in p.read_text() for p in spool.glob("*.jsonl")) >= 2
                 and cells_mid_training(tmp_path) >= 1, WAIT_SECONDS)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    # What the kill left: runs still RUNNING in MLflow, or never created.
    _, _, before = mlflow_runs(tmp_path, "once")
    assert len(before) < 12 or any(r.info.status == "RUNNING" for r in before)
    said = run_cli(tmp_path, "report", str(cfg)).stdout
    assert "ablation unfinished: " in said and " of 12 cells trained (its parent run is RUNNING" in said

    again = run_cli(tmp_path, "ablate", str(cfg), "--jobs", "2", "--yes").stdout
    assert "[ 12/12]" in again, again
    assert_one_finished_run_per_cell(tmp_path, 12)
    assert "nothing to do" in run_cli(tmp_path, "sync", "--study", "once").stdout
    assert "ablation unfinished" not in run_cli(tmp_path, "report", str(cfg)).stdout


def _stop_workers_mid_cell(workdir: Path, workers: set[int]) -> list[str]:
    """SIGSTOP the workers of the cells mid-training; the names of the cells held that way.

    A cell seen mid-training may end before its worker is stopped (a fast machine, or a
    loaded one that descheduled this test): then nothing is held, so the workers go on
    and the next cells are tried, until one is caught mid-training.
    """
    for _ in range(50):
        wait_for(lambda: cells_mid_training(workdir) >= 1, WAIT_SECONDS)
        for path in spool_dir_of(workdir).glob("*.jsonl"):
            if '"event":"end"' not in path.read_text():
                # A file its worker created a moment ago may not hold its start record yet.
                wait_for(lambda path=path: "\n" in path.read_text(), WAIT_SECONDS)
                pid = json.loads(path.read_text().splitlines()[0])["pid"]
                workers.add(pid)
                os.kill(pid, signal.SIGSTOP)
        held = [p.name for p in spool_dir_of(workdir).glob("*.jsonl") if '"event":"end"' not in p.read_text()]
        if held:
            return held
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        workers.clear()
    raise AssertionError("no cell was still training once its worker was stopped, in 50 tries")


def test_two_ablations_of_one_grid_at_once_train_each_cell_once(tmp_path: Path) -> None:
    """A second `sweep ablate` of the same grid while the first holds cells mid-training (its
    workers are stopped there with SIGSTOP, so the two surely meet): the second trains the other
    cells, waits for those instead of training them, and the first takes the second's results.
    Both exit 0 with nothing said missing; each cell is trained once, one MLflow run each."""
    cfg = tmp_path / "a.toml"
    # Cells of about a second each (a 512x512 net, 40 epochs): on a quiet machine 16-unit cells of
    # 15 epochs ended between two 50-ms looks, so none could be caught mid-training and held.
    cfg.write_text(FAST_TOML.replace("seeds = 10", "seeds = 4").replace("epochs = 1", "epochs = 40")
                   .replace("hidden_dims = [16]", "hidden_dims = [512, 512]"))
    args = [*SWEEP, "ablate", str(cfg), "--yes", "--jobs"]
    # Two loky workers (one job would train in the sweep process itself, whose tracker must go on).
    first = subprocess.Popen([*args, "2"], cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    second = None
    workers: set[int] = set()
    try:
        held = _stop_workers_mid_cell(tmp_path, workers)
        second = subprocess.Popen([*args, "1"], cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        waiting = threading.Event()

        def read() -> None:
            assert second is not None and second.stdout is not None
            for line in second.stdout:
                lines.append(line)
                if "waiting for" in line:
                    waiting.set()
            waiting.set()  # it ended without waiting

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        waiting.wait(300)
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        out1 = first.communicate(timeout=300)[0]
        second.wait(timeout=300)
        reader.join(30)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    out2 = "".join(lines)
    assert first.pid not in workers and held
    assert "cell(s) another `sweep ablate` of this grid is training (pid " in out2, out2
    for p, out in ((first, out1), (second, out2)):
        assert p.returncode == 0, out
        assert "NOT ALL IN MLFLOW" not in out
    assert "(trained by another process or an earlier run)" in out1 + out2
    assert_one_finished_run_per_cell(tmp_path, 16)
    # Every cell trained once: one attempt file each, with one start record.
    files = sorted(spool_dir_of(tmp_path).glob("*.jsonl"))
    assert len(files) == 16 and all(f.read_text().count('"event":"start"') == 1 for f in files)


def test_report_of_an_interrupted_ablation_says_it_is_unfinished(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    # Cells of about half a second (a 512x512 net, 20 epochs): 16-unit cells of 1 or 20 epochs took
    # 1-2 s for all 40 on the quiet CI machine, and the ablation ended before the SIGINT.
    cfg.write_text(FAST_TOML.replace("epochs = 1", "epochs = 20").replace("hidden_dims = [16]", "hidden_dims = [512, 512]"))
    proc = subprocess.Popen([*SWEEP, "ablate", str(cfg), "--jobs", "1", "--yes"], cwd=tmp_path,
                            env=sweep_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        wait_for(lambda: any((tmp_path / ".sweep" / "once").glob("ablation-*/spool/*-a0.jsonl"))
                 and sum('"event":"end"' in p.read_text() for p in spool_dir_of(tmp_path).glob("*.jsonl")) >= 2, WAIT_SECONDS)
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    _, _, children = mlflow_runs(tmp_path, "once")
    trained = len({cell_key(r) for r in children if r.data.tags.get("state") == "COMPLETE"})
    assert 2 <= trained < 40
    said = run_cli(tmp_path, "report", str(cfg)).stdout
    line = f"ablation unfinished: {trained} of 40 cells trained (its `sweep ablate` ended KILLED"
    assert line in said
    assert line in (tmp_path / "reports" / "once" / "report.md").read_text().replace("**", "")


_HOLD_CLAIM = """
import os, sys, time
from pathlib import Path
from sweep.ablation.claims import claim_cell
from sweep.tracking.spool import RunRecorder
with claim_cell(Path(sys.argv[1]), "cell-n60-k1-s0") as claim:
    with RunRecorder(claim.path) as rec:
        rec.start("cell-n60-k1-s0", "ablation:x", {}, {})
        rec.epoch(1, {"val_acc": 0.5})
    with open(claim.path, "a") as f:
        f.write('{"event": "epo')  # killed mid-write
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_cell_claim_excludes_a_live_process_and_passes_to_the_next_when_its_holder_is_killed(
        tmp_path: Path) -> None:
    from sweep.ablation.claims import claim_cell
    from sweep.tracking import spool

    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with claim_cell(tmp_path, "cell-n60-k1-s0") as busy:
            assert isinstance(busy, str) and f":{holder.pid}:" in busy
    finally:
        holder.kill()
        holder.wait()
    # Its writer is gone: the claim is free, and the attempt continues in the same file (one MLflow run).
    with claim_cell(tmp_path, "cell-n60-k1-s0") as claim:
        assert not isinstance(claim, str) and claim.settled is None
        assert claim.path == tmp_path / "cell-n60-k1-s0-a0.jsonl"
        assert claim.path.read_text().endswith("}\n")  # the half-written line is cut
        with spool.RunRecorder(claim.path) as rec:
            rec.start("cell-n60-k1-s0", "ablation:x", {}, {})
            rec.end("FINISHED", {spool.STATE_TAG: "COMPLETE"})
    with claim_cell(tmp_path, "cell-n60-k1-s0") as claim:
        assert not isinstance(claim, str) and claim.settled is not None and claim.path is None
    assert [p.name for p in tmp_path.glob("*.jsonl")] == ["cell-n60-k1-s0-a0.jsonl"]
