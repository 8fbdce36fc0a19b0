"""The last lines of `sweep ablate` and `sweep report`: what happened, where to look, what next.

Both also leave a note on the study (user attrs, when the study exists) for
`sweep status`, which reads the storage alone and never imports MLflow:

    ablation:<name>   {"parent_run_id", "experiment_id", "cells_done", "cells_total", "ended"}
    report            {"path", "written", "run_id", "experiment_id"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.redact import mask_url

ABLATION_ATTR_PREFIX = "ablation:"
REPORT_ATTR = "report"


def mlflow_link(tracking_uri: str, study: str, experiment_id: str | None, run_id: str | None = None,
                artifact: str | None = None) -> str:
    """Where to click: a run's page (its `artifact` file's page when given) in MLflow's UI.

    On a tracking server its own address; on a local store the address `sweep ui` serves.
    """
    from sweep.tracking.store import ui_url

    if tracking_uri.startswith(("http://", "https://")):
        url = ui_url("", 0, experiment_id, run_id=run_id, base=mask_url(tracking_uri))
        after = ""
    else:
        url = ui_url("127.0.0.1", 5000, experiment_id, run_id=run_id)
        after = f" (after `sweep ui --study {study}`)"
    if artifact and run_id:
        page, _, query = url.partition("?")
        url = f"{page}/artifacts/{artifact}" + (f"?{query}" if query else "")
    return url + after


def next_command(command: str, args: Any, study: str) -> str:
    """`sweep COMMAND [CONFIG] --study NAME` with the where-flags this command was given."""
    parts = ["sweep", command]
    if getattr(args, "config", None):
        parts.append(args.config)
    parts += ["--study", study]
    for flag in ("storage", "tracking_uri"):
        value = getattr(args, flag, None)
        if value:
            parts += [f"--{flag.replace('_', '-')}", mask_url(value) or value]
    return " ".join(parts)


def _study_or_none(cfg: Any, workdir: Path) -> Any:
    """The Optuna study `cfg` names, or None (no journal here, or no such study: nothing is created)."""
    from sweep.paths import SweepPaths
    from sweep.search.study import make_storage, open_study

    paths = SweepPaths.for_study(workdir, cfg.study_name)
    if cfg.storage is None and not paths.journal.exists():
        return None
    if cfg.storage and cfg.storage.startswith("journal:") and not Path(cfg.storage.removeprefix("journal:")).exists():
        return None
    try:
        return open_study(cfg, make_storage(cfg.storage, paths.journal), create=False)
    except (KeyError, ValueError):
        return None


def record_on_study(cfg: Any, workdir: Path, key: str, value: dict[str, Any]) -> None:
    """Set a user attr on the study, when there is one; a storage that refuses it costs only the note."""
    try:
        study = _study_or_none(cfg, workdir)
        if study is not None:
            study.set_user_attr(key, value)
    except Exception as exc:  # read-only journal, a database gone: `sweep status` then lacks the line
        print(f"(not noted on the study for `sweep status`: {type(exc).__name__})")


def ablation_closing(outcome: Any, cfg: Any, args: Any, tracking_uri: str) -> list[str]:
    """The summary `sweep ablate` ends with (`outcome`: sweep.ablation.AblationOutcome)."""
    from sweep.search.progress import hms

    study = cfg.study_name
    est = "" if outcome.estimated_seconds is None else f" (estimated {hms(outcome.estimated_seconds)})"
    others = outcome.cells_done - outcome.trained
    lines = [f"{outcome.name}: {outcome.trained} cell(s) trained in {hms(outcome.seconds)}{est}; "
             f"{outcome.cells_done}/{outcome.cells_total} cells done"
             + (f" ({others} done before or by another process)" if others else "")]
    if outcome.parent_run_id:
        lines.append("  MLflow: " + mlflow_link(tracking_uri, study, outcome.experiment_id, outcome.parent_run_id))
    if outcome.interrupted or outcome.cells_done < outcome.cells_total:
        lines.append(f"  unfinished: run the same `sweep ablate` again to train the other "
                     f"{outcome.cells_total - outcome.cells_done} cell(s)")
    if outcome.untracked is not None:
        lines.append(f"  next: {next_command('sync', argparse_like(tracking_uri=args.tracking_uri), study)}"
                     f", then {next_command('report', args, study)}")
    else:
        lines.append(f"  next: {next_command('report', args, study)}")
    return lines


def argparse_like(**kwargs: Any) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(**kwargs)


def report_closing(path: Path, written: Any, tracking_uri: str, study: str) -> list[str]:
    """The lines `sweep report` ends with: each ablation's verdict opening, the paths, the MLflow link.

    `written`: the sweep.report.ReportWritten that write_report filled.
    """
    lines = []
    for name, opening in written.openings:
        lines.append(f"{name}:")
        lines += [f"  {line}" for line in opening.splitlines() if line.strip()]
    lines.append(f"report written to {path}")
    lines.append(f"  the same with its figures in one page (opens in a browser): {path.with_suffix('.html')}")
    if written.run_ids:
        lines.append("  in MLflow: " + mlflow_link(tracking_uri, study, written.experiment_id, written.run_ids[-1],
                                                   artifact="report/report.html"))
    return lines
