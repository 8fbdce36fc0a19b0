"""Where a sweep's files live: the journal, the MLflow store, and one folder per study under `.sweep/`.

    WORKDIR/optuna.journal          Optuna's default storage
    WORKDIR/mlflow.db               MLflow's default store
    WORKDIR/.sweep/<folder>/        one study: spool/ (events for MLflow), weights/,
                                    <ablation>/spool/, study.json (whose folder it is)
    WORKDIR/reports/<folder>/       `sweep report`'s report.md and figures

A study is known by its identity, not its name: a new journal or database
makes a new study even under an old name, and its trials are numbered from 0
again. So a study's folder is found by its `study.json` record, never by the
name alone: the record holds the study's key (STUDY_KEY_ATTR, a random id
`sweep run` gives a study when it creates it) or, for a study created before
keys, its storage (masked) and its id there. The first study of a name gets
`.sweep/<name>`; another study of that name `.sweep/<name>-<key[:8]>`.

A `.sweep/<name>` folder without a record (written before records existed, or
made by hand) is adopted by the study of that name that opens it first when
every trial file in it (spool events, weights) is of a trial of that study that
had started when the file was begun, and so also when it holds none; otherwise
it is left to whoever wrote it and the study gets a folder of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.config.domains import ConfigError
from sweep.redact import mask_url

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from sweep.config.sweep_file import SweepConfig

STATE_ROOT = ".sweep"
JOURNAL_NAME = "optuna.journal"
MLFLOW_DB_NAME = "mlflow.db"
RECORD_NAME = "study.json"
# Study system attr: the random key `sweep run` gives a study it creates (see module doc).
STUDY_KEY_ATTR = "sweep.study_key"
# MLflow tag of the parent runs of a keyed study: a new study of an old name gets parents of its own.
STUDY_KEY_TAG = "sweep.study_key"

MAX_NAME_CHARS = 100
CLOCK_SLACK_SECONDS = 1.0  # a trial's start (Optuna) and its spool record (worker) read one clock
_NAME_BAD = re.compile(r"[/\\\x00-\x1f\x7f]|^\.")  # a path separator, a control character, a leading dot
NAME_RULE = (f"a study name must be usable as one folder name: at most {MAX_NAME_CHARS} characters, "
             "no '/', '\\' or control characters, not starting with '.'")


def check_study_name(name: Any, key: str = "study") -> str:
    """`name` if it is safe as one folder name under `.sweep/` and `reports/`, else ConfigError naming `key`.

    A study name can come from a shared sweep file: '../x' or '/tmp/x' would put
    the spool, weights and reports outside the working folder.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"must be a non-empty string, got {name!r}", key=key)
    if len(name) > MAX_NAME_CHARS or _NAME_BAD.search(name):
        shown = name if len(name) <= 60 else name[:57] + "..."  # one line, even for 300 characters
        raise ConfigError(f"{shown!r} is not allowed: {NAME_RULE}", key=key)
    return name


def default_journal(workdir: Path) -> Path:
    """Optuna's default storage: a journal file in the working folder, next to mlflow.db."""
    return Path(workdir).resolve() / JOURNAL_NAME


def default_mlflow_db(workdir: Path) -> Path:
    """MLflow's default store: mlflow.db in the working folder."""
    return Path(workdir).resolve() / MLFLOW_DB_NAME


def journal_file(storage: str | None, default: Path) -> Path | None:
    """The journal file a storage URL names (`default` for None), or None for a database URL."""
    if storage is None:
        return default
    return Path(storage.removeprefix("journal:")) if storage.startswith("journal:") else None


def storage_label(storage: str | None, workdir: Path) -> str:
    """The storage as a study record names it: `journal:<absolute path>`, or the URL with its password masked."""
    journal = journal_file(storage, Path(workdir) / JOURNAL_NAME)
    if journal is not None:
        return f"journal:{(Path(workdir) / journal).resolve()}"
    return mask_url(storage) or ""


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep keeps its files (all under the working folder by default)."""

    workdir: Path
    journal: Path  # Optuna journal (default storage), next to mlflow.db
    state_dir: Path  # per-study spool files and best weights
    key: str | None = None  # the study's key (STUDY_KEY_ATTR); None: a study from before keys, or none

    @classmethod
    def for_study(cls, workdir: Path, study: str) -> SweepPaths:
        """The files of the study NAMED `study` before its identity is known (`.sweep/<study>`)."""
        workdir = Path(workdir).resolve()
        return cls(workdir, default_journal(workdir), workdir / STATE_ROOT / check_study_name(study))

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def weights_dir(self) -> Path:
        return self.state_dir / "weights"

    @property
    def report_dir(self) -> Path:
        return self.workdir / "reports" / self.state_dir.name

    @property
    def mlflow_db(self) -> Path:
        return default_mlflow_db(self.workdir)

    @property
    def identity_tags(self) -> dict[str, str]:
        """Tags for the study's MLflow parent runs (and what finds them again)."""
        return {STUDY_KEY_TAG: self.key} if self.key else {}


def workdir_of(spool_dir: Path) -> Path:
    """The working folder of a spool folder (WORKDIR/.sweep/FOLDER[/ABLATION]/spool); cwd if not under one."""
    parts = Path(spool_dir).parts
    return Path(*parts[: parts.index(STATE_ROOT)]) if STATE_ROOT in parts else Path.cwd()


# -- the study's key -------------------------------------------------------------

def new_study_key() -> str:
    return uuid.uuid4().hex


def study_key(study: optuna.Study, *, wait_seconds: float = 10.0) -> str | None:
    """The key of an opened study (optuna.Study); None for a study created before keys.

    `open_study` writes the key right after creating the study, before its `sweep`
    attr: a study with neither is being created by another process this instant,
    and is read again until its key is there (or `wait_seconds` pass).
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        # Optuna 5's Study has no system_attrs: asked of its storage.
        key = study._storage.get_study_system_attrs(study._study_id).get(STUDY_KEY_ATTR)
        if key or "sweep" in study.user_attrs or time.monotonic() >= deadline:
            return key
        time.sleep(0.1)


# -- the study's folder ------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """What a study record holds."""

    name: str
    key: str | None
    storage: str  # storage_label: masked
    study_id: int

    def record(self) -> dict[str, Any]:
        return {"study": self.name, "key": self.key, "storage": self.storage, "study_id": self.study_id}

    def matches(self, rec: dict[str, Any]) -> bool:
        if rec.get("study") != self.name:
            return False
        if self.key or rec.get("key"):
            return rec.get("key") == self.key
        return rec.get("storage") == self.storage and rec.get("study_id") == self.study_id


def read_record(folder: Path) -> dict[str, Any] | None:
    """A study folder's record; None if it has none (written before records) or it cannot be read."""
    try:
        rec = json.loads((folder / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def identity_of(study: optuna.Study, storage: str | None, workdir: Path) -> Identity:
    return Identity(study.study_name, study_key(study), storage_label(storage, workdir), study._study_id)


def study_paths(workdir: Path, study: optuna.Study, storage: str | None, *, claim: bool) -> SweepPaths:
    """The files of an opened Optuna study: its own folder under `.sweep/` (see module doc).

    With `claim` (`sweep run`) a folder is created with its record (or an old one
    adopted); without it nothing is written and a study that has none gets the
    folder it would get, not there yet.
    """
    base = SweepPaths.for_study(workdir, study.study_name)
    ident = identity_of(study, storage, base.workdir)
    folder = find_folder(base.state_dir.parent, ident, lambda: _trial_starts(study))
    if folder is None:
        root = base.state_dir.parent
        folder = _claim_folder(root, ident) if claim else _new_folder_name(root, ident)
    elif claim and read_record(folder) is None:  # adopted: say so for the next time
        _write_record(folder, ident)
    return SweepPaths(base.workdir, base.journal, folder, ident.key)


def find_folder(root: Path, ident: Identity, trial_starts: Callable[[], dict[int, float | None]]) -> Path | None:
    """The folder under `root` whose record is `ident`'s, else an unrecorded `root/<name>` it adopts, else None."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for folder in sorted(root.iterdir()):
            rec = read_record(folder) if folder.is_dir() else None
            if rec is not None and ident.matches(rec):
                return folder
    legacy = root / ident.name
    if legacy.is_dir() and read_record(legacy) is None and _files_fit(legacy, trial_starts()):
        return legacy
    return None


def _trial_starts(study: optuna.Study) -> dict[int, float | None]:
    """Trial number -> when it started (seconds since the epoch; None: not started)."""
    return {t.number: t.datetime_start.timestamp() if t.datetime_start else None
            for t in study.get_trials(deepcopy=False)}


def _files_fit(folder: Path, trial_starts: dict[int, float | None]) -> bool:
    """Whether every trial file in a study folder (spool events, best weights) can be of these
    trials: its trial exists and had started when the file was begun (a study's files are
    written after its trials start; an older study's, before). No trial files: it fits."""
    from sweep.tracking.spool import first_event

    def fits(number_text: str, written: float | None) -> bool:
        try:
            started = trial_starts.get(int(number_text))
        except ValueError:  # not a file a sweep wrote
            return True
        return started is not None and written is not None and written >= started - CLOCK_SLACK_SECONDS

    for path in sorted((folder / "spool").glob("trial-*.jsonl")):
        if not fits(path.stem.removeprefix("trial-"), (first_event(path) or {}).get("time")):
            return False
    for path in sorted((folder / "weights").glob("trial-*.npz")):
        with contextlib.suppress(OSError):
            if not fits(path.stem.removeprefix("trial-"), path.stat().st_mtime):
                return False
    return True


def _folder_names(root: Path, ident: Identity) -> list[Path]:
    """The folders a study may get, in the order tried: `<name>`, then `<name>-<key or storage hash>`."""
    tail = ident.key or hashlib.sha1(f"{ident.storage}#{ident.study_id}".encode()).hexdigest()
    return [root / ident.name, root / f"{ident.name}-{tail[:8]}", root / f"{ident.name}-{tail[:16]}"]


def _new_folder_name(root: Path, ident: Identity) -> Path:
    """The folder `_claim_folder` would make now (for a lookup that writes nothing)."""
    return next((p for p in _folder_names(root, ident) if not p.exists()), _folder_names(root, ident)[-1])


def _write_record(folder: Path, ident: Identity) -> None:
    tmp = folder / f".{RECORD_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(ident.record()) + "\n")
    os.replace(tmp, folder / RECORD_NAME)


def _claim_folder(root: Path, ident: Identity) -> Path:
    """Make the study's folder with its record in one step (a folder renamed into place); returns it.

    Every process of one study tries the same names in the same order, and a name
    already taken is checked for being this study's: so two `sweep run` processes
    starting a new study at once end in one folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    for target in _folder_names(root, ident):
        tmp = root / f".new-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        _write_record(tmp, ident)
        try:
            os.rename(tmp, target)  # fails if `target` exists and is not empty
            return target
        except OSError:
            with contextlib.suppress(OSError):
                (tmp / RECORD_NAME).unlink()
                tmp.rmdir()
        rec = read_record(target)
        if rec is not None and ident.matches(rec):  # made meanwhile by another process of this study
            return target
    taken = ", ".join(p.name for p in _folder_names(root, ident))
    raise OSError(f"cannot make a folder for study {ident.name!r} in {root}: {taken} are taken by other studies")


def study_folders(root: Path, name: str | None = None) -> list[Path]:
    """Study folders under `root` (`.sweep`), or those of the study named `name`: by their
    record, or, written before records, by the folder's name."""
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        rec = read_record(folder)
        if name is None or (rec.get("study") if rec is not None else folder.name) == name:
            out.append(folder)
    return out


def study_name_of(folder: Path) -> str:
    """The study a folder under `.sweep/` is of: its record's name, else the folder's."""
    rec = read_record(folder)
    return str(rec["study"]) if rec is not None and rec.get("study") else folder.name


def paths_of_config(workdir: Path, cfg: SweepConfig) -> SweepPaths:
    """The files of the study a sweep file names, found without writing anything: its
    own folder if its storage has the study, else `.sweep/<name>` (e.g. an ablation of
    explicit params, with no study)."""
    from sweep.search.status import open_storage_readonly

    base = SweepPaths.for_study(workdir, cfg.study_name)
    try:
        import optuna

        storage = open_storage_readonly(cfg.storage, base.journal)
        study = optuna.load_study(study_name=cfg.study_name, storage=storage)
    except (KeyError, ValueError):  # no storage, or no such study in it
        return base
    return study_paths(base.workdir, study, cfg.storage, claim=False)
