"""`sweep run|ablate --model MODULE:CLASS`: your own cs231n net, checked first, trained like the built-in one.

The nets are fixtures under tests/fixtures/ (a cs231n assignment net with its
own layers, not this project's class); the sweeps are tiny (digits, a few
trials and epochs, a few hundred rows).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sweep.check.contract import resolve_model
from sweep.config.domains import ConfigError
from sweep.config.model_spec import ModelSpec
from sweep.config.sweep_file import load_config
from sweep_helpers import load_study, mlflow_runs, run_cli, sweep_env

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NET = f"{FIXTURES / 'cs231n_net.py'}:FullyConnectedNet"
SPACE = """
keep_prob = [0.5, 1.0]
depth = 1
width = [16, 24]
learning_rate = 3e-3
normalization = ["none", "batchnorm"]
weight_scale = 0.05
batch_size = 50
epochs = 2
"""


def _sweep_file(folder: Path, extra: str = "") -> Path:
    path = folder / "own.toml"
    path.write_text(f"[sweep]\ndataset = \"digits\"\nnum_train = 200\njobs = 2\n{extra}\n[space]\n{SPACE}")
    return path


# -- the contract, in-process --------------------------------------------------------------------------------


def test_the_contract_check_measures_what_the_dropout_keyword_means() -> None:
    spec, line = resolve_model(ModelSpec(NET), ["batchnorm", "layernorm"])
    assert (spec.keep_kw, spec.keep_is_drop, spec.off, spec.checked) == ("dropout_keep_ratio", False, 1.0, True)
    # cs231n's seed reseeds numpy at every dropout call: the same mask for ever, so the net gets no seed.
    assert not spec.pass_seed and "seed fixes every call's dropout mask" in line
    assert re.search(r"dropout_keep_ratio=0\.25 keeps 2[45]\.\d % of units \(95 % CI .*\): a KEEP probability, "
                     r"given keep_prob", line), line

    old, line = resolve_model(ModelSpec(f"{FIXTURES / 'net_dropout_2017.py'}:FullyConnectedNet"), [])
    assert (old.keep_kw, old.keep_is_drop, old.off) == ("dropout", True, 0.0), line
    assert re.search(r"dropout=0\.25 keeps 7[45]\.\d % of units .*: a DROP probability, given 1 - keep_prob", line)
    assert old.keyword_value(0.75) == 0.25 and old.keyword_value(1.0) == 0.0

    own, line = resolve_model(ModelSpec("model:FullyConnectedNet"), ["batchnorm"])
    assert (own.keep_kw, own.keep_is_drop, own.pass_seed) == ("keep_prob", False, True), line


def test_a_2017_net_trains_with_the_keep_probability_it_was_asked_for() -> None:
    """keep_prob 0.75 reaches a drop-probability net as dropout=0.25, so it keeps 75 % of units."""
    from sweep.config.space import TrainParams
    from sweep.own_net import build_own_net

    spec, _ = resolve_model(ModelSpec(f"{FIXTURES / 'net_dropout_2017.py'}:FullyConnectedNet"), [])
    params = TrainParams(keep_prob=0.75, hidden_dims=(2000,), learning_rate=1e-3, normalization="none")
    net = build_own_net(spec, params, 4, 3, seed=1)
    net.params["W1"][...] = 0.0
    net.params["b1"][...] = 1.0
    _, grads = net.loss(np.ones((1, 4), dtype=np.float32), np.zeros(1, dtype=np.int64))
    kept = float(np.mean(np.any(grads["W2"] != 0, axis=1)))
    assert abs(kept - 0.75) < 0.04, kept


@pytest.mark.parametrize("source, pattern", [
    ("class Net:\n    def __init__(self, hidden_dims, input_dim=3, num_classes=2, dropout_keep_ratio=1,\n"
     "                 normalization=None, weight_scale=1e-2, dtype=None, seed=None):\n        pass\n",
     r"Net's constructor takes no reg \(it takes hidden_dims, .*\); a cs231n FullyConnectedNet takes"),
    ("class Net:\n    def __init__(self, hidden_dims, input_dim=3, num_classes=2, normalization=None, reg=0.0,\n"
     "                 weight_scale=1e-2, dtype=None, seed=None):\n        self.params = {}\n",
     r"Net's constructor takes no dropout_keep_ratio \(or dropout\) \(it takes hidden_dims"),
    ("class Net:\n    def __init__(self, hidden_dims, **kw):\n        self.params = {}\n",
     r"Net has no params dict or no loss\(X, y=None\) method"),
    ("import numpy as np\nclass Net:\n    def __init__(self, hidden_dims, **kw):\n"
     "        self.params = {'W1': np.zeros((5, 6)), 'b1': np.zeros(6)}\n    def loss(self, X, y=None):\n"
     "        return 0.0\n",
     r"params of hidden_dims=\[6, 4\] are W1, b1; expected W1, b1, W2, b2, W3, b3"),
])
def test_a_class_that_breaks_the_contract_is_one_line(tmp_path: Path, source: str, pattern: str) -> None:
    (tmp_path / "student_net.py").write_text(source)
    with pytest.raises(ValueError, match=r"^--model .*student_net\.py:Net: " + pattern):
        resolve_model(ModelSpec(f"{tmp_path / 'student_net.py'}:Net"), [])


def test_model_settings_in_the_sweep_file_and_the_overrides(tmp_path: Path) -> None:
    path = _sweep_file(tmp_path, f"\n[model]\nclass = \"cs231n_net:FullyConnectedNet\"\npath = \"{FIXTURES}\"\n")
    cfg = load_config(path)
    assert cfg.model == ModelSpec("cs231n_net:FullyConnectedNet", str(FIXTURES))
    assert load_config(None, {"model": NET}).model == ModelSpec(NET)
    assert load_config(path, {"model": NET}).model == ModelSpec(NET, str(FIXTURES))  # the flag wins, the path stays
    (tmp_path / "again.toml").write_text(cfg.to_toml())
    assert load_config(tmp_path / "again.toml") == cfg
    bad = {"model": "fc_net.FullyConnectedNet"}
    with pytest.raises(ConfigError, match=r"^command line: --model: must be MODULE:CLASS"):
        load_config(None, bad)
    with pytest.raises(ConfigError, match=r"--model-path: is given without --model"):
        load_config(None, {"model_path": str(FIXTURES)})
    (tmp_path / "typo.toml").write_text("[model]\nclas = \"a:B\"\n")
    with pytest.raises(ConfigError, match=r"typo\.toml: model\.clas"):
        load_config(tmp_path / "typo.toml")


# -- the CLI ------------------------------------------------------------------------------------------------


def test_a_broken_class_stops_the_sweep_before_any_trial(tmp_path: Path) -> None:
    net = f"{FIXTURES / 'net_ignores_keep_ratio.py'}:FullyConnectedNet"
    proc = run_cli(tmp_path, "run", str(_sweep_file(tmp_path)), "--trials", "2", "--model", net, check=False)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.match(r"sweep run: error: --model .*net_ignores_keep_ratio\.py:FullyConnectedNet: with "
                    r"dropout_keep_ratio=0\.25 it keeps every hidden unit: the net ignores dropout_keep_ratio",
                    proc.stderr), proc.stderr
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()


def _report_headings(workdir: Path) -> list[str]:
    report = next((workdir / "reports").glob("*/report.md")).read_text()
    # Names of studies and ablations differ; the sections must not.
    return [re.sub(r"`[^`]*`", "`X`", line) for line in report.splitlines() if line.startswith("#")]


def _sweep_ablate_report(workdir: Path, monkeypatch: pytest.MonkeyPatch, **model: str) -> Any:
    """The Python API's sweep, ablation and report (in-process: a CLI start costs seconds per command)."""
    import io

    import sweep

    monkeypatch.chdir(workdir)
    cfg = sweep.load_config(_sweep_file(workdir), trials=3, pruner="none", **model)
    quiet: dict[str, Any] = {"workdir": workdir, "out": io.StringIO(), "progress": False}
    assert sweep.run(cfg, tables=False, **quiet).exit_code == 0
    ablation = sweep.ablate(cfg, keep_probs=[1, 0.5], sizes=[100], seeds=2, **quiet)
    assert ablation.exit_code == 0 and ablation.cells_done == 4
    sweep.report(cfg, workdir=workdir, out=io.StringIO())
    return cfg


def test_own_net_sweep_ablation_and_report_like_the_built_in_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    own, built_in = tmp_path / "own", tmp_path / "built-in"
    own.mkdir()
    built_in.mkdir()
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    # A module on model_path, as cs231n's classifiers/fc_net.py in ~/assignment2.
    own_cfg = _sweep_ablate_report(own, monkeypatch, model="cs231n_net:FullyConnectedNet", model_path=str(FIXTURES))
    _sweep_ablate_report(built_in, monkeypatch)
    import sweep

    # The best trial's net comes back as the student's class, and gives the test accuracy the sweep recorded.
    results = sweep.load_study(own_cfg, workdir=own)
    net = results.best_model()
    data = sweep.data.load_dataset("digits", num_train=200, seed=0)
    assert type(net).__module__ == "cs231n_net" and results.test_acc is not None
    assert np.mean(net.loss(data["X_test"]).argmax(axis=1) == data["y_test"]) == pytest.approx(results.test_acc)
    assert _report_headings(own) == _report_headings(built_in)

    study = load_study(own)
    assert study.user_attrs["model"] == {"module": "cs231n_net", "class": "FullyConnectedNet",
                                         "path": str(FIXTURES)}
    assert load_study(built_in).user_attrs["model"] == {"module": "model", "class": "FullyConnectedNet"}
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3
    _, parents, children = mlflow_runs(own)
    assert len(children) == 3 + 4  # trials and cells
    assert {r.data.tags["sweep.model"] for r in [*children, *parents.values()]} == {"cs231n_net:FullyConnectedNet"}

    # A resumed study refuses another net, naming both, before anything runs.
    proc = run_cli(own, "run", str(own / "own.toml"), "--trials", "4", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert re.match(r"sweep run: error: study 'dropout-digits' was trained with cs231n_net:FullyConnectedNet; this "
                    r"command trains the built-in net \(no --model\): give --model cs231n_net:FullyConnectedNet",
                    proc.stderr), proc.stderr
    proc = run_cli(built_in, "ablate", str(built_in / "own.toml"), "--keep-probs", "1,0.5", "--sizes", "100",
                   "--model", NET, check=False)
    assert proc.returncode == 2 and re.search(r"trained with model:FullyConnectedNet; this command trains "
                                              r".*cs231n_net\.py:FullyConnectedNet: give no --model", proc.stderr)
    assert len(load_study(own).trials) == 3


def test_an_exception_in_the_nets_code_fails_that_trial_only(tmp_path: Path) -> None:
    net = f"{FIXTURES / 'net_loss_raises.py'}:FullyConnectedNet"  # raises in loss() for width 24
    proc = run_cli(tmp_path, "run", str(_sweep_file(tmp_path)), "--trials", "4", "--jobs", "1", "--pruner", "none",
                   "--model", net)
    study = load_study(tmp_path)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and any(t.state.name == "COMPLETE" for t in study.trials), proc.stdout
    reason = r"FullyConnectedNet raised IndexError: index 3 is out of bounds .* at net_loss_raises\.py:\d+"
    assert re.search(rf"trial {failed[0].number} fail \({reason}\) \|", proc.stdout), proc.stdout
    assert f"`sweep ablate --study dropout-digits --model {net}`" in proc.stdout, proc.stdout
    for t in failed:
        assert t.params["hidden_1"] == 24 and re.fullmatch(reason, t.user_attrs["failure_reason"])
        assert 'net_loss_raises.py", line' in t.user_attrs["traceback"] and "IndexError" in t.user_attrs["traceback"]
    _, _, children = mlflow_runs(tmp_path)
    tagged = [r for r in children if r.data.tags.get("state") == "FAIL"]
    assert len(tagged) == len(failed) and all("scale[3]" in r.data.tags["traceback"] for r in tagged)

    # An ablation cell likewise: failed with its reason and traceback, the other cells still trained.
    grid = tmp_path / "wide.toml"
    grid.write_text("[sweep]\ndataset = \"digits\"\nnum_train = 200\njobs = 2\n[ablation]\nkeep_probs = [1.0, 0.5]\n"
                    "sizes = [100]\nseeds = 1\n[ablation.params]\nhidden_dims = [24]\nlearning_rate = 3e-3\n"
                    "normalization = \"none\"\nepochs = 2\n")
    proc = run_cli(tmp_path, "ablate", str(grid), "--model", net)
    assert len(re.findall(rf"\] cell-n100-k(1|0\.5)-s0 failed \({reason}\)", proc.stdout)) == 2, proc.stdout
    _, _, children = mlflow_runs(tmp_path)
    cells = [r for r in children if r.data.tags.get("sweep.kind") == "cell"]
    assert len(cells) == 2 and all('net_loss_raises.py", line' in r.data.tags["traceback"] for r in cells)


# -- Dask ---------------------------------------------------------------------------------------------------


def test_own_net_sweep_on_a_local_dask_cluster(tmp_path: Path, dask_client: Any) -> None:
    """The workers import the class themselves from the spec in the task (their folder is not this one)."""
    cache = sweep_env(tmp_path)["SWEEP_CACHE_DIR"]
    before = dask_client.run(lambda: os.environ.get("SWEEP_CACHE_DIR"))

    def use_cache(folder: str | None) -> None:
        if folder is None:
            os.environ.pop("SWEEP_CACHE_DIR", None)
        else:
            os.environ["SWEEP_CACHE_DIR"] = folder

    dask_client.run(use_cache, cache)
    try:
        proc = run_cli(tmp_path, "run", str(_sweep_file(tmp_path)), "--trials", "3", "--model", NET, "--pruner", "none",
                       "--storage", f"journal:{tmp_path / 'optuna.journal'}",
                       "--dask-scheduler", dask_client.scheduler.address)
    finally:
        for address, folder in before.items():
            dask_client.run(use_cache, folder, workers=[address])
    assert "3/3" in proc.stdout and "on the Dask cluster" in proc.stdout, proc.stdout
    study = load_study(tmp_path)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3
    _, _, children = mlflow_runs(tmp_path)
    assert {r.data.tags["sweep.model"] for r in children} == {NET}
    from sweep.tracking import spool

    pids = {spool.read_state(p).start["pid"] for p in spool.spool_files(tmp_path / ".sweep" / "dropout-digits" / "spool")}
    assert pids and pids <= set(dask_client.run(os.getpid).values())


@pytest.mark.parametrize("as_file", [True, False])
def test_a_worker_that_stays_up_trains_the_code_as_it_is_now(tmp_path: Path, as_file: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """loky keeps its workers between two sweeps of one notebook: the second must see the student's fix."""
    from sweep.own_net import own_class

    monkeypatch.syspath_prepend(str(tmp_path))  # restored afterwards (the import adds the folders it needs)
    package = tmp_path / f"pkg_{as_file}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    net = package / "fc_net.py"
    net.write_text("class Net:\n    VERSION = 1\n")
    spec = ModelSpec(f"{net}:Net") if as_file else ModelSpec(f"pkg_{as_file}.fc_net:Net", str(tmp_path))
    assert own_class(spec).VERSION == 1  # type: ignore[attr-defined]
    net.write_text("class Net:\n    VERSION = 2\n")
    os.utime(net, ns=(net.stat().st_atime_ns, net.stat().st_mtime_ns + 10**9))  # a later save, whatever the clock
    assert own_class(spec).VERSION == 2  # type: ignore[attr-defined]
