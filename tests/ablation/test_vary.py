"""`sweep ablate --vary` / `[ablation] vary`: parsing, validation, names that find their cells again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sweep.ablation.grid import Cell, ablation_name, check_grid_size, grid_cells
from sweep.config.factors import cell_levels, level_text, level_value
from sweep.config.sweep_file import AblationConfig, ConfigError, TrainParams, load_config
from sweep_helpers import run_cli

PARAMS = TrainParams(keep_prob=1.0, hidden_dims=(128,), learning_rate=2e-3, normalization="none",
                     weight_scale=0.05, batch_size=50, epochs=6)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_vary_from_the_file_and_the_command_line_give_the_same_grid(tmp_path: Path) -> None:
    path = write(tmp_path, '[ablation]\nvary = {normalization = ["none", "batchnorm"], '
                           'hidden_dims = ["512-512", [1024]], learning_rate = [1e-3, 3e-4]}\n')
    from_file = load_config(path).ablation
    from_cli = load_config(None, {"vary": ["normalization=none,batchnorm", "hidden_dims=512-512,1024",
                                           "learning_rate=1e-3,3e-4"]}).ablation
    assert from_file.vary == from_cli.vary == (
        ("normalization", ("none", "batchnorm")), ("hidden_dims", ((512, 512), (1024,))),
        ("learning_rate", (1e-3, 3e-4)))
    # --vary replaces the file's factors; the sweep file written back reads back equal.
    assert load_config(path, {"vary": ["reg=0,1e-4"]}).ablation.vary == (("reg", (0.0, 1e-4)),)
    cfg = load_config(path)
    again = write(tmp_path, cfg.to_toml())
    assert load_config(again) == cfg


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["normalisation=none,batchnorm"], ["vary.normalisation: unknown key", "did you mean 'normalization'?"]),
        (["keep_prob=1,0.5"], ["vary.keep_prob: keep_prob is the ablation's own factor", "--keep-probs"]),
        (["num_train=100,200"], ["vary.num_train: the training-set size is already a factor", "--sizes"]),
        (["width=64,128"], ["vary.width:", "write hidden_dims, e.g. hidden_dims=512,1024-1024"]),
        (["dropout=0.5,0.25"], ["vary.dropout:", "KEEPING a unit"]),
        (["learning_rate=1e-3,-1"], ["vary.learning_rate[1]: must be a number > 0"]),
        (["batch_size=50,0.5"], ["vary.batch_size[1]: must be an integer >= 1", "'0.5'"]),
        (["normalization=none,groupnorm"], ["vary.normalization[1]: must be one of 'none', 'batchnorm', 'layernorm'"]),
        (["lr_decay=0.9,1.5"], ["vary.lr_decay[1]: must be a number in (0, 1]"]),
        (["hidden_dims=512-abc"], ["vary.hidden_dims[0]: must be hidden sizes like '512-256'"]),
        (["reg=0,0.0"], ["vary.reg: repeats a value"]),
        (["normalization"], ["vary: expected NAME=V1,V2,..."]),
        (["normalization=none", "normalization=batchnorm"], ["vary.normalization: is given twice"]),
    ],
)
def test_a_bad_factor_or_value_is_named(flags: list[str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"vary": flags})
    msg = str(info.value)
    assert msg.startswith("command line: vary"), msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_file_errors_are_keyed_under_ablation_vary(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"s\.toml: ablation\.vary\.update_rule\[1\]: must be one of 'sgd'"):
        load_config(write(tmp_path, '[ablation]\nvary = {update_rule = ["adam", "adagrad"]}\n'))
    with pytest.raises(ConfigError, match=r"ablation\.vary\.hidden_dims: is a list of nets"):
        load_config(write(tmp_path, "[ablation]\nvary = {hidden_dims = [512, 512]}\n"))
    with pytest.raises(ConfigError, match=r"ablation\.vary\.epochs: is varied, so epochs cannot also be fixed"):
        load_config(write(tmp_path, "[ablation]\nepochs = 5\nvary = {epochs = [5, 10]}\n"))


def test_names_without_vary_are_computed_as_before() -> None:
    """Ablations made before --vary keep their parent and cell run names (and so resume and report as before)."""
    grid = AblationConfig(keep_probs=(1.0, 0.5), sizes=(150, 400), seeds=3)
    old_fields = {"p": PARAMS.to_flat(), "k": [1.0, 0.5], "n": [150, 400], "s": 3, "d": "digits"}
    old = "ablation-" + hashlib.sha1(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:8]
    assert ablation_name(PARAMS, grid, "digits") == old
    cells = grid_cells(grid, (150, 400))
    assert [c.run_name for c in cells[:3]] == ["cell-n150-k1-s0", "cell-n150-k0.5-s0", "cell-n150-k1-s1"]
    assert len(cells) == 12 and all(c.levels == () for c in cells)
    assert cells[0].train_params(PARAMS) == PARAMS


def test_cells_with_factors_are_named_tagged_and_found_by_all_their_levels() -> None:
    grid = AblationConfig(keep_probs=(1.0, 0.5), sizes=(150,), seeds=2,
                          vary=(("normalization", ("none", "batchnorm")), ("learning_rate", (1e-3, 3e-4))))
    cells = grid_cells(grid, (150,))
    assert len(cells) == 2 * 2 * 2 * 2 and len(set(cells)) == len(cells)
    c = next(c for c in cells if dict(c.levels) == {"normalization": "batchnorm", "learning_rate": "0.0003"})
    assert c.run_name.startswith("cell-n150-k1-s0@") and "normalization=batchnorm" in c.run_name
    p = c.train_params(PARAMS)
    assert (p.normalization, p.learning_rate, p.keep_prob, p.hidden_dims) == ("batchnorm", 3e-4, 1.0, (128,))
    # What run_cell tags, cell_levels reads back to the same Cell (how a rerun skips it).
    tags = {"ablation.factor." + n: v for n, v in c.levels} | {"ablation.size": "150", "sweep.kind": "cell"}
    assert Cell(c.size, c.keep_prob, c.seed, cell_levels(tags)) == c
    # The name has every level; the order factors are given in does not change it.
    swapped = AblationConfig(keep_probs=(1.0, 0.5), sizes=(150,), seeds=2,
                             vary=(("learning_rate", (3e-4, 1e-3)), ("normalization", ("batchnorm", "none"))))
    plain = AblationConfig(keep_probs=(1.0, 0.5), sizes=(150,), seeds=2)
    assert ablation_name(PARAMS, grid, "digits") == ablation_name(PARAMS, swapped, "digits")
    assert ablation_name(PARAMS, grid, "digits") != ablation_name(PARAMS, plain, "digits")
    assert {c.run_name for c in grid_cells(swapped, (150,))} == {c.run_name for c in cells}


@pytest.mark.parametrize("name, value", [("hidden_dims", (512, 256)), ("learning_rate", 3e-4),
                                         ("learning_rate", 0.1 + 0.2), ("batch_size", 64), ("update_rule", "sgd")])
def test_level_text_reads_back_exactly(name: str, value: object) -> None:
    assert level_value(name, level_text(name, value)) == value


def test_grid_limit_names_its_make_up_and_yes_lifts_it() -> None:
    grid = AblationConfig(keep_probs=(1.0, 0.75, 0.5), sizes=(500, 2000), seeds=10,
                          vary=(("normalization", ("none", "batchnorm", "layernorm")), ("reg", (0.0, 1e-4))))
    with pytest.raises(ValueError, match=r"the ablation grid has 360 cells \(keep_prob 3 x sizes 2 x normalization 3 "
                                         r"x reg 2 x 10 seeds\), more than 200 training runs: pass --yes"):
        check_grid_size(grid, (500, 2000), yes=False)
    assert check_grid_size(grid, (500, 2000), yes=True) == 360


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--vary", "normalisation=none,batchnorm"], "did you mean 'normalization'?"),
        (["--vary", "learning_rate=1e-3,zero"], "--vary learning_rate (value 2): must be a number > 0, got 'zero'"),
        (["--vary", "normalization=none,batchnorm,layernorm", "--vary", "hidden_dims=64,128,256-256",
          "--seeds", "12", "--keep-probs", "1,0.5"], "the ablation grid has 432 cells"),
    ],
)
def test_cli_refuses_in_one_line_with_exit_2_and_records_nothing(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = run_cli(tmp_path, "ablate", "--sizes", "100,300", *args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("sweep ablate: error: ")
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / ".sweep").exists()


def test_the_cifar10_vary_example_runs_without_yes_and_its_width_variant_too() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    for overrides, factor, cells in (({}, ("normalization", ("none", "batchnorm", "layernorm")), 108),
                                     ({"vary": ["hidden_dims=250,1000"]}, ("hidden_dims", ((250,), (1000,))), 72)):
        cfg = load_config(examples / "cifar10-vary.toml", overrides)
        grid = cfg.ablation
        assert grid.vary == (factor,) and grid.keep_probs == (1.0, 0.75, 0.5) and grid.seeds == 12
        sizes = grid.resolved_sizes(cfg.dataset)
        assert check_grid_size(grid, sizes, yes=False) == cells == len(grid_cells(grid, sizes))
