"""`sweep ablate --until-decided` end to end on digits: seeds only where undecided, the cap, the report,
bad values, and a SIGKILL mid-round resumed by the same command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from sweep_helpers import SWEEP, mlflow_runs, run_cli, sweep_env, wait_for

# keep 0.3 costs a tiny net ~20 points (decided at the first look); keep 0.95 changes little (capped).
TWO_EFFECTS_TOML = """
[sweep]
dataset = "digits"
study = "until"

[ablation]
keep_probs = [1.0, 0.3, 0.95]
sizes = [200]
until = "decided"
max_seeds = 7

[ablation.params]
hidden_dims = [32]
learning_rate = 2e-3
normalization = "none"
weight_scale = 0.05
batch_size = 50
epochs = 3
lr_decay = 1.0
"""

# Cells of a few seconds each, so a kill lands mid-round.
SLOW_TOML = """
[sweep]
dataset = "digits"
study = "until"

[ablation]
keep_probs = [1.0, 0.5]
sizes = [400]
until = "decided"
max_seeds = 4

[ablation.params]
hidden_dims = [512, 512]
learning_rate = 2e-3
normalization = "batchnorm"
weight_scale = 0.05
batch_size = 25
epochs = 6
lr_decay = 1.0
"""


def cells_by_keep(workdir: Path) -> dict[str, list[int]]:
    """keep_prob -> the seeds of its finished cell runs in MLflow."""
    _, _, children = mlflow_runs(workdir, "until")
    assert {r.info.status for r in children} == {"FINISHED"}
    out: dict[str, list[int]] = {}
    for r in children:
        out.setdefault(r.data.tags["ablation.keep_prob"], []).append(int(r.data.tags["ablation.seed"]))
    return {k: sorted(v) for k, v in out.items()}


def test_seeds_go_only_to_the_undecided_comparison_until_the_cap(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(TWO_EFFECTS_TOML)
    out = run_cli(tmp_path, "ablate", str(cfg), "--jobs", "2", "--yes").stdout
    # m = 2 comparisons: each interval at 97.5 %, bounded from 4 seeds on.
    assert "2 comparison(s)" in out and "at 97.5 % (Bonferroni: 95 % over all 2)" in out and "first look at 4 seeds" in out
    assert "2 of 2 comparison(s) still open (0 decided, 0 precise, 0 capped); round 1: training 12 cell(s)" in out
    decided = re.search(r"size 200, keep 0\.3: decided after (\d+) seed\(s\): anytime 97\.5 % interval "
                        r"\[(\S+), (\S+)\] lies below 0", out)
    assert decided, out
    n_decided = int(decided.group(1))
    assert 4 <= n_decided < 7 and float(decided.group(3)) < 0
    assert "size 200, keep 0.95: capped after 7 seed(s)" in out and "contains 0 at the cap of 7 seeds" in out
    assert "0 of 2 comparison(s) still open (1 decided, 0 precise, 1 capped)" in out
    # Seeds went only where undecided: keep 0.3 stopped, keep 0.95 and its baseline ran on to the cap.
    seeds = cells_by_keep(tmp_path)
    assert seeds == {"1.0": list(range(7)), "0.95": list(range(7)), "0.3": list(range(n_decided))}, seeds
    total = 14 + n_decided
    assert f"{total} cell(s) trained" in out and f"{total}/{total} cells done" in out

    report = run_cli(tmp_path, "report", str(cfg))
    assert "ablation unfinished" not in report.stdout
    assert ("Until decided (anytime-valid intervals, Bonferroni over 2; at most 7 seeds): size 200, keep 0.3: hurts "
            f"(decided after {n_decided} seeds") in report.stdout
    assert "keep 0.95: no effect detected (capped after 7 seeds" in report.stdout
    text = (tmp_path / "reports" / "until" / "report.md").read_text()
    assert "### Until decided: seeds added while undecided" in text
    assert "1 decided, 0 precise enough, 1 capped of 2" in text and f"{total} finished cells in all, against 21" in text
    row_03 = next(line for line in text.splitlines() if line.startswith("| size 200, keep 0.3 |"))
    assert f"| {n_decided} |" in row_03 and "decided: the anytime interval lies below 0: dropout hurts" in row_03
    row_095 = next(line for line in text.splitlines() if line.startswith("| size 200, keep 0.95 |"))
    assert "| 7 |" in row_095 and "capped: 7 seeds (the cap) and the anytime interval still contains 0" in row_095
    assert text.index("### Until decided") < text.index("### Verdict")  # read before the classical verdict

    # The same command again (here through the Python API): nothing left, the same decisions.
    import io

    import sweep

    said = io.StringIO()
    again = sweep.ablate(cfg, workdir=tmp_path, out=said, progress=False, tables=False)
    assert again.outcome.trained == 0 and "no cell left to train" in said.getvalue()
    statuses = {k[2]: (c.status, c.seeds) for k, c in again.outcome.decisions.items()}
    assert statuses == {0.3: ("decided", n_decided), 0.95: ("capped", 7)}


@pytest.mark.parametrize("args, message", [
    (["--precision", "0"], "--precision: must be a number in (0, 200]"),
    (["--until-decided", "--max-seeds", "1"], "--max-seeds: must be an integer in [2, 1000]"),
    (["--max-seeds", "abc"], "argument --max-seeds: invalid int value: 'abc'"),
    (["--precision", "1"], '--precision: only applies with until = "decided" (--until-decided)'),
    (["--until-decided", "--seeds", "5"], "--seeds: fixes the number of seeds, which until = \"decided\""),
])
def test_bad_values_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli(tmp_path, "ablate", "--keep-probs", "1,0.5", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_bad_until_in_the_sweep_file_names_the_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(TWO_EFFECTS_TOML.replace('until = "decided"', 'until = "significant"'))
    proc = run_cli(tmp_path, "ablate", str(cfg), check=False)
    assert proc.returncode == 2 and "a.toml: ablation.until: must be one of 'decided'" in proc.stderr, proc.stderr


def spool_ends(workdir: Path) -> Counter[str]:
    """Cell run name -> number of COMPLETE end records over all its spool files."""
    ends: Counter[str] = Counter()
    for path in (workdir / ".sweep" / "until").glob("ablation-*/spool/*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "end" and event.get("tags", {}).get("state") == "COMPLETE":
                ends[path.name.rsplit("-a", 1)[0]] += 1
    return ends


def decisions_of(output: str) -> list[str]:
    return sorted(line.strip() for line in output.splitlines() if line.startswith("  size "))


@pytest.mark.faults
def test_killed_mid_round_then_the_same_command_trains_no_cell_twice_and_ends_as_uninterrupted(
        tmp_path: Path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for d in (killed, whole):
        d.mkdir()
        (d / "a.toml").write_text(SLOW_TOML)
    args = [*SWEEP, "ablate", "a.toml", "--jobs", "2", "--yes"]
    proc = subprocess.Popen(args, cwd=killed, env=sweep_env(killed), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        def ended_cells() -> int:
            return sum(spool_ends(killed).values())

        wait_for(lambda: 2 <= ended_cells() < 6, 300)  # mid-round 1 (6 cells: 3 seeds x 2 keep_probs)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    before = spool_ends(killed)
    assert 2 <= sum(before.values()) < 6, before

    resumed = run_cli(killed, "ablate", "a.toml", "--jobs", "2", "--yes").stdout
    assert f"{sum(before.values())} cell(s) recorded before" in resumed, resumed
    uninterrupted = run_cli(whole, "ablate", "a.toml", "--jobs", "2", "--yes").stdout
    # No cell trained to its end twice; MLflow holds one finished run per cell, as without the kill.
    after = spool_ends(killed)
    assert set(after.values()) == {1} and after == spool_ends(whole), (after, spool_ends(whole))
    assert cells_by_keep(killed) == cells_by_keep(whole)
    assert decisions_of(resumed) == decisions_of(uninterrupted) != []
    assert "ablation unfinished" not in run_cli(killed, "report", "a.toml").stdout
