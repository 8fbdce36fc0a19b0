"""The MLflow UI (and optuna-dashboard) as a person meets it, in a real headless Chromium.

One store made by the real CLI (a small digits sweep Hyperband prunes, a small
`sweep ablate`, `sweep report`), `sweep ui` started as a subprocess on a free
port, and the address it PRINTS opened in Debian's chromium through Playwright.

MLflow UI hooks this relies on (a future MLflow that moves them fails here,
loudly, naming the page):
- runs table: ag-grid rows `[role=row][row-id=<run id>]`; cells
  `[role=gridcell][col-id="attributes.`Run Name`"]` (its `button` expands a
  parent run) and `[col-id=runDateAndNestInfo]` (its `[role=img]` icon is the
  run status: one SVG for FINISHED, another for FAILED and KILLED);
- a run page: `role=tab` "Model metrics" / "Artifacts"; chart sections
  `data-testid=experiment-view-compare-runs-section-header`, charts
  `data-testid=experiment-view-compare-runs-card` titled by a `role=heading`,
  drawn by Plotly (`.js-plotly-plot`, whose `data` holds the drawn points);
- artifacts: `data-testid=artifact-tree-node`, the rendered markdown's
  `role=heading`, the viewer's title (the file's path) and its decoded `img`;
  an `.html` artifact is drawn in `iframe.mlflow-html-iframe` (a `blob:` page,
  `sandbox="allow-scripts"`: ShowArtifactHtmlView), its `img` elements inside;
- the view: sidebar links "Runs" (machine-learning view) vs "Sessions", "Judges",
  "Evaluation runs", "Playground" and the breadcrumb "Evaluations" (GenAI view);
  a run page's "Parent run" link (the parent's name); a row's selection checkbox
  `input.ag-checkbox-input`, the "Compare" button and its page's title
  "Comparing 2 Runs from 1 Experiment";
- optuna-dashboard: the study's name on the home page, its
  `/dashboard/studies/<id>/trials` page ("Trials (List)") and the "<n> Trials" text there.
Screenshots of every page go to the test's tmp folder; their paths are printed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services import ServerProcess, free_port
from sweep_helpers import SWEEP, load_study, mlflow_runs, run_cli, sweep_env

pytestmark = pytest.mark.browser

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (playwright)")
expect = playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CURVES = {"train_acc", "val_acc", "train_loss", "val_loss", "gap", "lr", "epoch_seconds"}
TIMEOUT_MS = 60_000  # a loaded 2-core machine: MLflow's first page load can take a while


class Pages:
    """Screenshots of each page visited, and failures that name the page."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page, self.folder, self.shots = page, folder, []

    def shot(self, name: str) -> Path:
        path = self.folder / f"{len(self.shots):02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        print(f"screenshot: {path}")
        return path

    def check(self, name: str, what: str, locator: Any, **kwargs: Any) -> None:
        """expect(locator).to_be_visible(), failing with 'page NAME: WHAT missing'."""
        try:
            expect(locator).to_be_visible(timeout=kwargs.get("timeout", TIMEOUT_MS))
        except AssertionError as exc:
            self.shot(f"{name}-FAILED")
            raise AssertionError(f"page {name!r}: {what} missing ({exc})") from None


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a real sweep (some trials pruned), an ablation and a report."""
    work = tmp_path_factory.mktemp("ui-store")
    run_cli(work, "run", "--trials", "12", "--epochs", "6", "--jobs", "2")
    run_cli(work, "ablate", "--sizes", "100", "--seeds", "2", "--keep-probs", "1,0.5", "--epochs", "3", "--jobs", "2")
    (work / "report.out").write_text(run_cli(work, "report").stdout)  # its closing lines: the MLflow link
    states = [t.state.name for t in load_study(work).trials]
    assert "PRUNED" in states and "COMPLETE" in states, f"the sweep should have pruned and complete trials: {states}"
    return work


@pytest.fixture(scope="module")
def ui(store: Path) -> Iterator[str]:
    """`sweep ui --study dropout-digits --port P` as a person runs it; yields the runs-table address it printed."""
    port = free_port()
    server = ServerProcess("sweep ui", [*SWEEP, "ui", "--study", "dropout-digits", "--port", str(port)],
                           port=port, health_path="/health", log_path=store / "sweep-ui.log",
                           env=sweep_env(store), cwd=store)
    server.start(timeout=180)
    try:
        # `sweep ui` prints once ITS check of the server answers, which may come a poll after ours.
        deadline = time.monotonic() + 60
        while not (printed := re.search(r"open (http://\S+)", server.log())) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert printed, f"`sweep ui` printed no address:\n{server.log()}"
        yield printed.group(1)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def pages(browser: Any, tmp_path: Path) -> Iterator[Pages]:
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield Pages(page, tmp_path)
    context.close()


def status_icon(row: Any) -> str:
    """The path data of a runs-table row's status icon (FINISHED and FAILED/KILLED differ)."""
    icon = row.locator("[role=gridcell][col-id=runDateAndNestInfo] [role=img]").first
    return icon.locator("svg path").first.get_attribute("d")


def failure_icon(pages: Pages, store: Path, address: str) -> tuple[str, str]:
    """(FINISHED icon, FAILED icon) as this MLflow draws them, learnt from a reference experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ui-reference")
    exp_id = exp.experiment_id if exp else client.create_experiment("ui-reference")
    ids = {}
    for status in ("FINISHED", "FAILED"):
        run = client.create_run(exp_id, run_name=f"reference-{status.lower()}")
        client.set_terminated(run.info.run_id, status)
        ids[status] = run.info.run_id
    base = address.split("/#/")[0]
    pages.page.goto(f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning")
    icons = []
    for status, run_id in ids.items():
        row = pages.page.locator(f"[role=row][row-id='{run_id}']").first
        pages.check("reference runs table", f"the {status} reference run's row", row)
        icons.append(status_icon(row))
    assert icons[0] != icons[1], "MLflow draws FINISHED and FAILED runs with the same icon?"
    return icons[0], icons[1]


def test_the_mlflow_ui_as_a_person_meets_it(store: Path, ui: str, pages: Pages) -> None:
    client, parents, children = mlflow_runs(store)
    study = load_study(store)
    trials = {r.info.run_id: r for r in children if r.data.tags.get("sweep.kind") == "trial"}
    state_of = {rid: r.data.tags["state"] for rid, r in trials.items()}
    failed = {rid for rid, s in state_of.items() if s == "FAIL"}
    assert len(trials) == len(study.trials)
    finished_icon, failed_icon = failure_icon(pages, store, ui)
    page = pages.page

    # 1. The address `sweep ui` printed: the runs table, with the study's parent run; expand it.
    page.goto(ui)
    parent_id = parents["study"].info.run_id
    parent_row = page.locator(f"[role=row][row-id='{parent_id}']").first
    pages.check("runs table", "the study's parent run 'study dropout-digits'", parent_row.get_by_text("study dropout-digits"))
    pages.check("runs table", "the keep_prob column (the project's table view)",
                page.get_by_role("columnheader", name="keep_prob").first)
    parent_row.locator("[role=gridcell][col-id='attributes.`Run Name`'] button").first.click()
    icons: dict[str, str] = {}
    for rid, run in sorted(trials.items(), key=lambda kv: kv[1].info.run_name):
        row = page.locator(f"[role=row][row-id='{rid}']").first
        pages.check("runs table (parent expanded)", f"the row of {run.info.run_name}", row.get_by_text(run.info.run_name))
        icons[rid] = status_icon(row)
    pages.shot("runs-table")
    assert len(icons) == len(study.trials)
    drawn_failed = {rid for rid, d in icons.items() if d == failed_icon}
    assert drawn_failed == failed, {trials[r].info.run_name: state_of[r] for r in drawn_failed ^ failed}
    for rid, d in icons.items():
        if state_of[rid] in ("COMPLETE", "PRUNED"):
            assert d == finished_icon, f"runs table: {trials[rid].info.run_name} ({state_of[rid]}) has no finished icon"
    print(f"runs table: {len(icons)} trial rows, {len(drawn_failed)} drawn failed, {len(failed)} FAILED trials, "
          f"{sum(s == 'PRUNED' for s in state_of.values())} pruned")

    # 2. A pruned and a complete trial's metrics page: the first section is the curves,
    #    val_acc with one point per epoch trained.
    pruned = max((r for r in trials.values() if r.data.tags["state"] == "PRUNED"),
                 key=lambda r: int(r.data.tags["pruned_at_epoch"]))
    complete = next(r for r in trials.values() if r.data.tags["state"] == "COMPLETE")
    for run in (pruned, complete):
        name = f"{run.info.run_name} ({run.data.tags['state'].lower()}) model metrics"
        page.goto(ui)
        parent_row = page.locator(f"[role=row][row-id='{parent_id}']").first
        pages.check("runs table", "the study's parent run", parent_row)
        parent_row.locator("[role=gridcell][col-id='attributes.`Run Name`'] button").first.click()
        link = page.locator(f"[role=row][row-id='{run.info.run_id}'] a[href*='{run.info.run_id}']").first
        pages.check("runs table (parent expanded)", f"the link to {run.info.run_name}", link)
        link.click()
        pages.check(f"{run.info.run_name} overview", "its description (mlflow.note.content)",
                    page.get_by_text(run.data.tags["mlflow.note.content"].split("\n\n")[-1]).first)
        page.get_by_role("tab", name="Model metrics").click()
        sections = page.get_by_test_id("experiment-view-compare-runs-section-header")
        pages.check(name, "a chart section", sections.first)
        assert sections.first.inner_text().startswith("Model metrics"), \
            f"page {name!r}: the first section is {sections.all_inner_texts()!r}, not the curves"
        cards = page.get_by_test_id("experiment-view-compare-runs-card")
        pages.check(name, "the val_acc chart", cards.get_by_role("heading", name="val_acc", exact=True))
        titles = cards.get_by_role("heading").all_inner_texts()
        first_section = titles[: len(CURVES)]
        assert set(first_section) == CURVES, f"page {name!r}: first charts {first_section}, expected the curves"
        val_card = cards.filter(has=page.get_by_role("heading", name="val_acc", exact=True)).first
        val_card.scroll_into_view_if_needed()
        plot = val_card.locator(".js-plotly-plot").first
        page.wait_for_function("el => el.data && el.data.length && el.data[0].x && el.data[0].x.length > 0",
                               arg=plot.element_handle())
        steps = plot.evaluate("el => el.data[0].x")
        epochs = len(client.get_metric_history(run.info.run_id, "val_acc"))
        expected = int(run.data.tags.get("pruned_at_epoch") or run.data.params["epochs"])
        assert steps == list(range(1, expected + 1)) and epochs == expected, \
            f"page {name!r}: val_acc drawn at steps {steps}, trained {expected} epochs"
        pages.shot(f"{run.info.run_name}-model-metrics")
        print(f"{name}: first section {sorted(first_section)}, val_acc {len(steps)} points")

    # The best trial's Overview says so, with its test accuracy (its description's first line).
    [best] = [r for r in trials.values() if r.data.tags.get("best_trial_of_study") == "true"]
    page.goto(ui.split("?")[0] + f"/{best.info.run_id}?workflowType=machine_learning")
    name = f"{best.info.run_name} overview (the best trial)"
    pages.check(name, "'Best trial of study dropout-digits' in its description",
                page.get_by_text("Best trial of study dropout-digits", exact=True).first)
    pages.check(name, "its test accuracy", page.get_by_text(f"test acc {best.data.tags['test_acc']}").first)
    pages.shot("best-trial-overview")

    # 3. The ablation's parent, and the report in its artifact viewer: report.md and a figure.
    [abl_key] = [k for k in parents if k.startswith("ablation:")]
    ablation = parents[abl_key]
    page.goto(ui)
    link = page.locator(f"[role=row][row-id='{ablation.info.run_id}'] a[href*='{ablation.info.run_id}']").first
    pages.check("runs table", f"the ablation parent {ablation.info.run_name}", link)
    link.click()
    pages.check(f"{ablation.info.run_name} overview", "the ablation's description",
                page.get_by_text("Seed-paired ablation").first)
    page.get_by_role("tab", name="Artifacts").click()
    tree = page.get_by_test_id("artifact-tree-node")
    name = f"{ablation.info.run_name} artifacts"
    pages.check(name, "the report folder", tree.get_by_text("report", exact=True).first)
    tree.get_by_text("report", exact=True).first.click()
    tree.get_by_text("report.md", exact=True).first.click()
    pages.check(name, "the report's title", page.get_by_role("heading", name=re.compile("Does dropout regularize")))
    pages.shot("ablation-report-md")
    tree.get_by_text("figures", exact=True).first.click()
    tree.get_by_text(abl_key.removeprefix("ablation:"), exact=True).first.click()
    tree.get_by_text("learning_curves.png", exact=True).first.click()
    figure = f"report/figures/{abl_key.removeprefix('ablation:')}/learning_curves.png"
    pages.check(name, f"the viewer's title {figure}", page.get_by_text(figure, exact=True).first)
    try:  # the PNG itself, decoded (the viewer's only raster image; icons are SVG)
        page.wait_for_function("() => [...document.images].some(i => i.complete && i.naturalWidth >= 300)")
    except playwright_sync.Error as exc:
        pages.shot(f"{name}-FAILED")
        raise AssertionError(f"page {name!r}: the learning-curves image missing ({exc})") from None
    pages.shot("ablation-report-figure")


def assert_report_figures_drawn(pages: Pages, name: str, figures: list[Path]) -> None:
    """The page shows report.html in MLflow's HTML viewer, every one of `figures` decoded inside its iframe."""
    from PIL import Image

    page = pages.page
    iframe = page.locator("iframe.mlflow-html-iframe").first
    pages.check(name, "the HTML viewer's iframe", iframe)
    inside = page.frame_locator("iframe.mlflow-html-iframe").first
    pages.check(name, "the report's title inside the iframe",
                inside.get_by_role("heading", name=re.compile("Does dropout regularize")).first)
    pages.check(name, "the verdict inside the iframe", inside.get_by_text(re.compile(r"^In short \(")).first)
    frame = iframe.element_handle().content_frame()
    assert frame is not None, f"page {name!r}: the HTML viewer's iframe has no document"
    try:  # every figure decoded, none broken (a broken <img> is complete with naturalWidth 0)
        frame.wait_for_function("n => document.images.length === n && "
                                "[...document.images].every(i => i.complete && i.naturalWidth > 0)", arg=len(figures))
    except playwright_sync.Error as exc:
        pages.shot(f"{name}-FAILED")
        raise AssertionError(f"page {name!r}: not all {len(figures)} figures drawn in the iframe ({exc})") from None
    drawn = frame.evaluate("() => [...document.images].map(i => [i.naturalWidth, i.naturalHeight])")
    on_disk = []
    for f in figures:
        with Image.open(f) as img:
            on_disk.append([img.width, img.height])
    assert sorted(drawn) == sorted(on_disk), f"page {name!r}: drawn {drawn}, figures on disk {on_disk}"
    inside.locator("img").last.scroll_into_view_if_needed()
    print(f"{name}: {len(drawn)} figures drawn inside MLflow's HTML viewer, sizes {drawn}")


def test_the_report_reads_in_mlflow_with_its_figures(store: Path, ui: str, pages: Pages) -> None:
    """report.html in MLflow's artifact view: at the address `sweep report` printed, and clicked to from the
    ablation's parent run; its figures are data: URIs, the one thing the viewer's sandboxed blob: page loads."""
    figures = sorted((store / "reports" / "dropout-digits" / "figures").rglob("*.png"))
    assert len(figures) >= 5, figures
    printed = re.search(r"in MLflow: (http://\S+)", (store / "report.out").read_text())
    assert printed, (store / "report.out").read_text()
    page = pages.page
    page.goto(ui.split("/#/")[0] + "/#/" + printed.group(1).split("/#/", 1)[1])  # `sweep ui`'s port
    name = "report.html at the address sweep report printed"
    assert_report_figures_drawn(pages, name, figures)
    assert_machine_learning_view(pages, name)
    pages.shot("report-html-printed-link")

    _, parents, _ = mlflow_runs(store)
    [ablation] = [r for k, r in parents.items() if k.startswith("ablation:")]
    page.goto(ui)
    link = page.locator(f"[role=row][row-id='{ablation.info.run_id}'] a[href*='{ablation.info.run_id}']").first
    pages.check("runs table", f"the ablation parent {ablation.info.run_name}", link)
    link.click()
    page.get_by_role("tab", name="Artifacts").click()
    tree = page.get_by_test_id("artifact-tree-node")
    name = f"{ablation.info.run_name} artifacts, report.html"
    pages.check(name, "the report folder", tree.get_by_text("report", exact=True).first)
    tree.get_by_text("report", exact=True).first.click()
    tree.get_by_text("report.html", exact=True).first.click()
    assert_report_figures_drawn(pages, name, figures)
    pages.shot("ablation-report-html")


def test_optuna_dashboard_shows_the_study_and_its_trials(store: Path, optuna_dashboard: Any, pages: Pages) -> None:
    n = len(load_study(store).trials)
    url = optuna_dashboard(str(store / "optuna.journal"))
    page = pages.page
    page.goto(f"{url}/dashboard")
    pages.check("optuna-dashboard home", "the study dropout-digits", page.get_by_text("dropout-digits").first)
    pages.shot("optuna-dashboard-home")
    page.get_by_text("dropout-digits").first.click()
    page.wait_for_url(re.compile(r"/dashboard/studies/\d+"))
    page.goto(page.url.split("?")[0] + "/trials")  # the "Trials (List)" page (its menu entry is an icon)
    pages.check("optuna-dashboard trials", f"'{n} Trials'", page.get_by_text(f"{n} Trials", exact=True).first)
    pages.shot("optuna-dashboard-trials")


# Sidebar entries and words only MLflow's GenAI view shows (its ML view has Runs, Models, Traces).
GENAI_LINKS = ("Sessions", "Judges", "Evaluation runs", "Playground")


def assert_machine_learning_view(pages: Pages, name: str) -> None:
    """The page (already loaded) is in MLflow's machine-learning view: its sidebar, no GenAI wording."""
    page = pages.page
    runs_link = page.get_by_role("link", name="Runs", exact=True)
    either = runs_link.or_(page.get_by_role("link", name="Sessions", exact=True))
    pages.check(name, "a sidebar (either view's)", either.first)
    shown = [w for w in GENAI_LINKS if page.get_by_role("link", name=w, exact=True).count()]
    shown += ["Evaluations"] if page.get_by_text("Evaluations", exact=True).count() else []
    if shown:
        pages.shot(f"{name}-GENAI")
        raise AssertionError(f"page {name!r} is in MLflow's GenAI view: shows {shown} ({page.url})")
    pages.check(name, "the machine-learning sidebar's 'Runs' link", runs_link.first)


def test_every_page_a_person_clicks_to_stays_in_the_machine_learning_view(store: Path, ui: str, pages: Pages) -> None:
    """Runs table -> a trial -> its parent -> back to the table -> Compare -> the experiment: no GenAI view.

    MLflow 3.17 picks the view from `?workflowType=` or else the browser's
    stored choice (default GenAI), and its own links drop the parameter;
    `sweep ui` serves MLflow with the stored choice set (sweep/mlflow_app.py).
    A fresh browser context: nothing stored beforehand.
    """
    _, parents, children = mlflow_runs(store)
    parent_id = parents["study"].info.run_id
    trial = sorted((r for r in children if r.data.tags.get("sweep.kind") == "trial"), key=lambda r: r.info.run_name)
    first, second = trial[0], trial[1]
    page = pages.page

    page.goto(ui)
    parent_row = page.locator(f"[role=row][row-id='{parent_id}']").first
    pages.check("runs table", "the study's parent run", parent_row)
    parent_row.locator("[role=gridcell][col-id='attributes.`Run Name`'] button").first.click()
    link = page.locator(f"[role=row][row-id='{first.info.run_id}'] a[href*='{first.info.run_id}']").first
    pages.check("runs table (parent expanded)", f"the link to {first.info.run_name}", link)
    link.click()  # 1. into a trial
    name = f"{first.info.run_name} (clicked from the runs table)"
    own_note = first.data.tags["mlflow.note.content"].split("\n\n")[-1]  # below the best trial's line, if any
    pages.check(name, "its description", page.get_by_text(own_note).first)
    assert_machine_learning_view(pages, name)
    pages.shot("clicked-trial")

    page.get_by_role("link", name="study dropout-digits", exact=True).first.click()  # 2. into the parent
    name = "study dropout-digits (clicked from the trial's 'Parent run')"
    page.wait_for_url(re.compile(rf"/runs/{parent_id}"))
    pages.check(name, "its heading", page.get_by_role("heading", name="study dropout-digits").first)
    assert_machine_learning_view(pages, name)
    pages.shot("clicked-parent")

    page.get_by_role("link", name="Runs", exact=True).first.click()  # 3. back to the table, Compare two trials
    parent_row = page.locator(f"[role=row][row-id='{parent_id}']").first
    pages.check("runs table (from the sidebar)", "the study's parent run", parent_row)
    assert_machine_learning_view(pages, "runs table (from the sidebar)")
    if not page.locator(f"[role=row][row-id='{first.info.run_id}']").count():
        parent_row.locator("[role=gridcell][col-id='attributes.`Run Name`'] button").first.click()
    for run in (first, second):
        row = page.locator(f"[role=row][row-id='{run.info.run_id}']").first
        pages.check("runs table (from the sidebar)", f"the row of {run.info.run_name}", row)
        row.locator("input[type=checkbox].ag-checkbox-input").first.click()
    page.get_by_role("button", name="Compare", exact=True).first.click()
    name = "Compare (2 trials)"
    pages.check(name, "its title", page.get_by_text("Comparing 2 Runs from 1 Experiment").first)
    assert_machine_learning_view(pages, name)
    pages.shot("clicked-compare")

    exp_id = parents["study"].info.experiment_id  # 4. the breadcrumb to the experiment (not the sidebar's list link)
    page.locator(f"a[href*='experiments/{exp_id}']").filter(has_text=re.compile(r"^dropout-digits$")).first.click()
    name = "dropout-digits (the Compare page's breadcrumb)"
    parent_row = page.locator(f"[role=row][row-id='{parent_id}']").first
    pages.check(name, "the study's parent run in the runs table", parent_row)
    assert_machine_learning_view(pages, name)
    pages.shot("clicked-experiment")
