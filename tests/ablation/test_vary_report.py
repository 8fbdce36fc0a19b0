"""A real digits ablation with --vary normalization=none,batchnorm, end to end; the report's interaction
recomputed from the MLflow runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from sweep_helpers import mlflow_runs, run_cli

TOML = """
[sweep]
dataset = "digits"
study = "vary"

[ablation]
keep_probs = [1.0, 0.5]
sizes = [150]
seeds = 4

[ablation.params]
hidden_dims = [64]
learning_rate = 2e-3
normalization = "none"
weight_scale = 0.05
batch_size = 50
epochs = 3
lr_decay = 1.0
"""
NUM = r"([+−-]?\d+\.\d)"


def metric(run: Any, name: str) -> float:
    """A cell's one-shot figure, read as a person finds it in MLflow: the run's tag `summary/<name>`."""
    return float(run.data.tags[f"summary/{name}"])


def t_interval(x: np.ndarray) -> tuple[float, float, float]:
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return x.mean() * 100, (x.mean() - half) * 100, (x.mean() + half) * 100


def num(text: str) -> float:
    return float(text.replace("−", "-"))


def test_vary_normalization_end_to_end_and_the_interaction_recomputed_from_mlflow(tmp_path: Path) -> None:
    cfg = tmp_path / "vary.toml"
    cfg.write_text(TOML)
    out = run_cli(tmp_path, "ablate", str(cfg), "--vary", "normalization=none,batchnorm", "--jobs", "2").stdout
    assert "0/16 cells done, training 16" in out and "normalization ['none', 'batchnorm']" in out
    _, parents, children = mlflow_runs(tmp_path, "vary")
    [parent] = [p for k, p in parents.items() if k.startswith("ablation:")]
    assert parent.data.params["vary"] == "normalization=none,batchnorm"
    assert len(children) == 16 and {r.info.status for r in children} == {"FINISHED"}
    runs = {}
    for r in children:
        t = r.data.tags
        norm = t["ablation.factor.normalization"]
        assert r.data.params["normalization"] == norm  # the cell trained at its level
        assert r.info.run_name == f"cell-n150-k{float(t['ablation.keep_prob']):g}-s{t['ablation.seed']}@normalization={norm}"
        runs[(norm, float(t["ablation.keep_prob"]), int(t["ablation.seed"]))] = r
    # Paired inside and across levels: seed k has one init and batch order for every keep_prob and level.
    for s in range(4):
        seeds = {(runs[n, k, s].data.tags["sweep.init_seed"], runs[n, k, s].data.tags["sweep.order_seed"])
                 for n in ("none", "batchnorm") for k in (1.0, 0.5)}
        assert len(seeds) == 1

    # Resumed by all the cells' factor values; the factors' order does not make it another ablation.
    again = run_cli(tmp_path, "ablate", str(cfg), "--vary", "normalization=batchnorm,none", "--jobs", "2").stdout
    assert "16/16 cells done, training 0" in again
    assert len(mlflow_runs(tmp_path, "vary")[2]) == 16

    run_cli(tmp_path, "report", str(cfg), "--out", str(tmp_path / "rep"))
    report = (tmp_path / "rep" / "report.md").read_text()
    fig = next((tmp_path / "rep" / "figures").rglob("benefit_by_level.png"))
    assert fig.stat().st_size > 5000

    # The one-sentence headline opens the verdict, then the overview, at most five lines.
    verdict = report.split("### Verdict\n\n", 1)[1]
    assert verdict.startswith("In short (")
    opening = verdict.split("\n\n", 2)[1].splitlines()
    assert 3 <= len(opening) <= 5 and opening[0].startswith("- Dropout helped")
    assert opening[-1].startswith(("- Largest interaction: With 150 training examples, keep 0.5: dropout's benefit",
                                   "- No interaction detectable (every interval of the 1 comparison covers 0); "
                                   "the largest estimate: With 150 training examples, keep 0.5: dropout's benefit"))

    # Per level: dropout's paired effect, recomputed from the runs.
    acc = {key: metric(r, "best_val_acc") for key, r in runs.items()}
    effect = {n: np.array([acc[n, 0.5, s] - acc[n, 1.0, s] for s in range(4)]) for n in ("none", "batchnorm")}
    for norm in ("none", "batchnorm"):
        section = report.split(f"#### normalization={norm}\n", 1)[1]
        m = re.search(rf"keep 0.5 vs no dropout: validation accuracy {NUM} points \(95 % CI {NUM} to {NUM}", section)
        assert m is not None, section[:500]
        assert [num(g) for g in m.groups()] == pytest.approx(t_interval(effect[norm]), abs=0.051)

    # The interaction: per seed (0.5 − 1.0 with batchnorm) − (0.5 − 1.0 without), its t-interval.
    mean, low, high = t_interval(effect["batchnorm"] - effect["none"])
    m = re.search(rf"- With 150 training examples, keep 0.5: dropout's benefit is (\d+\.\d) points (larger|smaller) "
                  rf"with normalization=batchnorm than with normalization=none \(95 % CI {NUM} to {NUM}, "
                  r"p (?:=|<) ([\d.]+) Holm-adjusted, 4 seeds\), (a detectable|no detectable) interaction", report)
    assert m is not None, report
    size, how, lo, hi, p, words = m.groups()
    shown = num(size) * (1 if how == "larger" else -1)
    assert shown == pytest.approx(mean, abs=0.051)
    assert (num(lo), num(hi)) == pytest.approx((low, high), abs=0.051)
    assert (words == "no detectable") == (low <= 0 <= high)
    assert opening[-1].startswith("- Largest interaction") == (words == "a detectable")
    p_t = sps.ttest_rel(effect["batchnorm"], effect["none"]).pvalue  # Holm over one interaction: itself
    assert float(p) == pytest.approx(float(f"{p_t:.2g}"))
    # ...and in the table, for both metrics.
    rows = [line for line in report.splitlines() if line.startswith("| normalization | batchnorm − none |")]
    assert len(rows) == 2 and f"{mean:+.1f}".replace("-", "−") in rows[0]


@pytest.mark.cifar10
def test_vary_on_real_cifar10_smoke(tmp_path: Path) -> None:
    """The --vary path on the real images (SWEEP_DATA_DIR, as in test_cifar10_real): 8 tiny cells and a report."""
    import os

    if not (Path(os.environ.get("SWEEP_DATA_DIR", "/nonexistent")) / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.fail("SWEEP_DATA_DIR has no cifar-10-batches-py: build it with ../shared/data/build_cifar10.py DIR")
    cfg = tmp_path / "smoke.toml"
    cfg.write_text(TOML.replace('dataset = "digits"', 'dataset = "cifar10"\nnum_val = 500')
                   .replace("sizes = [150]", "sizes = [300]").replace("seeds = 4", "seeds = 2")
                   .replace("epochs = 3", "epochs = 2").replace("weight_scale = 0.05", "weight_scale = 0.01"))
    out = run_cli(tmp_path, "ablate", str(cfg), "--vary", "normalization=none,batchnorm", "--jobs", "2").stdout
    assert "0/8 cells done, training 8" in out
    _, _, children = mlflow_runs(tmp_path, "vary")
    assert len(children) == 8 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.params["num_train"] for r in children} == {"300"}
    run_cli(tmp_path, "report", str(cfg), "--out", str(tmp_path / "rep"))
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "- With 300 training examples, keep 0.5: dropout's benefit is " in report
    assert "with normalization=batchnorm than with normalization=none (95 % CI " in report
