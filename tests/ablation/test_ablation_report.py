"""`sweep ablate` and `sweep report` on digits, checked against the MLflow runs and a recomputation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from sweep.ablation.grid import cell_seeds
from sweep.config.sweep_file import TrainParams
from sweep.data.datasets import load_dataset
from sweep.training import RunSeeds, train
from sweep_helpers import mlflow_runs, run_cli

ABLATION_TOML = """
[sweep]
dataset = "digits"
study = "abl"

[ablation]
keep_probs = [1.0, 0.5]
sizes = [150, 400]
seeds = 3

[ablation.params]
hidden_dims = [128]
learning_rate = 2e-3
normalization = "none"
weight_scale = 0.05
batch_size = 50
epochs = 6
lr_decay = 1.0
"""


def test_pairing_same_seed_same_init_and_batch_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    data = load_dataset("digits", num_train=200)
    base = TrainParams(keep_prob=1.0, hidden_dims=(64,), learning_rate=1e-3, normalization="none",
                       weight_scale=0.05, batch_size=50, epochs=3)
    seeds = cell_seeds(0, 2)
    a = train(base, data, seeds)
    b = train(base, data, seeds)
    def curve(result):  # everything but wall time
        return [{k: v for k, v in e.items() if k != "epoch_seconds"} for e in result.epochs]

    assert curve(a) == curve(b)

    # keep 0.5 with the same seed: same initial weights, same minibatch order.
    from model import FullyConnectedNet, Solver

    nets = [FullyConnectedNet([64], input_dim=64, num_classes=10, keep_prob=k, weight_scale=0.05, seed=seeds.init)
            for k in (1.0, 0.5)]
    for name in nets[0].params:
        np.testing.assert_array_equal(nets[0].params[name], nets[1].params[name])
    orders = []
    for net in nets:
        seen: list[np.ndarray] = []
        solver = Solver(net, data, batch_size=50, num_epochs=1, seed=seeds.order)
        original = net.loss

        def spy(X, y=None, _orig=original, _seen=seen):
            if y is not None:
                _seen.append(np.array(y))
            return _orig(X, y)

        net.loss = spy
        solver.train()
        orders.append(np.concatenate(seen))
    np.testing.assert_array_equal(orders[0], orders[1])
    # ...and the masks do differ from no dropout, so the curves are not identical.
    c = train(TrainParams(**{**base.__dict__, "keep_prob": 0.5}), data, seeds)
    assert [e["train_loss"] for e in c.epochs] != [e["train_loss"] for e in a.epochs]


def test_ablation_and_report_match_a_recomputation_from_mlflow(tmp_path: Path) -> None:
    cfg = tmp_path / "abl.toml"
    cfg.write_text(ABLATION_TOML)
    out = run_cli(tmp_path, "ablate", str(cfg), "--jobs", "2").stdout
    assert "0/12 cells done, training 12" in out
    # Explicit params: not what the study measured, so the estimate comes from a timing run.
    assert "CPU for 12 cell(s) on 2 worker(s)" in out and "(scaled from a one-epoch timing run on 400 rows)" in out
    client, parents, children = mlflow_runs(tmp_path, "abl")
    [key] = [k for k in parents if k.startswith("ablation:")]
    parent = parents[key]
    assert len(children) == 12 and {r.info.status for r in children} == {"FINISHED"}
    for r in children:
        assert len(client.get_metric_history(r.info.run_id, "val_acc")) == 6
        assert r.data.params["keep_prob"] == r.data.tags["ablation.keep_prob"]

    # Paired: for one (size, seed), keep 1.0 and 0.5 share the init and order seeds.
    by_cell = {(r.data.tags["ablation.size"], r.data.tags["ablation.seed"], r.data.tags["ablation.keep_prob"]): r
               for r in children}
    for size in ("150", "400"):
        for seed in ("0", "1", "2"):
            a, b = by_cell[(size, seed, "1.0")], by_cell[(size, seed, "0.5")]
            assert a.data.tags["sweep.init_seed"] == b.data.tags["sweep.init_seed"]
            assert a.data.tags["sweep.order_seed"] == b.data.tags["sweep.order_seed"]

    # A rerun skips finished cells.
    again = run_cli(tmp_path, "ablate", str(cfg), "--jobs", "2").stdout
    assert "12/12 cells done, training 0" in again
    assert len(mlflow_runs(tmp_path, "abl")[2]) == 12

    report_out = run_cli(tmp_path, "report", str(cfg), "--out", str(tmp_path / "rep")).stdout
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "report written to" in report_out
    for fig in ("learning_curves.png", "gap_vs_keep_prob.png", "benefit_vs_size.png"):
        path = next((tmp_path / "rep" / "figures").rglob(fig))
        assert path.stat().st_size > 5000
    # Artifacts logged on the ablation's parent run.
    names = [f.path for f in client.list_artifacts(parent.info.run_id, "report")]
    assert "report/report.md" in names

    # Recompute the headline numbers straight from MLflow and find them in the report.
    for size in (150, 400):
        base = [float(by_cell[(str(size), str(s), "1.0")].data.tags["summary/best_val_acc"]) for s in range(3)]
        drop = [float(by_cell[(str(size), str(s), "0.5")].data.tags["summary/best_val_acc"]) for s in range(3)]
        diff = np.array(drop) - np.array(base)
        mean = diff.mean() * 100
        half = sps.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3) * 100
        sentence = next(line for line in report.splitlines()
                        if f"With {size} training examples, keep 0.5 vs no dropout" in line)
        accuracy_part = sentence.split("validation accuracy", 1)[1]
        numbers = [float(x.replace("\u2212", "-")) for x in re.findall(r"[+\u2212-]?\d+\.\d+", accuracy_part)]
        assert numbers[0] == pytest.approx(mean, abs=0.051)  # printed to 0.1 points
        assert numbers[1] == pytest.approx(mean - half, abs=0.051)
        assert numbers[2] == pytest.approx(mean + half, abs=0.051)
        gap_base = np.mean([float(by_cell[(str(size), str(s), "1.0")].data.tags["summary/final_gap"]) for s in range(3)])
        assert f"{gap_base * 100:.1f}" in report


def test_per_seed_subsets_give_each_seed_its_own_rows_shared_by_its_keep_probs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "abl.toml"
    cfg.write_text(ABLATION_TOML)
    grid = ["--seeds", "2", "--epochs", "2", "--jobs", "2"]
    out = run_cli(tmp_path, "ablate", str(cfg), *grid, "--subsets", "per-seed").stdout
    assert "one training subset per seed" in out
    _, parents, children = mlflow_runs(tmp_path, "abl")
    [parent] = [p for k, p in parents.items() if k.startswith("ablation:")]
    assert parent.data.params["subsets"] == "per-seed" and len(children) == 8
    seed_of = {}  # ablation seed -> the subset seed its cells trained on
    for r in children:
        seed_of.setdefault(r.data.tags["ablation.seed"], set()).add(r.data.tags["ablation.data_seed"])
    assert all(len(s) == 1 for s in seed_of.values()), seed_of  # every keep_prob and size of a seed
    (s0,), (s1,) = seed_of["0"], seed_of["1"]
    assert s0 != s1 and "0" not in (s0, s1)
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))  # the cache the CLI wrote
    rows = [load_dataset("digits", num_train=150, seed=int(s)) for s in (s0, s1)]
    assert not np.array_equal(rows[0]["X_train"], rows[1]["X_train"])
    # ...and validate on the same rows (centred by their own subset's mean: a constant shift per feature).
    np.testing.assert_array_equal(rows[0]["y_val"], rows[1]["y_val"])
    shift = np.asarray(rows[0]["X_val"]) - np.asarray(rows[1]["X_val"])
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:1], shift.shape), atol=1e-3)

    # The default keeps one subset for every seed: another ablation, all on the sweep's data seed.
    out = run_cli(tmp_path, "ablate", str(cfg), *grid).stdout
    assert "the same training subset for every seed" in out
    _, parents, children = mlflow_runs(tmp_path, "abl")
    fixed = [p for k, p in parents.items() if k.startswith("ablation:") and p.data.params["subsets"] == "fixed"]
    assert len(fixed) == 1 and len(children) == 16
    fixed_id = fixed[0].info.run_id
    assert {r.data.tags["ablation.data_seed"] for r in children if r.data.tags["mlflow.parentRunId"] == fixed_id} == {"0"}

    run_cli(tmp_path, "report", str(cfg), "--out", str(tmp_path / "rep"))
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "each seed draws its own subset of each size" in report
    assert "every seed trains on the same subset of each size" in report


@pytest.mark.parametrize("normalization", ["none", "batchnorm", "layernorm"])
def test_best_weights_reproduce_the_best_validation_accuracy(normalization: str, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """What the sweep saves for its test-set evaluation is the best epoch's net, running stats included."""
    from sweep.training import evaluate, load_weights, num_classes_of, save_weights

    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    data = load_dataset("digits", num_train=300)
    params = TrainParams(keep_prob=0.8, hidden_dims=(64, 32), learning_rate=2e-3, normalization=normalization,
                         weight_scale=0.05, batch_size=50, epochs=4)
    result = train(params, data, RunSeeds.derive(0, 1), keep_best_weights=True)
    save_weights(tmp_path / "w.npz", result.best_weights)
    acc = evaluate(params, load_weights(tmp_path / "w.npz"), data["X_val"], data["y_val"], num_classes_of(data))
    assert acc == pytest.approx(result.best_val_acc)


def test_sweep_then_ablate_its_best_trial_then_report_both(tmp_path: Path) -> None:
    run_cli(tmp_path, "run", "--trials", "8", "--epochs", "2", "--pruner", "none", "--jobs", "2")
    out = run_cli(tmp_path, "ablate", "--sizes", "100", "--seeds", "2", "--keep-probs", "1,0.5", "--jobs", "2").stdout
    assert "ablating the best trial" in out
    client, parents, children = mlflow_runs(tmp_path)
    [key] = [k for k in parents if k.startswith("ablation:")]
    cells = [r for r in children if r.data.tags["mlflow.parentRunId"] == parents[key].info.run_id]
    assert len(cells) == 4
    best = max((r for r in children if r.data.tags.get("sweep.kind") == "trial"),
               key=lambda r: float(r.data.tags["summary/best_val_acc"]))
    # The ablation re-trains the best trial's configuration, keep_prob aside.
    for name in ("hidden_dims", "learning_rate", "normalization", "weight_scale"):
        assert {c.data.params[name] for c in cells} == {best.data.params[name]}, name

    run_cli(tmp_path, "report")
    report = (tmp_path / "reports" / "dropout-digits" / "report.md").read_text()
    assert "## Sweep: study `dropout-digits`" in report and "## Ablation" in report
    assert "| value | ped_anova |" in report and "| gap | fanova |" in report
    # The best trial's params as the MLflow run shows them, no float noise (0.8500000000000001).
    best_line = next(line for line in report.splitlines() if line.startswith("Best validation accuracy"))
    for key in ("keep_prob", "learning_rate", "weight_scale"):
        assert f"{key}={best.data.params[key]}" in best_line, (key, best_line)
    assert not re.search(r"\d\.\d{6,}", best_line), best_line
    assert (tmp_path / "reports" / "dropout-digits" / "figures" / "sweep_keep_prob.png").stat().st_size > 5000
    arts = [f.path for f in client.list_artifacts(parents["study"].info.run_id, "report")]
    assert "report/report.md" in arts
