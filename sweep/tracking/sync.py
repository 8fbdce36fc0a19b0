"""`sweep sync`: upload what the spool folders hold and MLflow lacks (the `wandb sync` convention).

A sweep whose tracking server was down at its end leaves its events in
`.sweep/<study>/spool` (and `.sweep/<study>/<ablation>/spool`; a study's folder
is found by its record, see sweep.paths), with the
`.state` side files saying how much MLflow has and `.parents.json` holding
the parent runs' specs, summaries and end statuses. Sync runs the same
Tracker code once, in this thread, under the same spool lock as a live
tracker: running it twice sends nothing the second time, and a run whose
side file was lost is found again by its `sweep.spool_file` tag, never
created twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from sweep.config.domains import ConfigError
from sweep.paths import STATE_ROOT, STUDY_KEY_TAG, check_study_name, read_record, study_folders, study_name_of
from sweep.redact import mask_url
from sweep.tracking import spool
from sweep.tracking.outage import ParentBook, backlog, short_reason
from sweep.tracking.tracker import ParentSpec, Tracker

# Exit code when something could not be uploaded (MLflow failed meanwhile).
EXIT_SYNC_FAILED = 3


def spool_dirs(study_dir: Path) -> list[Path]:
    """The study's spool folder and its ablations' ones, those holding event files."""
    found = [study_dir / "spool", *sorted(p / "spool" for p in study_dir.iterdir() if p.is_dir())]
    return [d for d in found if d.is_dir() and any(spool.spool_files(d))]


def _parents(spool_dir: Path, study: str) -> tuple[str, list[ParentSpec]]:
    """(experiment name, parent specs) from the folder's `.parents.json`, else from its place."""
    book = ParentBook(spool_dir).read()
    specs = [ParentSpec(key, e["spec"]["run_name"], params=e["spec"].get("params", {}), tags=e["spec"].get("tags", {}))
             for key, e in sorted(book.items()) if "spec" in e]
    experiment = next((e["spec"].get("experiment") for e in book.values() if "spec" in e), None) or study
    if not specs:  # written by a sweep from before .parents.json (or that could not write it)
        own = spool_dir.parent.parent.name == STATE_ROOT  # the study's own spool, not an ablation's
        key = (read_record(spool_dir.parent if own else spool_dir.parent.parent) or {}).get("key")
        ident = {STUDY_KEY_TAG: key} if key else {}
        if own:
            specs = [ParentSpec("study", study, tags={"optuna.study": study, "sweep.kind": "study", **ident})]
        else:
            name = spool_dir.parent.name
            specs = [ParentSpec(f"ablation:{name}", name,
                                tags={"sweep.kind": "ablation", "optuna.study": study, **ident})]
    return experiment, specs


def sync_all(workdir: Path, tracking_uri: str, *, study: str | None = None, out: TextIO) -> int:
    """Sync every study under WORKDIR/.sweep (or only `study`); print what was done; exit code."""
    root = Path(workdir).resolve() / STATE_ROOT
    studies = study_folders(root)
    if study is not None:
        check_study_name(study, "--study")
        # Every study of that name: a new journal or database under an old name has a folder of its own.
        studies = study_folders(root, study)
        if not studies:
            known = ", ".join(sorted({study_name_of(p) for p in study_folders(root)})) or "none"
            raise ConfigError(f"no spool folder for study {study!r} in {root} (studies there: {known})", key="--study")
    shown = mask_url(tracking_uri)
    failed = False
    total = 0
    for study_dir in studies:
        for spool_dir in spool_dirs(study_dir):
            before = backlog(spool_dir)
            where = spool_dir.relative_to(root.parent)
            # Connected even when the side files say everything was sent: the store
            # may be a new one (mlflow.db deleted, another --tracking-uri), and the
            # tracker then sends every run again.
            experiment, specs = _parents(spool_dir, study_name_of(study_dir))
            tracker = Tracker(tracking_uri, experiment, spool_dir, specs, say=lambda line: print(line, file=out))
            try:
                after = tracker.sync_now()
            except Exception as exc:
                if before.empty:
                    out.write(f"{where}: nothing waiting; could not check that {shown} has these runs "
                              f"({short_reason(exc)})\n")
                    continue
                failed = True
                out.write(f"{where}: could not sync to {shown} ({short_reason(exc)}); "
                          f"{backlog(spool_dir).describe()} still waiting there\n")
                continue
            total += tracker.events_sent
            if before.empty and after.empty and not (tracker.runs_created or tracker.events_sent):
                out.write(f"{where}: nothing to do (MLflow has everything)\n")
                continue
            line = (f"{where}: created {tracker.runs_created} run(s), completed {tracker.runs_ended} run(s), "
                    f"sent {tracker.events_sent} event(s) to {shown}")
            if not after.empty:
                failed = True
                line += f"; still missing: {after.describe()}"
            out.write(line + "\n")
    if not studies:
        out.write(f"nothing to do: no spool folders under {root}\n")
    out.flush()
    return EXIT_SYNC_FAILED if failed else 0
