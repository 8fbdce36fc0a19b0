"""`sweep report`: what did dropout do? Statistics, figures and a verdict from the recorded runs.

Reads everything back from where the runs were recorded (MLflow for the
ablation cells and their curves, the Optuna study for the sweep), so a report
can be rebuilt at any time and checked against the runs. Writes
`<out>/report.md` with PNG figures, and the same as one page with the figures
inside, `<out>/report.html` (sweep.reporting.html: what MLflow's artifact view
renders), and logs the folder as an artifact of each parent run (the study's
and every ablation's).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from sweep.analysis.factorial import FactorialSummary, summarize_factorial
from sweep.analysis.stats import AblationSummary, Cell, summarize
from sweep.config.factors import parse_vary_text
from sweep.config.sweep_file import SweepConfig

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Run

REPORT_ARTIFACT_PATH = "report"


@dataclass
class AblationRuns:
    """One ablation parent run with its cells as read from MLflow."""

    name: str
    parent_run_id: str
    params: dict[str, str]
    cells: list[Cell]
    unusable: list[str]  # run names left out, with why
    status: str = "FINISHED"  # the parent run's MLflow status (RUNNING while its `sweep ablate` runs)
    cells_trained: int = 0  # cells that need no rerun (finished, or diverged)
    cells_expected: int = 0  # the grid's cells, from the parent's params (0: not known)

    def unfinished(self) -> str | None:
        """'ablation unfinished: N of M cells trained (...)', or None when every cell is trained."""
        if self.status != "RUNNING" and self.cells_trained >= self.cells_expected:
            return None
        why = ("its parent run is RUNNING: its `sweep ablate` is still training, or was killed and the same "
               "command finishes it" if self.status == "RUNNING"
               else f"its `sweep ablate` ended {self.status}; run the same command again to train the rest")
        return (f"ablation unfinished: {self.cells_trained} of {self.cells_expected or '?'} cells trained "
                f"({why}); the numbers below are from the cells trained so far")


def cells_from_runs(client: MlflowClient, runs: list[Run]) -> tuple[list[Cell], list[str]]:
    """Finished cell runs -> stats.Cell records (with their per-epoch curves)."""
    from sweep.config.factors import cell_levels

    cells: list[Cell] = []
    unusable: list[str] = []
    latest: dict[tuple[Any, ...], Any] = {}
    from sweep.tracking.store import run_state, summary_metrics

    for r in runs:
        state = run_state(r)
        if state != "COMPLETE":
            reason = r.data.tags.get("failure_reason", state.lower())
            unusable.append(f"{r.info.run_name}: {reason}")
            continue
        t = r.data.tags
        key = (int(t["ablation.size"]), float(t["ablation.keep_prob"]), int(t["ablation.seed"]), cell_levels(t))
        if key not in latest or r.info.start_time > latest[key].info.start_time:
            latest[key] = r  # a cell re-run after an interruption: the newest finished one counts
    for (size, keep, seed, levels), r in sorted(latest.items()):
        m = summary_metrics(r)  # tags summary/<name>, or the metrics of stores written before
        train = client.get_metric_history(r.info.run_id, "train_acc")
        val = client.get_metric_history(r.info.run_id, "val_acc")
        train_by_step, val_by_step = _newest_per_step(train), _newest_per_step(val)
        epochs = sorted(step for step in val_by_step if step in train_by_step)
        cells.append(
            Cell(
                size=size, keep_prob=keep, seed=seed,
                best_val_acc=m["best_val_acc"], final_train_acc=m["final_train_acc"],
                final_val_acc=m["final_val_acc"], gap=m["final_gap"], val_loss=m["final_val_loss"],
                epochs=epochs, train_acc=[train_by_step[e] for e in epochs], val_acc=[val_by_step[e] for e in epochs],
                levels=levels,
            )
        )
    return cells, unusable


def _newest_per_step(history: list[Any]) -> dict[int, float]:
    """step -> value of a metric history. A cell continued after its `sweep ablate` was killed keeps
    its MLflow run, with the killed attempt's points in it too: the newest point of each step wins."""
    return {h.step: h.value for h in sorted(history, key=lambda h: h.timestamp)}


def expected_cells(params: dict[str, str]) -> int:
    """How many cells the grid in an ablation parent's params has (0 if they do not say)."""
    if params.get("until"):  # --until-decided: as many cells as the rule asked for; `seeds` is only the cap
        return 0
    try:
        n = len(params["keep_probs"].split(",")) * len(params["sizes"].split(",")) * int(params["seeds"])
    except (KeyError, ValueError):
        return 0
    for _, values in parse_vary_text(params.get("vary", "")):
        n *= len(values)
    return n


def load_ablations(client: MlflowClient, experiment_id: str, study_key: str | None = None) -> list[AblationRuns]:
    """The ablations of the study whose key is `study_key` (None: of a study from before keys, or of none)."""
    from sweep.ablation.grid import finished_cells
    from sweep.paths import STUDY_KEY_TAG
    from sweep.tracking.store import PARENT_KEY_TAG, child_runs

    parents = client.search_runs(
        [experiment_id], filter_string="tags.`sweep.kind` = 'ablation'", order_by=["attributes.start_time ASC"]
    )
    out = []
    for p in parents:
        if p.data.tags.get(STUDY_KEY_TAG) != study_key:  # another study of this name
            continue
        runs = child_runs(client, experiment_id, p.info.run_id)
        cells, unusable = cells_from_runs(client, runs)
        name = p.data.tags.get(PARENT_KEY_TAG, "").removeprefix("ablation:") or p.info.run_name
        out.append(AblationRuns(name, p.info.run_id, dict(p.data.params), cells, unusable, p.info.status,
                                len(finished_cells(runs)), expected_cells(p.data.params)))
    return out


def _md_image(path: Path, out_dir: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(out_dir).as_posix()})\n"


def search_history(trials: list[Any]) -> list[Any]:
    """Complete and pruned trials as plots.HistoryPoint, in order of their end.

    A pruned trial's value is its best reported validation accuracy; its time and
    every other's are minutes from the first trial's start to the trial's end.
    """
    from sweep.reporting.figures import HistoryPoint

    started = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not started:
        return []
    t0 = min(started)
    points = []
    for t in trials:
        if t.datetime_complete is None or t.state.name not in ("COMPLETE", "PRUNED"):
            continue
        if t.state.name == "COMPLETE":
            value = t.value
        elif t.intermediate_values:
            value = max(t.intermediate_values.values())
        else:  # pruned before reporting anything: nothing to draw
            continue
        points.append(HistoryPoint(t.number, t.state.name, float(value),
                                   (t.datetime_complete - t0).total_seconds() / 60.0))
    return sorted(points, key=lambda p: (p.minutes, p.number))


def _sweep_section(cfg: SweepConfig, study: optuna.Study, out_dir: Path) -> str:
    from sweep.analysis.importance import keep_prob_importance, trend_vs_keep_prob
    from sweep.config.display import readable_params
    from sweep.reporting.figures import plot_history, plot_importances, plot_sweep_scatter

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    lines = [f"## Sweep: study `{study.study_name}`\n",
             f"{len(trials)} trials ({', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))}).\n"]
    try:
        best = study.best_trial
        assert best.value is not None  # a completed trial's
        lines.append(f"Best validation accuracy {best.value * 100:.1f} % (trial {best.number}: "
                     f"{', '.join(f'{k}={v}' for k, v in sorted(readable_params(best.params, cfg.space).items()))}).\n")
        test = study.user_attrs.get("best_test_acc")
        if test and test.get("trial") == best.number:
            lines.append(f"Its test accuracy, evaluated once after the sweep: {test['acc'] * 100:.1f} %.\n")
    except ValueError:
        lines.append("No completed trial yet.\n")
    from sweep.reporting.verdict import sweep_baseline_note  # issue 18: say when the sweep never ran keep 1.0

    note = sweep_baseline_note([float(t.params["keep_prob"]) for t in trials
                                if "keep_prob" in t.params and t.state.name in ("COMPLETE", "PRUNED")])
    lines.append(f"{note}\n" if note else "")
    history = search_history(trials)
    if history:
        lines.append("\n### Search progress\n\n")
        lines.append(_md_image(plot_history(history, out_dir / "figures" / "sweep_history.png"), out_dir,
                               "best validation accuracy so far against wall time and trial number"))
    importances = keep_prob_importance(study, seed=cfg.seed)
    lines.append("\n### How much does keep_prob matter?\n")
    lines.append("| target | evaluator | keep_prob importance | rank | trials | note |\n|---|---|---|---|---|---|\n")
    for target, by_eval in importances.items():
        for evaluator, res in by_eval.items():
            imp = res.importances.get("keep_prob")
            rank = res.rank("keep_prob")
            lines.append(f"| {target} | {evaluator} | {'' if imp is None else f'{imp:.3f}'} | "
                         f"{'' if rank is None else f'{rank}/{len(res.importances)}'} | {res.n_trials} | {res.note} |\n")
    lines.append("\n(`value` = best validation accuracy of a trial; `gap` = its final train − val accuracy.)\n\n")
    fig_dir = out_dir / "figures"
    if any(res.importances for by_eval in importances.values() for res in by_eval.values()):
        lines.append(_md_image(plot_importances(importances, fig_dir / "importances.png"), out_dir, "importances"))
    points = trend_vs_keep_prob(study)
    if points:
        lines.append(_md_image(plot_sweep_scatter(points, fig_dir / "sweep_keep_prob.png"), out_dir,
                               "validation accuracy and gap against keep_prob over the sweep"))
    return "".join(lines)


# What the intervals are about, by how the ablation drew its training rows
# (parent runs from before the option have no `subsets` param: they were "fixed").
_SUBSET_NOTES = {
    "fixed": "Training rows: every seed trains on the same subset of each size, so the intervals "
             "cover init, batch order and masks, and the verdict is about these rows "
             "(`sweep ablate --subsets per-seed` draws them afresh per seed).",
    "per-seed": "Training rows: each seed draws its own subset of each size (shared by its keep_probs), "
                "so the intervals also cover which rows were drawn.",
}


def _ablation_section(ab: AblationRuns, summary: AblationSummary | None, out_dir: Path) -> str:
    from sweep.reporting.figures import plot_benefit_vs_size, plot_gap_vs_keep_prob, plot_learning_curves
    from sweep.reporting.verdict import summary_markdown_tables, verdict

    p = ab.params
    lines = [f"## Ablation `{ab.name}`\n",
             f"Configuration: hidden {p.get('hidden_dims')}, normalization {p.get('normalization')}, "
             f"lr {p.get('learning_rate')}, {p.get('update_rule')}, batch {p.get('batch_size')}, "
             f"{p.get('epochs')} epochs; keep_prob {p.get('keep_probs')} x sizes {p.get('sizes')} x "
             f"{p.get('seeds')} seeds on {p.get('dataset')} (MLflow parent run `{ab.parent_run_id}`).\n\n",
             _SUBSET_NOTES[p.get("subsets", "fixed")] + "\n\n"]
    if ab.unfinished():
        lines.append(f"**{ab.unfinished()}.**\n\n")
    if ab.unusable:
        lines.append(f"Left out ({len(ab.unusable)} runs): " + "; ".join(ab.unusable) + "\n\n")
    if summary is None:
        lines.append("No finished cells yet.\n")
        return "".join(lines)
    lines.append("### Verdict\n\n" + verdict(summary) + "\n\n")
    fig_dir = out_dir / "figures" / ab.name
    lines.append(_md_image(plot_learning_curves(summary, fig_dir / "learning_curves.png"), out_dir, "learning curves"))
    lines.append(_md_image(plot_gap_vs_keep_prob(summary, fig_dir / "gap_vs_keep_prob.png"), out_dir, "gap"))
    lines.append(_md_image(plot_benefit_vs_size(summary, fig_dir / "benefit_vs_size.png"), out_dir, "benefit"))
    lines.append("\n### Numbers\n\n" + summary_markdown_tables(summary) + "\n")
    return "".join(lines)


def _factorial_section(ab: AblationRuns, fs: FactorialSummary, out_dir: Path) -> str:
    """The section of an ablation with --vary: overview, interactions, every level, figures and tables."""
    from sweep.reporting.factorial_verdict import factorial_tables, factorial_verdict, ordered_label
    from sweep.reporting.figures import plot_benefit_by_level, plot_learning_curves
    from sweep.reporting.verdict import summary_markdown_tables

    p = ab.params
    varied = "; ".join(f"{n} {', '.join(levels)}" for n, levels in fs.factors)
    config = (f"Configuration: hidden {p.get('hidden_dims')}, normalization {p.get('normalization')}, "
              f"lr {p.get('learning_rate')}, {p.get('update_rule')}, batch {p.get('batch_size')}, "
              f"{p.get('epochs')} epochs, except where varied; keep_prob {p.get('keep_probs')} x sizes "
              f"{p.get('sizes')} x {p.get('seeds')} seeds on {p.get('dataset')}, varied: {varied} "
              f"(MLflow parent run `{ab.parent_run_id}`).\n\n")
    lines = [f"## Ablation `{ab.name}`\n", config, _SUBSET_NOTES[p.get("subsets", "fixed")] + "\n\n"]
    if ab.unfinished():
        lines.append(f"**{ab.unfinished()}.**\n\n")
    if ab.unusable:
        lines.append(f"Left out ({len(ab.unusable)} runs): " + "; ".join(ab.unusable) + "\n\n")
    lines.append("### Verdict\n\n" + factorial_verdict(fs) + "\n")
    fig_dir = out_dir / "figures" / ab.name
    lines.append(_md_image(plot_benefit_by_level(fs, fig_dir / "benefit_by_level.png"), out_dir,
                           "dropout's benefit against keep_prob, one line per level"))
    for i, lv in enumerate(fs.levels):
        lines.append(_md_image(plot_learning_curves(fs.per_level[lv], fig_dir / f"learning_curves_{i}.png"), out_dir,
                               f"learning curves, {ordered_label(fs, lv)}"))
    # Headings one level down: they sit under "### Numbers" (and each level's under its own heading).
    lines.append("\n### Numbers\n\n" + factorial_tables(fs).replace("### ", "#### ", 1) + "\n")
    for lv in fs.levels:
        tables = summary_markdown_tables(fs.per_level[lv]).replace("### ", "##### ")
        lines.append(f"#### {ordered_label(fs, lv)}\n\n" + tables + "\n")
    return "".join(lines)


@dataclass
class ReportWritten:
    """What `write_report` did, for the lines `sweep report` ends with (sweep.closing)."""

    experiment_id: str | None = None
    run_ids: list[str] = field(default_factory=list)  # parent runs holding the report (the study's last)
    openings: list[tuple[str, str]] = field(default_factory=list)  # (ablation, its verdict's first paragraph)


def verdict_opening(ab: AblationRuns, summary: AblationSummary | FactorialSummary | None) -> str:
    """The first paragraph of an ablation's verdict (its overview), after the unfinished line if any."""
    from sweep.reporting.factorial_verdict import factorial_verdict
    from sweep.reporting.verdict import verdict

    if summary is None:
        text = "No finished cells yet."
    elif isinstance(summary, FactorialSummary):
        text = factorial_verdict(summary).split("\n\n")[0]
    else:
        text = verdict(summary, opening=True).split("\n\n")[0]
    return f"{ab.unfinished()}.\n{text}" if ab.unfinished() else text


def write_report(cfg: SweepConfig, out_dir: Path | None = None, *, workdir: Path | None = None,
                 out: TextIO | None = None, written: ReportWritten | None = None) -> Path:
    """Write report.md (+ figures) for the study `cfg` names; returns its path.

    `out`: where to say which ablations are unfinished (the report says it too).
    Built in a folder beside them (OUT/.report-build-PID) and swapped in whole at the
    end, signals held: a report stopped midway (Ctrl-C, SIGTERM, an error) leaves the
    previous report.md and figures/ as they were, never new figures beside an old text.

    `written`: filled with where the report went in MLflow and each verdict's opening.

    Raises:
        ReportInterrupted: a signal stopped it (the line to print says what is kept).
    """
    written = written if written is not None else ReportWritten()
    from sweep.paths import SweepPaths, study_paths
    from sweep.search.study import make_storage, open_study
    from sweep.tracking.store import default_tracking_uri, make_client

    name = cfg.study_name
    paths = SweepPaths.for_study(workdir or Path.cwd(), name)
    study = None
    try:
        study = open_study(cfg, make_storage(cfg.storage, paths.journal), create=False)
    except KeyError:  # no sweep for this name (an ablation of explicit params only)
        pass
    else:  # this study's folder and MLflow parents, not those of another study of its name
        paths = study_paths(paths.workdir, study, cfg.storage, claim=False)
    out_dir = (out_dir or paths.report_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    from sweep.redact import mask_url
    from sweep.tracking.tracker import limit_http_retries

    tracking_uri = cfg.tracking_uri or default_tracking_uri(paths.workdir)
    limit_http_retries()  # a server that dies meanwhile: fail in seconds, not minutes (see upload_report)
    client = make_client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None and study is None:
        raise ValueError(f"--study: nothing recorded for {name!r} (no MLflow experiment at {mask_url(tracking_uri)}, "
                         "no Optuna study); run `sweep run` or `sweep ablate` first")

    ablations = load_ablations(client, exp.experiment_id, paths.key) if exp is not None else []
    build = _start_build(out_dir)
    try:
        from sweep.reporting.html import write_report_files  # report.md, and report.html with its figures inside

        write_report_files(build, _report_text(cfg, name, ablations, study, build, written, out))
        _swap_in(build, out_dir)
    except KeyboardInterrupt as exc:
        from sweep.search.stops import signal_name

        raise ReportInterrupted(f"stopped by {signal_name(exc)} before the new report was complete; {out_dir} "
                                "keeps the previous report and figures as they were") from None
    finally:
        shutil.rmtree(build, ignore_errors=True)
    report = out_dir / "report.md"

    if exp is not None:
        from sweep.tracking.store import find_parent_run

        try:
            parents = [ab.parent_run_id for ab in ablations]
            study_parent = find_parent_run(client, exp.experiment_id, "study", paths.key)
            if study_parent:
                parents.append(study_parent)
            upload_report(client, parents, out_dir, tracking_uri)
            written.experiment_id, written.run_ids = exp.experiment_id, parents
        except KeyboardInterrupt as exc:
            from sweep.search.stops import signal_name

            raise ReportInterrupted(f"stopped by {signal_name(exc)} while uploading it to MLflow; the report in "
                                    f"{out_dir} is complete; run `sweep report` again to upload it") from None
    return report


def _report_text(cfg: SweepConfig, name: str, ablations: list[AblationRuns], study: optuna.Study | None, out_dir: Path,
                 written: ReportWritten, out: TextIO | None = None) -> str:
    """report.md's text; its figures are written under `out_dir`/figures."""
    parts = [f"# Does dropout regularize? Report for `{name}`\n\n",
             "keep_prob is the probability of KEEPING a unit (1.0 = no dropout). "
             "Accuracies are in % and their differences in percentage points (points); "
             "intervals are 95 % t-intervals over seeds; "
             "paired differences are against keep_prob 1.0 on the same seeds (same init, batch order "
             "and training subset), with Holm-adjusted p-values over each ablation grid.\n\n"]
    rng = np.random.default_rng(cfg.seed)
    for ab in ablations:
        if out is not None and ab.unfinished():
            out.write(f"{ab.name}: {ab.unfinished()}\n")
        if any(c.levels for c in ab.cells):  # an ablation with --vary
            fs = summarize_factorial(ab.cells, parse_vary_text(ab.params.get("vary", "")), rng=rng)
            parts.append(_with_sequential(ab, _factorial_section(ab, fs, out_dir)) + "\n")
            written.openings.append((ab.name, _with_sequential_opening(ab, verdict_opening(ab, fs))))
            continue
        summary = summarize(ab.cells, rng=rng) if ab.cells else None
        parts.append(_with_sequential(ab, _ablation_section(ab, summary, out_dir)) + "\n")
        written.openings.append((ab.name, _with_sequential_opening(ab, verdict_opening(ab, summary))))
    if study is not None:
        parts.append(_sweep_section(cfg, study, out_dir))
    return "".join(parts)


def _with_sequential(ab: AblationRuns, section: str) -> str:
    """An --until-decided ablation's section with its seeds and anytime intervals before the verdict
    (sweep.reporting.sequential_section); other sections unchanged."""
    from sweep.reporting.sequential_section import is_sequential, sequential_section

    if not is_sequential(ab.params) or not ab.cells:
        return section
    return section.replace("### Verdict\n", sequential_section(ab.params, ab.cells) + "### Verdict\n", 1)


def _with_sequential_opening(ab: AblationRuns, opening: str) -> str:
    from sweep.reporting.sequential_section import is_sequential, sequential_opening

    return f"{sequential_opening(ab.params, ab.cells)}\n{opening}" if is_sequential(ab.params) and ab.cells else opening


BUILD_PREFIX = ".report-build-"


def _start_build(out_dir: Path) -> Path:
    """A fresh build folder in `out_dir` (same file system: the swap is renames); builds left by
    a killed `sweep report` (their process gone) are removed first."""
    for old in out_dir.glob(BUILD_PREFIX + "*"):
        pid = old.name.removeprefix(BUILD_PREFIX)
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    build = out_dir / f"{BUILD_PREFIX}{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    return build


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(build: Path, out_dir: Path) -> None:
    """Replace out_dir's figures/, report.html and report.md by the build's, with Ctrl-C and SIGTERM
    held (four renames: a signal lands after them, so the text and its figures always match)."""
    from sweep.search.stops import signals_held

    with signals_held():
        if (out_dir / "figures").exists():
            os.replace(out_dir / "figures", build / ".old-figures")
        if (build / "figures").exists():
            os.replace(build / "figures", out_dir / "figures")
        os.replace(build / "report.html", out_dir / "report.html")
        os.replace(build / "report.md", out_dir / "report.md")


class ReportInterrupted(KeyboardInterrupt):
    """A signal stopped `sweep report`; its text says what is kept."""


class ReportNotUploaded(Exception):
    """report.md was written but MLflow did not take it within the stated wait."""


def upload_report(client: MlflowClient, run_ids: list[str], out_dir: Path, tracking_uri: str) -> None:
    """Log the report folder on each parent run, retrying for SWEEP_TRACKING_WAIT seconds.

    Raises:
        ReportNotUploaded: MLflow kept failing (the report on disk is complete).
    """
    import time

    from sweep.redact import mask_url
    from sweep.tracking.outage import short_reason
    from sweep.tracking.tracker import tracking_wait_seconds

    deadline = time.monotonic() + tracking_wait_seconds()
    pending = list(run_ids)
    delay = 1.0
    while pending:
        try:
            client.log_artifacts(pending[0], str(out_dir), artifact_path=REPORT_ARTIFACT_PATH)
            pending.pop(0)
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                raise ReportNotUploaded(
                    f"the report is written in {out_dir} but not uploaded to MLflow at {mask_url(tracking_uri)} "
                    f"({short_reason(exc)}; tried for {tracking_wait_seconds():.0f} s); "
                    "run `sweep report` again once MLflow is reachable"
                ) from None
            time.sleep(delay)
            delay = min(15.0, delay * 2)
