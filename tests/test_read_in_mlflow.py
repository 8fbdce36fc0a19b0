"""Issue 18, the answer where people read it: `sweep report`'s report.html (every figure inside, the
verdict's words) on disk and beside report.md in MLflow, and the best trial's run saying it is the best.

The browser half (the figures drawn inside MLflow's artifact view) is tests/ui/test_browser.py.
"""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import pytest
from report_page import decoded_pngs, read_page

from sweep_helpers import load_study, mlflow_runs, run_cli


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small digits sweep (no pruning), an ablation of its best trial and the report: (folder, report's stdout)."""
    work = tmp_path_factory.mktemp("read-in-mlflow")
    run_cli(work, "run", "--trials", "6", "--epochs", "2", "--pruner", "none", "--jobs", "2")
    run_cli(work, "ablate", "--sizes", "100", "--seeds", "2", "--keep-probs", "1,0.5", "--epochs", "2", "--jobs", "2")
    return work, run_cli(work, "report").stdout


def test_report_html_on_disk_holds_every_figure_as_a_png_and_the_verdicts_words(store: tuple[Path, str]) -> None:
    from PIL import Image

    work, stdout = store
    folder = work / "reports" / "dropout-digits"
    page = read_page((folder / "report.html").read_text(encoding="utf-8"))
    figures = sorted(folder.rglob("figures/**/*.png"))
    assert len(figures) >= 6, figures  # 3 of the ablation, 3 of the sweep
    embedded = decoded_pngs(page)
    assert sorted(embedded) == sorted(f.read_bytes() for f in figures)  # each figure once, byte for byte
    for png in embedded:
        with Image.open(BytesIO(png)) as img:
            img.load()  # decodes: a whole PNG, not a truncated one
            assert img.format == "PNG" and img.width >= 300 and img.height >= 200, img.size
    # The verdict as report.md has it, markup aside, every line of it; and the opening `sweep report` printed.
    md = (folder / "report.md").read_text(encoding="utf-8")
    verdict = md.split("### Verdict\n", 1)[1].split("![", 1)[0]
    lines = [re.sub(r"^- ", "", s).replace("**", "").replace("`", "").strip() for s in verdict.splitlines()]
    assert len([s for s in lines if s]) >= 3, verdict
    for line in filter(None, lines):
        assert line in page.text, line
    opening = next(s.strip() for s in stdout.splitlines() if s.strip().startswith("In short"))
    assert opening in page.text
    assert stdout.splitlines()[-2].endswith(str(folder / "report.html"))


def test_report_html_is_logged_beside_report_md_on_every_parent(store: tuple[Path, str]) -> None:
    work, _ = store
    client, parents, _ = mlflow_runs(work)
    assert len(parents) == 2  # the study's and the ablation's
    for key, run in parents.items():
        names = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
        assert {"report/report.md", "report/report.html"} <= names, (key, names)
        local = Path(client.download_artifacts(run.info.run_id, "report/report.html", str(work / key.replace(":", "-"))))
        assert local.read_bytes() == (work / "reports" / "dropout-digits" / "report.html").read_bytes()


def test_the_best_trials_run_says_it_is_the_best_with_its_test_accuracy(store: tuple[Path, str]) -> None:
    work, _ = store
    study = load_study(work)
    best, test = study.best_trial, study.user_attrs["best_test_acc"]
    assert test["trial"] == best.number
    _, parents, children = mlflow_runs(work)
    trials = {int(r.data.tags["optuna.trial_number"]): r for r in children if r.data.tags.get("sweep.kind") == "trial"}
    marked = [n for n, r in trials.items() if r.data.tags.get("best_trial_of_study") == "true"]
    assert marked == [best.number]
    tags = trials[best.number].data.tags
    assert tags["test_acc"] == f"{test['acc']:.4f}"
    note = tags["mlflow.note.content"]
    assert note.startswith(f"**Best trial of study dropout-digits** (the highest best val acc of its complete "
                           f"trials): test acc {test['acc']:.4f} ({test['acc'] * 100:.1f} %)"), note
    assert "complete, best val acc" in note  # the trial's own description stays below
    assert parents["study"].data.tags["best_trial"] == str(best.number)
