"""How runs are recorded for people and read back: statuses, state tags, summary metric names.

Against a real SQLite MLflow store; the "old" runs are written the way the
project wrote them before (pruned trials KILLED, cells without a state tag,
one-shot summaries under bare names), so readers are checked on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sweep.ablation.grid import Cell as GridCell
from sweep.ablation.grid import finished_cells
from sweep.reporting.report import cells_from_runs
from sweep.tracking import spool
from sweep.tracking.store import make_client, run_state, summary_metrics, summary_tags


@pytest.mark.parametrize(("state", "interrupted", "status"), [
    ("COMPLETE", False, "FINISHED"),
    ("PRUNED", False, "FINISHED"),
    ("FAIL", False, "FAILED"),
    ("FAIL", True, "KILLED"),
])
def test_end_status_follows_optunas_mlflow_convention(state: str, interrupted: bool, status: str) -> None:
    assert spool.end_status(state, interrupted=interrupted) == status


def _run(client: Any, exp: str, name: str, status: str, tags: dict[str, str], metrics: dict[str, float],
         curve: list[float] | None = None) -> str:
    run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
    for step, v in enumerate(curve or [], start=1):
        client.log_metric(run_id, "val_acc", v, step=step)
        client.log_metric(run_id, "train_acc", v + 0.05, step=step)
    for k, v in metrics.items():
        client.log_metric(run_id, k, v, step=len(curve or []))
    client.set_terminated(run_id, status)
    return run_id


def _cell_tags(size: int, keep: float, seed: int, **extra: str) -> dict[str, str]:
    return {"sweep.kind": "cell", "ablation.size": str(size), "ablation.keep_prob": str(keep),
            "ablation.seed": str(seed), **extra}


OLD_SUMMARY = {"best_val_acc": 0.8, "best_epoch": 2.0, "final_train_acc": 0.9, "final_val_acc": 0.75,
               "final_gap": 0.15, "final_val_loss": 0.6, "epochs_trained": 3.0}


def test_runs_written_the_old_way_are_classified_by_their_state(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("old")
    # Before: a pruned trial was a KILLED run tagged state=PRUNED; a dead worker's trial KILLED too.
    pruned = _run(client, exp, "trial-0001", "KILLED", {"state": "PRUNED", "pruned_at_epoch": "1"}, {}, [0.3])
    dead = _run(client, exp, "trial-0002", "KILLED", {"state": "FAIL", "failure_reason": "worker process died"}, {})
    done = _run(client, exp, "trial-0003", "FINISHED", {"state": "COMPLETE"}, {}, [0.5, 0.6])
    # Cells had no state tag at all.
    ok = _run(client, exp, "cell-ok", "FINISHED", _cell_tags(100, 1.0, 0), OLD_SUMMARY, [0.6, 0.7, 0.8])
    cut = _run(client, exp, "cell-cut", "KILLED", _cell_tags(100, 0.5, 0, failure_reason="interrupted"), {}, [0.5])
    diverged = _run(client, exp, "cell-div", "FAILED", _cell_tags(100, 0.5, 1, failure_reason="diverged at epoch 2"),
                    {}, [0.1, 0.1])
    runs = {r.info.run_id: r for r in client.search_runs([exp])}

    assert run_state(runs[pruned]) == "PRUNED"
    assert run_state(runs[dead]) == "FAIL"
    assert run_state(runs[done]) == "COMPLETE"
    assert [run_state(runs[r]) for r in (ok, cut, diverged)] == ["COMPLETE", "FAIL", "FAIL"]

    cell_runs = [runs[r] for r in (ok, cut, diverged)]
    cells, unusable = cells_from_runs(client, cell_runs)
    assert [(c.size, c.keep_prob, c.seed) for c in cells] == [(100, 1.0, 0)]
    assert cells[0].best_val_acc == 0.8 and cells[0].gap == 0.15 and cells[0].val_acc == [0.6, 0.7, 0.8]
    assert sorted(unusable) == ["cell-cut: interrupted", "cell-div: diverged at epoch 2"]
    # Resume: the interrupted cell trains again, the diverged one (deterministic) does not.
    assert finished_cells(cell_runs) == {GridCell(100, 1.0, 0), GridCell(100, 0.5, 1)}


def test_a_pruned_run_written_now_is_finished_and_still_read_as_pruned(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("new")
    status = spool.end_status("PRUNED")
    run_id = _run(client, exp, "trial-0001", status, {"state": "PRUNED", "pruned_at_epoch": "1"}, {}, [0.3])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run_state(run) == "PRUNED"
    # A cell is usable only when COMPLETE, whatever its MLflow status says.
    cells, unusable = cells_from_runs(client, [run])
    assert cells == [] and unusable == ["trial-0001: pruned"]


def test_summary_figures_are_read_from_tags_and_from_the_metrics_of_old_stores(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("names")
    _run(client, exp, "cell-new", "FINISHED", _cell_tags(100, 1.0, 0, state="COMPLETE", **summary_tags(OLD_SUMMARY)),
         {}, [0.6, 0.7, 0.8])
    _run(client, exp, "cell-old", "FINISHED", _cell_tags(100, 0.5, 0), OLD_SUMMARY, [0.6, 0.7, 0.8])
    # This branch's first version logged summary/<name> metrics; a tag wins over any metric.
    _run(client, exp, "mid", "FINISHED", {}, {"summary/best_val_acc": 0.7, "final_gap": 0.2})
    _run(client, exp, "both", "FINISHED", {"summary/best_val_acc": "0.9"}, {"best_val_acc": 0.1, "summary/best_val_acc": 0.5})
    runs = {r.info.run_name: r for r in client.search_runs([exp])}
    # New runs: only the curves are metrics (a trial's Model metrics page starts with them).
    assert set(runs["cell-new"].data.metrics) == {"val_acc", "train_acc"}
    assert runs["cell-new"].data.tags["summary/best_val_acc"] == "0.8"
    assert summary_metrics(runs["cell-new"]) == summary_metrics(runs["cell-old"]) == OLD_SUMMARY
    assert summary_metrics(runs["mid"]) == {"best_val_acc": 0.7, "final_gap": 0.2}
    assert summary_metrics(runs["both"]) == {"best_val_acc": 0.9}
    cells, unusable = cells_from_runs(client, [runs["cell-new"], runs["cell-old"]])
    assert unusable == [] and [(c.keep_prob, c.best_val_acc, c.val_loss) for c in cells] == [(0.5, 0.8, 0.6), (1.0, 0.8, 0.6)]
