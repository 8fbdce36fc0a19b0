"""`sweep status`: how a study stands, read from its storage alone (read-only, no MLflow import).

The one file it may write: a journal of more than ~90 trials is read from a
snapshot of Optuna's replay kept beside it (`.optuna.journal.snapshot`,
sweep.search.journal_cache), refreshed when stale: 10 000 trials in under a second.

What `sweep run` leaves on the study for it (user attrs, written by the runner):

    target_trials               the --trials target of the latest `sweep run`
    sweep.process:<host>:<pid>  {"host", "pid", "proc_start", "started", "ended"}: a sweep
                                process; alive = the pid still runs with that start time
    mlflow                      {"experiment_id", "tracking_uri"} (password masked)

Liveness of a process on another host cannot be checked from here: it is shown
as such. A study whose experiment id is not recorded (made before this command
existed) is looked up in MLflow, only when its store exists (nothing is created).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sweep.paths import default_journal, journal_file
from sweep.redact import mask_url

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.study._frozen import FrozenStudy

TARGET_ATTR = "target_trials"
PROCESS_PREFIX = "sweep.process:"
MLFLOW_ATTR = "mlflow"


def mark_sweep_process(study: optuna.Study, target: int, *, ended: bool = False) -> None:
    """Record this `sweep run` process (and the target) on the study; `ended` when it is done."""
    from sweep.tracking import spool

    pid = os.getpid()
    host = socket.gethostname()
    key = f"{PROCESS_PREFIX}{host}:{pid}"
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record = study.user_attrs.get(key) if ended else None
    if record is None:
        record = {"host": host, "pid": pid, "proc_start": spool.process_start_time(pid), "started": now, "ended": None}
    if ended:
        record = {**record, "ended": now}
    else:
        study.set_user_attr(TARGET_ATTR, target)
    study.set_user_attr(key, record)


def record_experiment(study: optuna.Study, experiment_id: str | None, tracking_uri: str) -> str | None:
    """Keep the study's MLflow experiment id and tracking URI (masked) on the study."""
    if experiment_id is not None:
        study.set_user_attr(MLFLOW_ATTR, {"experiment_id": experiment_id, "tracking_uri": mask_url(tracking_uri)})
    return experiment_id


# -- reading ---------------------------------------------------------------------


@dataclass
class StudyStatus:
    """How one study stands (every count read from the storage at one moment)."""

    name: str
    target: int | None
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # failed and not re-queued: these count towards the target
    requeued: int = 0  # failed, their params queued again (a dead worker, an interrupt): not counted
    running: int = 0
    waiting: int = 0
    best_number: int | None = None
    best_value: float | None = None
    best_params: str = ""
    test_acc: float | None = None
    last_ended: dt.datetime | None = None
    processes: list[str] = field(default_factory=list)  # live (or not checkable) sweep processes
    mlflow: str = ""
    ablations: list[str] = field(default_factory=list)  # one line each (sweep.closing's notes on the study)
    report: str = ""  # the last report written, and when

    @property
    def counted(self) -> int:
        return self.complete + self.pruned + self.failed


def open_storage_readonly(url: str | None, journal: Path) -> BaseStorage:
    """The Optuna storage at `url` (None: the journal file `journal`), creating nothing.

    Raises:
        ValueError: no such journal file or SQLite file, or no Optuna tables in the database.
    """
    from optuna.storages import RDBStorage

    from sweep.search.journal_cache import open_journal_for_reading

    path = journal_file(url, journal)
    if path is not None:
        if not path.is_file():
            raise ValueError(f"--storage: no Optuna journal at {path}; run `sweep run` here first, "
                             "or give the study's --storage URL")
        return open_journal_for_reading(path)  # from its snapshot: a 10 000-trial journal in well under 1 s
    assert url is not None  # journal_file gives None only for a database URL
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ValueError(f"--storage: no SQLite database at {url.removeprefix('sqlite:///')}")
    try:
        return RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)
    except Exception as exc:  # a bad URL, a refused connection, a database without Optuna's tables
        raise ValueError(f"--storage: no Optuna studies readable at {mask_url(url)} "
                         f"({type(exc).__name__}; tables are made by `sweep run`, never here)") from None


def other_sweep_processes(user_attrs: dict[str, Any]) -> list[tuple[dict[str, Any], bool | None]]:
    """The study's `sweep run` processes that may still run, other than this one, as
    (record, alive): alive True on this host, None on another host (cannot be checked here).

    A process killed without recording its end (dead pid on this host) is not listed.
    """
    from sweep.tracking import spool

    out: list[tuple[dict[str, Any], bool | None]] = []
    for key, rec in sorted(user_attrs.items()):
        if not key.startswith(PROCESS_PREFIX) or not isinstance(rec, dict) or rec.get("ended"):
            continue
        if rec.get("host") == socket.gethostname() and rec.get("pid") == os.getpid():
            continue
        alive = spool.is_alive(rec["host"], rec["pid"], rec.get("proc_start"))
        if alive is not False:
            out.append((rec, alive))
    return out


def _process_lines(user_attrs: dict[str, Any]) -> list[str]:
    out = []
    for rec, alive in other_sweep_processes(user_attrs):
        where = f"host {rec['host']}, pid {rec['pid']}, started {rec['started']}"
        out.append(f"alive on {where}" if alive else f"on {where} (another host: cannot check it from here)")
    return out


def _mlflow_line(name: str, user_attrs: dict[str, Any], tracking_uri: str | None, workdir: Path) -> str:
    from sweep.tracking.store import default_tracking_uri, ui_url

    rec = user_attrs.get(MLFLOW_ATTR)
    uri = tracking_uri or (rec or {}).get("tracking_uri") or default_tracking_uri(workdir)
    experiment_id = (rec or {}).get("experiment_id")
    if experiment_id is None:  # a study from before this was recorded: ask MLflow, if its store exists
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            return f"no MLflow store at {uri}"
        from sweep.tracking.store import make_client

        exp = make_client(uri).get_experiment_by_name(name)
        if exp is None:
            return f"no MLflow experiment {name!r} at {mask_url(uri)}"
        experiment_id = exp.experiment_id
    if uri.startswith(("http://", "https://")):
        return ui_url("", 0, experiment_id, base=mask_url(uri))
    return f"{ui_url('127.0.0.1', 5000, experiment_id)} (after `sweep ui --study {name}`; store {uri})"


def study_status(storage: BaseStorage, frozen: FrozenStudy, *, tracking_uri: str | None, workdir: Path) -> StudyStatus:  # noqa: C901 - one count per trial state and source, each a line of `sweep status`
    """Status of one study (`frozen`: an optuna FrozenStudy of `storage`)."""
    from optuna.trial import TrialState

    from sweep.config.space import SearchSpace
    from sweep.search.progress import format_params
    from sweep.search.study import retried_numbers

    attrs = dict(frozen.user_attrs)
    trials = storage.get_all_trials(frozen._study_id, deepcopy=False)
    retried = retried_numbers(trials)
    st = StudyStatus(frozen.study_name, attrs.get(TARGET_ATTR))
    for t in trials:
        if t.state == TrialState.COMPLETE:
            st.complete += 1
            if t.value is not None and (st.best_value is None or t.value > st.best_value):
                st.best_number, st.best_value = t.number, t.value
                best_params = t.params
        elif t.state == TrialState.PRUNED:
            st.pruned += 1
        elif t.state == TrialState.FAIL:
            if t.number in retried:
                st.requeued += 1
            else:
                st.failed += 1
        elif t.state == TrialState.RUNNING:
            st.running += 1
        elif t.state == TrialState.WAITING:
            st.waiting += 1
        if t.datetime_complete and (st.last_ended is None or t.datetime_complete > st.last_ended):
            st.last_ended = t.datetime_complete
    if st.best_number is not None:
        try:
            space = SearchSpace.from_dict(attrs["sweep"]["space"])
            st.best_params = format_params(space, best_params)
        except (KeyError, TypeError, ValueError):  # not a study this project made
            st.best_params = str(best_params)
        test = attrs.get("best_test_acc")
        if test and test.get("trial") == st.best_number:
            st.test_acc = float(test["acc"])
    st.processes = _process_lines(attrs)
    st.mlflow = _mlflow_line(frozen.study_name, attrs, tracking_uri, workdir)
    st.ablations, st.report = _ablation_lines(frozen.study_name, attrs, tracking_uri, workdir)
    return st


def _ablation_lines(name: str, attrs: dict[str, Any], tracking_uri: str | None,
                    workdir: Path) -> tuple[list[str], str]:
    """The study's ablations and last report, from the notes `sweep ablate`/`sweep report` left on it.

    An ablation folder in .sweep/<study>/ without a note (killed, or from before the
    notes) is listed as such: its cells are in MLflow, read by `sweep report`.
    """
    from sweep.closing import ABLATION_ATTR_PREFIX, REPORT_ATTR, mlflow_link
    from sweep.tracking.store import default_tracking_uri

    uri = tracking_uri or (attrs.get(MLFLOW_ATTR) or {}).get("tracking_uri") or default_tracking_uri(workdir)
    lines, noted = [], set()
    for key, rec in sorted(attrs.items()):
        if not key.startswith(ABLATION_ATTR_PREFIX) or not isinstance(rec, dict):
            continue
        ablation = key.removeprefix(ABLATION_ATTR_PREFIX)
        noted.add(ablation)
        done, total = rec.get("cells_done"), rec.get("cells_total")
        state = "complete" if done == total else "unfinished"
        ended = "interrupted" if rec.get("ended") == "interrupted" else f"last run ended {rec.get('ended')}"
        link = mlflow_link(uri, name, rec.get("experiment_id"), rec.get("parent_run_id")) \
            if rec.get("parent_run_id") else "no MLflow parent run recorded"
        lines.append(f"{ablation}: {done}/{total} cells done ({state}, {ended}); parent run {link}")
    folder = workdir / ".sweep" / name
    if folder.is_dir():
        for sub in sorted(folder.glob("ablation-*/spool")):
            if sub.parent.name not in noted:
                lines.append(f"{sub.parent.name}: in {sub.parent} (no summary noted: killed, or ended before "
                             "`sweep status` read ablations; `sweep report` reads it from MLflow)")
    rec = attrs.get(REPORT_ATTR)
    report = ""
    if isinstance(rec, dict):
        path = Path(rec.get("path", ""))
        where = path.relative_to(workdir) if path.is_relative_to(workdir) else path
        missing = "" if path.is_file() else " (no longer there)"
        report = f"{where}{missing}, written {rec.get('written')}"
    return lines, report


def format_status(st: StudyStatus) -> str:
    """The lines `sweep status` prints for one study."""
    target = "no target recorded" if st.target is None else f"target {st.target}"
    lines = [
        f"study {st.name!r}: {st.counted}" + ("" if st.target is None else f"/{st.target}")
        + f" trials counted ({target})",
        f"  complete {st.complete}, pruned {st.pruned}, failed {st.failed}, running {st.running}, "
        f"waiting {st.waiting}" + (f" (+ {st.requeued} failed and re-queued, not counted)" if st.requeued else ""),
    ]
    if st.best_number is None:
        lines.append("  best: no completed trial yet")
    else:
        test = "" if st.test_acc is None else f", test_acc {st.test_acc:.4f}"
        lines.append(f"  best: trial {st.best_number}, val_acc {st.best_value:.4f}{test}: {st.best_params}")
    ended = "no trial has ended yet" if st.last_ended is None else st.last_ended.strftime("%Y-%m-%d %H:%M:%S")
    lines.append(f"  last trial ended: {ended}")
    lines += [f"  sweep process: {p}" for p in st.processes] or ["  sweep process: none running"]
    lines.append(f"  MLflow: {st.mlflow}")
    lines += [f"  ablation {a}" for a in st.ablations] or ["  ablations: none recorded"]
    lines.append(f"  last report: {st.report}" if st.report else "  last report: none written")
    return "\n".join(lines) + "\n"


def read_statuses(name: str | None, storage_url: str | None, tracking_uri: str | None,
                  workdir: Path) -> list[StudyStatus]:
    """How every study of the storage (or the one named) stands, sorted by name (read-only)."""
    journal = default_journal(workdir)
    storage = open_storage_readonly(storage_url, journal)
    try:
        studies = storage.get_all_studies()
    except Exception as exc:  # e.g. a PostgreSQL database without Optuna's tables
        raise ValueError(f"--storage: no Optuna studies readable at "
                         f"{mask_url(storage_url or str(journal))} "
                         f"({type(exc).__name__}; tables are made by `sweep run`, never here)") from None
    if name is not None:
        chosen = [s for s in studies if s.study_name == name]
        if not chosen:
            known = ", ".join(repr(s.study_name) for s in studies) or "none"
            raise ValueError(f"--study: no study {name!r} in this storage (studies: {known})")
        studies = chosen
    return [study_status(storage, frozen, tracking_uri=tracking_uri, workdir=workdir)
            for frozen in sorted(studies, key=lambda s: s.study_name)]


def print_status(name: str | None, storage_url: str | None, tracking_uri: str | None, workdir: Path,
                 out: TextIO) -> int:
    """`sweep status`: every study of the storage (or the one named); returns the exit code."""
    statuses = read_statuses(name, storage_url, tracking_uri, workdir)
    where = mask_url(storage_url) if storage_url else f"journal {default_journal(workdir)}"
    out.write(f"storage: {where}\n")
    if not statuses:
        out.write("no studies in this storage yet\n")
    for st in statuses:
        out.write(format_status(st))
    return 0
