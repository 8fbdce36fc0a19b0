"""Numbers a person reads in MLflow, the summaries charts can plot, and the chart layouts stored for the UI.

Against a real SQLite MLflow store, through the real spool recorder and mirror.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sweep.config.display import mlflow_params
from sweep.config.space import TrainParams
from sweep.tracking import charts, spool
from sweep.tracking.mirror import SpoolMirror
from sweep.tracking.outage import Health
from sweep.tracking.rounding import exact_accuracy, round_value, rounded_metrics
from sweep.tracking.store import (
    RUNS_VIEW_KEY,
    get_or_create_experiment,
    make_client,
    summary_chart_metrics,
    summary_metrics,
    summary_tags,
)
from sweep.training import RunSeeds, train


@pytest.mark.parametrize("rows", [1, 7, 360, 1000, 9999, 10_000, 12_345])
def test_every_accuracy_rounded_for_people_reads_back_bit_for_bit(rows: int) -> None:
    """k/n on n <= 10 000 rows keeps 4 decimals and still names its k; above, a decimal more."""
    for k in range(rows + 1):
        exact = k / rows  # what the Solver computes (correct / n)
        shown = round_value("val_acc", exact, rows)
        assert -Decimal(repr(shown)).as_tuple().exponent <= max(4, len(str(rows - 1)))  # type: ignore[operator]
        assert exact_accuracy(shown, rows) == exact


def _summary(val_k: int, train_k: int, val_rows: int = 360, train_rows: int = 1000) -> dict[str, float]:
    return {"best_val_acc": (val_k + 3) / val_rows, "best_epoch": 4.0, "final_train_acc": train_k / train_rows,
            "final_val_acc": val_k / val_rows, "final_gap": train_k / train_rows - val_k / val_rows,
            "final_val_loss": 0.123456789, "epochs_trained": 5.0, "val_rows": float(val_rows),
            "train_acc_rows": float(train_rows)}


def test_summary_tags_read_as_written_by_hand_and_come_back_exact_from_mlflow(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("rounding")
    exacts = [_summary(k, 610 + k) for k in range(340, 356)]
    ids = [client.create_run(exp, tags=summary_tags(s)).info.run_id for s in exacts]
    first = client.get_run(ids[0]).data.tags
    # As a person writes them: 343/360 -> 0.9528, not 0.9527777778; the gap 4 decimals; counts as integers.
    assert first["summary/best_val_acc"] == "0.9528" and first["summary/final_val_acc"] == "0.9444"
    assert first["summary/final_gap"] == "0.0056" and first["summary/epochs_trained"] == "5"
    assert first["summary/final_val_loss"] == "0.1235" and first["summary/val_rows"] == "360"
    # ... and every statistic's input comes back exactly as computed (the report never sees the rounding).
    for run_id, exact in zip(ids, exacts, strict=True):
        back = summary_metrics(client.get_run(run_id))
        for key in ("best_val_acc", "final_train_acc", "final_val_acc", "final_gap"):
            assert back[key] == exact[key], key


def test_epoch_metrics_are_recorded_rounded_and_kept_exact_for_optuna(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {"X_train": rng.normal(size=(120, 8)).astype(np.float32), "y_train": rng.integers(0, 3, 120),
            "X_val": rng.normal(size=(37, 8)).astype(np.float32), "y_val": rng.integers(0, 3, 37)}
    params = TrainParams(keep_prob=0.85, hidden_dims=(16,), epochs=3, learning_rate=1e-2, normalization="none")
    path = tmp_path / "trial-0000.jsonl"
    with spool.RunRecorder(path) as rec:
        rec.start("trial-0000", "study", {}, {})
        result = train(params, data, RunSeeds.derive(0, 0), recorder=rec)
    events, _ = spool.read_events(path, 0)
    epochs = [e["metrics"] for e in events if e["event"] == "epoch"]
    assert len(epochs) == 3
    for recorded, exact in zip(epochs, result.epochs, strict=True):
        assert recorded == rounded_metrics(exact)
        assert recorded["val_acc"] == round(exact["val_acc"], 4) and recorded["gap"] == round(exact["gap"], 4)
        assert recorded["epoch_seconds"] == round(exact["epoch_seconds"], 3)
        assert len(f"{recorded['lr']:.10g}".lstrip("0.").replace("e-", "")) <= 6  # 4 significant digits (+ exponent)
    assert result.summary["val_rows"] == 37 and result.summary["train_acc_rows"] == 120
    assert result.summary["best_val_acc"] == max(e["val_acc"] for e in result.epochs)  # exact in Optuna's attr


def _mirror(tmp_path: Path, client: Any, exp: str, summary: dict[str, float]) -> Any:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    with spool.RunRecorder(spool_dir / "trial-0000.jsonl") as rec:
        rec.start("trial-0000", "study", {"keep_prob": "0.85"}, {"state": "RUNNING"})
        for step in (1, 2, 3):
            rec.epoch(step, {"val_acc": 0.5 + step / 10, "train_acc": 0.6 + step / 10})
        rec.end("FINISHED", {"state": "PRUNED", **summary_tags(summary)}, summary_chart_metrics(summary))
    SpoolMirror(spool_dir, Health("test", spool_dir, lambda _: None)).sync(client, exp, {})
    [run] = client.search_runs([exp])
    return run


def test_plotted_summaries_are_metrics_at_step_0_and_a_pruned_trials_is_its_best(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("charts")
    summary = _summary(300, 950)  # pruned: its best (303/360) is above its last value (300/360)
    run = _mirror(tmp_path, client, exp, summary)
    # Metrics, so MLflow's parallel-coordinates and scatter charts can use them ...
    assert run.data.metrics["summary/best_val_acc"] == 0.8417 == round(summary["best_val_acc"], 4)
    assert run.data.metrics["summary/final_gap"] == round(summary["final_gap"], 4)
    assert run.data.metrics["summary/epochs_trained"] == 5.0
    assert "summary/final_val_loss" not in run.data.metrics  # only what a chart needs
    # ... one point each at step 0 (MLflow draws a bar, not a one-dot line), and the best, not the last val_acc.
    history = client.get_metric_history(run.info.run_id, "summary/best_val_acc")
    assert [(h.step, h.value) for h in history] == [(0, 0.8417)]
    assert summary_metrics(run)["best_val_acc"] == summary["best_val_acc"]


def test_the_stored_view_sets_up_parallel_coordinates_and_keep_prob_scatters(tmp_path: Path) -> None:
    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = get_or_create_experiment(client, "dropout-digits")
    view = json.loads(client.get_experiment(exp).tags[f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"])
    cards = {c["type"]: c for c in view["compareRunCharts"]}
    parallel = cards["PARALLEL"]
    assert parallel["selectedParams"][0] == "keep_prob" and parallel["selectedMetrics"] == ["summary/best_val_acc"]
    scatters = {(c["xaxis"]["key"], c["yaxis"]["key"]) for c in view["compareRunCharts"] if c["type"] == "SCATTER"}
    assert scatters == {("keep_prob", "summary/best_val_acc"), ("keep_prob", "summary/final_gap")}
    # Their section first, the curves after, and kept in that order (MLflow re-sorts unless told it was reordered).
    assert [s["name"] for s in view["compareRunSections"]] == ["summary", "Model metrics"]
    assert view["isAccordionReordered"] is True
    # Every axis exists on a trial's run: the MLflow params it records, the metrics the end record sends.
    shown = mlflow_params(TrainParams(keep_prob=0.85, hidden_dims=(64, 32), learning_rate=1e-3, normalization="none").to_flat())
    assert set(parallel["selectedParams"]) <= set(shown)
    assert {"summary/best_val_acc", "summary/final_gap"} <= set(summary_chart_metrics(_summary(300, 950)))


def test_params_name_the_hidden_sizes_once_so_compares_default_axes_differ() -> None:
    """MLflow's Compare page plots the first three differing params, sorted by name."""
    a = mlflow_params(TrainParams(keep_prob=0.85, hidden_dims=(438, 64), learning_rate=1e-3, normalization="none").to_flat())
    b = mlflow_params(TrainParams(keep_prob=0.5, hidden_dims=(97,), learning_rate=3e-3, normalization="none").to_flat())
    assert a["hidden_dims"] == "438-64" and a["units"] == "502" and a["depth"] == "2"
    assert not any(re.fullmatch(r"hidden_\d+", k) for k in a)
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert differing[:3] == ["depth", "hidden_dims", "keep_prob"]


def test_sweep_ui_seeds_a_run_pages_sections_with_the_curves_first() -> None:
    from sweep.tracking import mlflow_app

    page = mlflow_app.flask_app.test_client().get("/")
    html = page.get_data(as_text=True)
    assert mlflow_app.SEED_RUN_PAGE_SCRIPT in html and html.index(mlflow_app.SEED_RUN_PAGE_SCRIPT) < html.index("<script defer=")
    # The key MLflow 3.17 reads a run page's layout from (LocalStorageUtils: MLflowLocalStorage-<version>-<scope>-<key>).
    key = re.compile(mlflow_app.RUN_PAGE_KEY)
    assert key.match("MLflowLocalStorage-1.1-RunPage-0123456789abcdef0123456789abcdef-model-chartUIState")
    assert not key.match("MLflowLocalStorage-1.1-RunPage-0123456789abcdef0123456789abcdef-system-chartUIState")
    seeded = charts.RUN_PAGE_SECTIONS
    assert [s["name"] for s in seeded["compareRunSections"]] == ["Model metrics", "summary"]
    assert seeded["isAccordionReordered"] is True and seeded["compareRunCharts"] == []
