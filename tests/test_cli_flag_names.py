"""A bad command-line value is named as the flag a person typed, and a resumed study's
refusal names only the settings that changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.cli import main
from sweep.search.study import changed_settings


@pytest.mark.parametrize("argv, first_words", [
    (["run", "--seed", "-3"], "sweep run: error: --seed: must be an integer"),
    (["run", "--num-train", "0"], "sweep run: error: --num-train: "),
    (["report", "--study", "../x"], "sweep report: error: --study: '../x' is not allowed"),
    (["ablate", "--keep-probs", "1,2"], "sweep ablate: error: --keep-probs (value 2): must be a number in (0, 1]"),
    (["ablate", "--vary", "keep_prob=0.5"], "sweep ablate: error: --vary keep_prob: keep_prob is the ablation's own"),
    (["ablate", "--vary", "learning_rate=1e-3,zero"], "sweep ablate: error: --vary learning_rate (value 2): must be a number > 0"),
    (["run", "--timeout", "-1"], "sweep run: error: --timeout: must be a number with a unit"),
])
def test_a_bad_flag_value_is_named_as_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], argv: list[str],
                                               first_words: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(first_words) and "command line" not in err and "\n" not in err, err
    assert not list(tmp_path.iterdir())  # nothing created


def test_a_resumed_studys_refusal_lists_only_the_leaves_that_changed() -> None:
    stored = {"num_train": 200, "dataset": "digits",
              "space": {"epochs": 1, "keep_prob": {"low": 0.2, "high": 1.0}}}
    now = {"num_train": 3, "dataset": "digits", "data": {"flip": True},
           "space": {"epochs": 15, "keep_prob": {"low": 0.2, "high": 0.9}}}
    assert changed_settings(stored, now) == [
        ("data", None, {"flip": True}),
        ("num_train", 200, 3),
        ("space.epochs", 1, 15),
        ("space.keep_prob.high", 1.0, 0.9),
    ]
    assert changed_settings(stored, stored) == []
