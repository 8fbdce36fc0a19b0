"""MLflow stores, experiments and runs: the lookups every command shares.

The tracker thread (sweep.tracking), `sweep report`, `sweep ablate` and
`sweep ui` all find experiments and runs the same way: by name, by the
`sweep.parent_key` tag of a parent run, by `mlflow.parentRunId` of a child.
Nothing here imports MLflow at module level (importing it costs ~1.8 s).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

PARENT_KEY_TAG = "sweep.parent_key"


def default_tracking_uri(workdir: Path | None = None) -> str:
    """MLflow's own default store, as an absolute URI so every process agrees."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = (workdir or Path.cwd()).resolve() / "mlflow.db"
    return f"sqlite:///{db}"


def ui_url(host: str, port: int, experiment_id: str | None = None, *, base: str | None = None) -> str:
    """Address of the classic runs table (MLflow 3 opens a GenAI view by default).

    `base` (a tracking server's own URL) replaces http://host:port.
    """
    base = (base or f"http://{host}:{port}").rstrip("/")
    if experiment_id is None:
        return base
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def make_client(tracking_uri: str) -> MlflowClient:
    import gc
    import sys

    # MLflow prints "View run ... at URL" on every set_terminated against a
    # server (and fetches the run to do so): not in the middle of our progress lines.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Importing MLflow builds ~1M long-lived objects (pandas, SQLAlchemy, its
    # entities), none of them garbage: collecting while it runs is wasted
    # CPU, and afterwards every full collection would scan them all again (a
    # 40-trial sweep's parent spent ~1 s of CPU in GC, taken from the trials
    # on a 2-core machine). So no collection during the first import, then
    # freeze what is alive: only objects made later are ever scanned. Once
    # per process: freezing is process-wide, and a long-lived process that
    # makes many clients should not pin its later garbage.
    first_import = "mlflow.tracking" not in sys.modules
    gc_was_enabled = gc.isenabled()
    if first_import:
        gc.disable()
    try:
        from mlflow.tracking import MlflowClient

        from sweep.redact import install_log_masking

        install_log_masking()  # MLflow's import installed its own log handler
        prepare_sqlite_store(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
    finally:
        if first_import:
            gc.freeze()
            if gc_was_enabled:
                gc.enable()
    return client


def _template_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dropout-sweep"


def prepare_sqlite_store(tracking_uri: str, template_dir: Path | None = None) -> bool:
    """Create a missing SQLite tracking store from a cached, already-migrated empty schema.

    MLflow builds a new SQLite store by running its whole chain of schema
    migrations: ~3 s of CPU (3.5 s vs 0.25 s from a copy, measured on the
    2-core machine), and on a 2-core machine that comes out of the trials'
    time. For one MLflow version the result is always the same empty schema,
    so it is built once per version (with MLflow's own `_initialize_tables`)
    into the user cache and copied. MLflow then adds its Default experiment,
    with this folder's artifact location, as it does for any store lacking
    one. Any failure falls back to MLflow's normal creation.

    Returns:
        True if the store was created from the template.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return False
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if path.exists() or str(path) in ("", ":memory:"):
        return False
    try:
        import mlflow
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables  # private: guarded by the fallback

        template = (template_dir or _template_dir()) / f"mlflow-{mlflow.__version__}-empty.db"
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
            engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            os.replace(tmp, template)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, tmp)
        try:
            os.link(tmp, path)  # atomic, and never over a store another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return True
    except Exception as exc:  # MLflow internals changed: let MLflow create the store itself
        log.warning("could not create %s from a template (%s); MLflow will create it", path, exc)
        return False


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_parent_run(client: MlflowClient, experiment_id: str, key: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_KEY_TAG}` = '{key}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info.run_id if runs else None


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every child run of a parent (all pages)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


# MLflow's per-request limits for log_batch.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100


def log_batch(
    client: MlflowClient,
    run_id: str,
    metrics: list[Any] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """log_batch within MLflow's per-request limits (one commit per chunk)."""
    from mlflow.entities import Param, RunTag

    metrics = list(metrics or [])
    plist = [Param(k, str(v)) for k, v in (params or {}).items()]
    tlist = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    while metrics or plist or tlist:
        client.log_batch(
            run_id,
            metrics=metrics[:_MAX_METRICS],
            params=plist[:_MAX_PARAMS],
            tags=tlist[:_MAX_TAGS],
        )
        metrics, plist, tlist = metrics[_MAX_METRICS:], plist[_MAX_PARAMS:], tlist[_MAX_TAGS:]
