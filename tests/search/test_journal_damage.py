"""A journal damaged in the middle: one line naming the file, the line and what to do (exit 2).

Real journals made through `sweep.search.study.make_storage` (no training: Optuna trials
told directly), damaged as a person or a bad copy would, then read by the CLI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest

from sweep.search.journal import LINE_KEY
from sweep.search.study import make_storage
from sweep_helpers import SWEEP, sweep_env


def _journal(tmp_path: Path) -> list[str]:
    """A study of 3 finished trials in tmp_path/optuna.journal; returns its lines."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=make_storage(None, tmp_path / "optuna.journal"),
                                study_name="dropout-digits", direction="maximize")
    study.optimize(lambda t: t.suggest_float("keep_prob", 0.2, 1.0), n_trials=3)
    return (tmp_path / "optuna.journal").read_text().splitlines()


def _damage(lines: list[str], how: str) -> list[str]:
    k = 4  # a record in the middle (the first trial's)
    if how == "deleted":
        return lines[:k] + lines[k + 1:]
    if how == "duplicated":
        return [*lines[: k + 1], lines[k], *lines[k + 1:]]
    return [*lines[:k], lines[k].replace('":', '"', 1), *lines[k + 1:]]  # "Expecting ':' delimiter"


@pytest.mark.parametrize("command", ["status", "run"])
@pytest.mark.parametrize(("how", "line", "said"), [("deleted", 5, "deleted"), ("duplicated", 6, "duplicated"),
                                                   ("garbled", 5, "Expecting ':' delimiter")])
def test_a_journal_damaged_mid_file_is_named_with_its_line(
    tmp_path: Path, command: str, how: str, line: int, said: str
) -> None:
    journal = tmp_path / "optuna.journal"
    journal.write_text("\n".join(_damage(_journal(tmp_path), how)) + "\n")
    before = journal.read_bytes()
    args = [command, "--trials", "4", "--epochs", "1", "--jobs", "1"] if command == "run" else [command]
    proc = subprocess.run([*SWEEP, *args], cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True, text=True,
                          timeout=120, check=False)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{journal}: line {line} " in lines[0] and said in lines[0] and "restore it from a copy" in lines[0], lines
    assert journal.read_bytes() == before  # nothing appended to a damaged journal


def test_every_record_carries_its_line_and_plain_optuna_still_reads_it(tmp_path: Path) -> None:
    import json

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    lines = _journal(tmp_path)
    assert [json.loads(x)[LINE_KEY] for x in lines] == list(range(len(lines)))
    plain = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    trials = optuna.load_study(study_name="dropout-digits", storage=plain).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3


def test_a_journal_written_before_numbering_is_read_and_continued(tmp_path: Path) -> None:
    """Old journals (no line numbers) stay readable; new records get the right numbers."""
    import json

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "optuna.journal"
    plain = JournalStorage(JournalFileBackend(str(path)))
    optuna.create_study(storage=plain, study_name="old").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    old = len(path.read_text().splitlines())
    study = optuna.load_study(storage=make_storage(None, path), study_name="old")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    new = [json.loads(x) for x in path.read_text().splitlines()[old:]]
    assert [r[LINE_KEY] for r in new] == list(range(old, old + len(new)))
    assert len(optuna.load_study(storage=make_storage(None, path), study_name="old").trials) == 3
