"""`sweep check`: each fixture under tests/fixtures/ diagnosed in the right words, with the right exit code.

The fixtures are small cs231n-style modules: one correct set of layers, one
module per classic mistake (importing the correct layers and replacing one
function), and a cs231n FullyConnectedNet with two broken variants.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from sweep.check.runner import run_check
from sweep.cli import main
from sweep_helpers import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# target -> (exit code, regexes that must each match one FAIL line, regexes that must match an ok line)
CASES = {
    "cs231n_layers": (0, [], [
        r"dropout_forward: p is the KEEP probability \(cs231n convention: dropout_param\['p'\]\)",
        r"batchnorm_backward_alt: dx, dgamma, dbeta match", r"svm_loss: dx matches"]),
    "dropout_writeup": (1, [
        r"^dropout_forward: with p=0\.25 it keeps 7[45]\.\d % of units \(95 % CI 7[45]\.\d–7[45]\.\d %\): p acts as "
        r"a DROP probability, but the docstring \(and cs231n since 2018\) says KEEP$"], [
        r"dropout_forward: inverted dropout", r"dropout_backward: dout times the forward's mask"]),
    "dropout_vanilla": (1, [
        r"^dropout_forward: train mode does not rescale the kept units .* mean drops to 2[45]\.\d % .* divides them "
        r"by the keep probability",
        r"^dropout_forward: in test mode it multiplies x by 0\.250 at p=0\.25"], [
        r"dropout_forward: p is the KEEP probability"]),
    "dropout_new_mask": (1, [
        r"^dropout_backward: its gradient is zero at 7\d\.\d % of the units the forward kept and nonzero at "
        r"2\d\.\d % of those it dropped: it draws a new mask; use the forward's mask from the cache$"], []),
    "dropout_test_active": (1, [
        r"^dropout_forward: in test mode it still drops units \(7\d\.\d % zeroed at p=0\.25\): with "
        r"dropout_param\['mode'\]='test' it must return x unchanged$"], []),
    "dropout_2017": (0, [], [r"dropout_forward: p is the DROP probability, as its docstring says .* the 2017 cs231n"]),
    "batchnorm_biased_backward": (1, [
        r"^batchnorm_forward: train-mode output differs .*: it normalizes with the unbiased variance \(ddof=1, "
        r"divide by N-1\); it must divide by N",
        r"^batchnorm_forward: .* running_var is averaged from the unbiased batch variance",
        r"^batchnorm_backward: it is the gradient of the reference batch norm \(biased variance\), not of this "
        r"module's batchnorm_forward",
        r"^batchnorm_backward_alt: it is the gradient of the reference batch norm"], [
        r"batchnorm_forward: test mode normalizes with running_mean"]),
    "layernorm_batch_axis": (1, [
        r"^layernorm_forward: output differs .*: it normalizes each feature over the batch \(axis 0\), which is "
        r"batch norm; layer norm normalizes each example over its D features \(axis 1\)",
        r"^layernorm_forward: an example's output depends on the other examples in the batch"], [
        r"layernorm_backward: dx, dgamma, dbeta match"]),
    "cs231n_net.py:FullyConnectedNet": (0, [], [
        r"with dropout_keep_ratio=1 \(no dropout\) scores and loss match", r"dropout_keep_ratio=0\.5 changes",
        r"normalization='batchnorm' is applied", r"reg=0\.3 adds 0\.5 \* reg \* sum\(W\*\*2\)",
        r"reg=0\.3, dropout_keep_ratio=0\.5 every gradient matches the numeric one"]),
    "net_ignores_keep_ratio.py:FullyConnectedNet": (1, [
        r"^FullyConnectedNet: dropout_keep_ratio=0\.5 has no effect in train mode: the loss equals the loss without "
        r"dropout .*; the net ignores dropout_keep_ratio$"], []),
    "net_forgets_reg.py:FullyConnectedNet": (1, [
        r"^FullyConnectedNet: reg=0\.3 does not enter the loss: loss\(X, y\) is the same as with reg=0"], []),
}


def _lines(text: str) -> tuple[list[str], list[str]]:
    fails = [line.split("FAIL  ", 1)[1] for line in text.splitlines() if line.startswith("  FAIL  ")]
    oks = [line.split("ok    ", 1)[1] for line in text.splitlines() if line.startswith("  ok    ")]
    return fails, oks


def _check(target: str, model_path: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_check(target, model_path, out=out)
    return code, out.getvalue()


@pytest.mark.parametrize("target", list(CASES))
def test_fixture_is_diagnosed_in_the_right_words(target: str) -> None:
    code, fail_patterns, ok_patterns = CASES[target]
    if target.endswith(":FullyConnectedNet"):  # a file path, as a person would type it
        got, text = _check(str(FIXTURES / target.split(":")[0]) + ":FullyConnectedNet")
    else:  # a module name on --model-path, as for cs231n.layers in ~/assignment2
        got, text = _check(target, str(FIXTURES))
    fails, oks = _lines(text)
    assert got == code, text
    assert len(fails) == len(fail_patterns), f"expected {len(fail_patterns)} problems:\n{text}"
    for pattern in fail_patterns:
        assert any(re.search(pattern, line) for line in fails), f"no FAIL line matches {pattern!r}:\n{text}"
    for pattern in ok_patterns:
        assert any(re.search(pattern, line) for line in oks), f"no ok line matches {pattern!r}:\n{text}"


@pytest.mark.parametrize("target", ["model.layers", "model.net:FullyConnectedNet"])
def test_no_false_alarm_on_this_projects_own_model(target: str) -> None:
    code, text = _check(target)
    fails, oks = _lines(text)
    assert (code, fails) == (0, []), text
    if target == "model.layers":  # its keep_prob convention is recognised and named, for both dropout layers
        for name in ("dropout_forward", "relu_dropout_forward"):
            assert any(line.startswith(f"{name}: keep_prob is the KEEP probability (this project's convention")
                       for line in oks), text
        assert any(line.startswith("batchnorm_backward_alt: dx, dgamma, dbeta match") for line in oks), text


def test_the_check_leaves_numpys_global_rng_and_sys_path_as_they_were() -> None:
    np.random.seed(1234)
    expected = np.random.random(3)
    np.random.seed(1234)
    path = list(sys.path)
    _check("dropout_writeup", str(FIXTURES))
    assert sys.path == path
    assert np.array_equal(np.random.random(3), expected)


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken_layers.py"
    broken.write_text("import numpy as np\ndef dropout_forward(x, p:\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("")
    (tmp_path / "model" / "layers.py").write_text((FIXTURES / "cs231n_layers.py").read_text())
    cases = {
        ("no_such_layers",): r"cannot import no_such_layers: ModuleNotFoundError: No module named 'no_such_layers'",
        (str(broken),): r"cannot import .*broken_layers\.py: SyntaxError: .*line 2\)",
        ("json",): r"json defines none of the cs231n layer functions",
        ("cs231n_net:Net", "--model-path", str(FIXTURES)):
            r"cs231n_net has no class 'Net' \(it defines: FullyConnectedNet\)",
        ("model.solver:Solver",): r"Solver is not a cs231n FullyConnectedNet: its constructor takes no hidden_dims",
        ("cs231n_layers", "--model-path", str(tmp_path / "nope")): r"--model-path .*nope: not a folder",
        # a student's package named like this project's: never check the wrong code silently
        ("model.layers", "--model-path", str(tmp_path)): r"model\.layers is imported from .*/model/layers\.py, not "
                                                         r"from --model-path",
    }
    for argv, pattern in cases.items():
        assert main(["check", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert re.search(r"^sweep check: error: " + pattern, err), err


@pytest.mark.parametrize("args, code", [
    (["cs231n_layers", "--model-path", str(FIXTURES)], 0),
    (["dropout_writeup", "--model-path", str(FIXTURES)], 1),
    (["no_such_layers", "--model-path", str(FIXTURES)], 2),
])
def test_the_real_cli_exit_codes(tmp_path: Path, args: list[str], code: int) -> None:
    proc = run_cli(tmp_path, "check", *args, timeout=120, check=False)
    assert proc.returncode == code, proc.stdout + proc.stderr
    if code == 2:
        assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    else:
        assert proc.stderr == "" and proc.stdout.splitlines()[-1].startswith(("all ", "1 of ")), proc.stdout


def test_a_function_that_raises_is_one_finding_and_the_others_are_still_checked(tmp_path: Path) -> None:
    module = tmp_path / "raising_layers.py"
    module.write_text("from cs231n_layers import *\n\n"
                      "def dropout_forward(x, dropout_param):\n"
                      "    return x * dropout_param['prob'], None\n")
    code, text = _check(f"{module}", str(FIXTURES))
    fails, oks = _lines(text)
    assert code == 1, text
    assert fails == ["dropout_forward: raised KeyError: 'prob' at raising_layers.py:4"], text
    assert any(line.startswith("softmax_loss: loss matches") for line in oks), text
