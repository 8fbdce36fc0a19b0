"""MLflow stores, experiments and runs: the lookups every command shares.

The tracker thread (sweep.tracking), `sweep report`, `sweep ablate` and
`sweep ui` all find experiments and runs the same way: by name, by the
`sweep.parent_key` tag of a parent run, by `mlflow.parentRunId` of a child.
Nothing here imports MLflow at module level (importing it costs ~1.8 s).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.tracking.charts import CHART_VIEW

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

PARENT_KEY_TAG = "sweep.parent_key"

# Names of what a run records, in one place. Per-epoch curves (step = epoch)
# are metrics with plain names. One-shot figures (one value per run) are TAGS
# `summary/<name>` (the run's Overview, runs-table columns); the few worth a
# chart are also metrics (PLOTTED_SUMMARIES, below). MLflow 3.17's run page
# groups metrics by prefix and puts every prefixed section (`summary/...`) BEFORE
# the default "Model metrics" one (RunsChartsCardConfig.getBaseChartAndSectionConfigs:
# the other sections sorted, then Model metrics, then System metrics), so the
# run page's layout is seeded by `sweep ui` (sweep.tracking.mlflow_app).
# Stores written before: metrics `<name>` (and `summary/<name>`); `summary_metrics` reads all three.
CURVE_METRICS = ("train_acc", "val_acc", "train_loss", "val_loss", "gap", "lr", "epoch_seconds")
SUMMARY_PREFIX = "summary/"
SUMMARY_METRICS = (
    "best_val_acc", "best_epoch", "final_train_acc", "final_val_acc", "final_gap", "final_val_loss",
    "epochs_trained", "best_test_acc",
)  # fmt: skip


def summary_key(name: str) -> str:
    """MLflow tag key of the one-shot figure `name`, e.g. 'summary/best_val_acc'."""
    return SUMMARY_PREFIX + name


# One-shot figures that are ALSO metrics `summary/<name>` (logged at step 0, one
# point each), so that MLflow's parallel-coordinates and scatter charts, which
# take metrics only, can use them. On a run's page MLflow 3.17 would draw their
# `summary` section ahead of the curves; `sweep ui` seeds the run page's chart
# layout with the curves first (sweep.tracking.mlflow_app). For a pruned trial
# they are its best over the epochs it trained, not the last value at pruning.
PLOTTED_SUMMARIES = ("best_val_acc", "epochs_trained", "final_gap", "best_test_acc")


def summary_tags(summary: Mapping[str, float]) -> dict[str, str]:
    """A run's one-shot figures (bare names, as in Optuna's user attrs) -> MLflow tags.

    Rounded as a person writes them (0.9833, a gap of 0.02, 15 epochs), with the
    row counts that let `summary_metrics` read the accuracies back exactly
    (sweep.tracking.rounding).
    """
    from sweep.tracking.rounding import rounded_summary

    return {summary_key(k): f"{v:.10g}" for k, v in rounded_summary(summary).items()}


def summary_chart_metrics(summary: Mapping[str, float]) -> dict[str, float]:
    """The PLOTTED_SUMMARIES of a run as MLflow metrics `summary/<name>`, rounded like the tags."""
    from sweep.tracking.rounding import rounded_summary

    return {summary_key(k): v for k, v in rounded_summary(summary).items() if k in PLOTTED_SUMMARIES}


def summary_metrics(run: Run) -> dict[str, float]:
    """A run's one-shot figures by bare name ('best_val_acc': 0.97, ...).

    THE reader of them: the tag `summary/<name>`, else (stores written
    before) the metric `summary/<name>` or the bare metric `<name>`.
    Accuracies recorded with their row counts come back exact (k/n, bit for
    bit: sweep.tracking.rounding.exact_summary), so statistics never see the rounding.
    """
    from sweep.tracking.rounding import exact_summary

    metrics, tags = run.data.metrics, run.data.tags
    out = {k: metrics[k] for k in SUMMARY_METRICS if k in metrics}
    out.update({k.removeprefix(SUMMARY_PREFIX): v for k, v in metrics.items() if k.startswith(SUMMARY_PREFIX)})
    for k, v in tags.items():
        if k.startswith(SUMMARY_PREFIX):
            try:
                out[k.removeprefix(SUMMARY_PREFIX)] = float(v)
            except ValueError:
                log.warning("run %s: tag %s=%r is not a number", run.info.run_id, k, v)
    return exact_summary(out)


# Old runs have no state tag: FINISHED was COMPLETE, FAILED and KILLED a failure.
_STATE_OF_STATUS = {"FINISHED": "COMPLETE", "FAILED": "FAIL", "KILLED": "FAIL"}


def run_state(run: Run) -> str:
    """How a trial or cell run ended, in Optuna's words: COMPLETE, PRUNED, FAIL (or RUNNING...).

    From the run's `state` tag (sweep.tracking.spool.STATE_TAG), not its MLflow status:
    a pruned trial is FINISHED today and was KILLED in stores written before,
    and the tag says PRUNED in both. Runs without the tag (cells recorded
    before it existed) fall back to the status.
    """
    from sweep.tracking.spool import STATE_TAG

    tag = run.data.tags.get(STATE_TAG)
    if tag:
        return tag
    return _STATE_OF_STATUS.get(run.info.status, run.info.status)


def default_tracking_uri(workdir: Path | None = None) -> str:
    """MLflow's own default store, as an absolute URI so every process agrees."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    from sweep.paths import default_mlflow_db

    db = default_mlflow_db(workdir or Path.cwd())
    return f"sqlite:///{db}"


def ui_url(host: str, port: int, experiment_id: str | None = None, *, run_id: str | None = None,
           base: str | None = None) -> str:
    """Address of the classic runs table (in this project's view), or of one run's page with `run_id`.

    Always with `?workflowType=machine_learning`: MLflow 3 opens an
    experiment, and a run, in its GenAI view otherwise. The runs table also
    gets `viewStateShareKey=` RUNS_VIEW_KEY (columns keep_prob, hidden sizes,
    ..., see RUNS_VIEW). `base` (a tracking server's own URL) replaces http://host:port.
    """
    base = (base or f"http://{host}:{port}").rstrip("/")
    if experiment_id is None:
        return base
    if run_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    # The /runs route: the bare experiment route redirects there and drops the view key.
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}"


# What a person first sees in the runs table: MLflow shows Source, Models and
# Dataset columns by default (all empty here). A "shared view" is MLflow's own
# way to hand someone a table layout: an experiment tag
# `mlflow.sharedViewState.<key>` holding the view as JSON, opened by
# `?viewStateShareKey=<key>` (the UI's Share button makes the same). The UI
# does not take the expanded rows from it, so the parent runs start folded.
RUNS_VIEW_KEY = "dropout-sweep"
_SHARED_VIEW_TAG = "mlflow.sharedViewState."
RUNS_VIEW: dict[str, Any] = {
    "selectedColumns": [
        "params.`keep_prob`", "params.`hidden_dims`", "params.`normalization`", "params.`learning_rate`",
        "tags.`summary/best_val_acc`", "tags.`summary/epochs_trained`", "tags.`state`",
    ],
    "runsHiddenMode": "SHOW_ALL",  # the chart view draws every trial's curve, not the first 10 runs'
    **CHART_VIEW,  # parallel coordinates and keep_prob scatters first, then the curves (sweep.tracking.charts)
}


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
        # MLflow logs every SQLAlchemy error with its traceback (~50 lines) before raising it;
        # the caller handles the raised error (a full disk: one line, the tracker: its outage line).
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
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
        try:
            shutil.copyfile(template, tmp)
            os.link(tmp, path)  # atomic, and never over a store another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)  # also a half copy the disk cut short
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            # MLflow's own creation would fail the same way, with pages of SQLAlchemy
            # tracebacks and a 0-byte mlflow.db left behind: say it once instead.
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        log.warning("could not create %s from a template (%s); MLflow will create it", path, exc)
        return False
    except Exception as exc:  # MLflow internals changed: let MLflow create the store itself
        log.warning("could not create %s from a template (%s); MLflow will create it", path, exc)
        return False


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The experiment `name`'s id (restored if deleted, created if missing), with RUNS_VIEW on it."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        set_runs_view(client, exp.experiment_id, exp.tags)
        return exp.experiment_id
    try:
        exp_id = client.create_experiment(name)
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        exp_id = exp.experiment_id
    set_runs_view(client, exp_id, {})
    return exp_id


def set_runs_view(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> None:
    """Store RUNS_VIEW as the experiment's shared view RUNS_VIEW_KEY (unless it is there already)."""
    import json

    key, value = _SHARED_VIEW_TAG + RUNS_VIEW_KEY, json.dumps(RUNS_VIEW)
    if tags.get(key) != value:
        try:
            client.set_experiment_tag(experiment_id, key, value)
        except Exception as exc:  # a nicety: never worth failing a sweep for
            log.warning("could not store the runs table view on experiment %s: %s", experiment_id, exc)


def find_parent_run(client: MlflowClient, experiment_id: str, key: str, study_key: str | None = None, *,
                    newest_of_any_study: bool = False) -> str | None:
    """The first parent run `key` of the study whose key (sweep.paths.STUDY_KEY_TAG) is `study_key`;
    None: of a study from before keys (runs without the tag). Studies of one name share an experiment.
    `newest_of_any_study`: the latest started of them all (`sweep ui`, which knows no storage)."""
    from sweep.paths import STUDY_KEY_TAG

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time ASC"],
    )
    if newest_of_any_study:
        return runs[-1].info.run_id if runs else None
    mine = [r for r in runs if r.data.tags.get(STUDY_KEY_TAG) == study_key]
    return mine[0].info.run_id if mine else None


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
