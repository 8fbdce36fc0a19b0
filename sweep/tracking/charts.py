"""The charts MLflow's UI opens with: the experiment's chart view, and a run page's sections.

Where MLflow 3.17 keeps a chart layout (read in its UI source, mlflow/server/js/src):
- The experiment page's chart view: `compareRunCharts` / `compareRunSections` of the
  experiment page's UI state, which a shared view carries
  (EXPERIMENT_PAGE_UI_STATE_FIELDS; useSharedExperimentViewState picks them out of the
  experiment tag `mlflow.sharedViewState.<key>` opened by `?viewStateShareKey=<key>`).
  So it is stored server-side, in RUNS_VIEW (sweep.tracking.store), as CHART_VIEW. The charts
  draw the rows the table lists, so a study's trials once its row is expanded (a shared
  view does not carry `runsExpanded`, one of the fields MLflow keeps out of a share).
- A run's page ("Model metrics"): only the browser's localStorage, per run
  (RunViewMetricChartsV2: `MLflowLocalStorage-1.1-RunPage-<run id>-model-chartUIState`),
  built on first open by RunsChartsCardConfig.getBaseChartAndSectionConfigs, which puts
  every prefixed section (`summary/...`) before "Model metrics". No tag or server
  setting reaches it, so `sweep ui`'s server (sweep.tracking.mlflow_app) answers that
  key, while a run has none stored, with RUN_PAGE_SECTIONS: the curves' section first,
  then `summary`. MLflow fills the sections with the run's own metrics (by name prefix),
  as it does for any layout it restores.
"""

from __future__ import annotations

from typing import Any

SUMMARY_SECTION = "summary"  # MLflow names a section after the metrics' prefix (summary/...)
MODEL_SECTION = "Model metrics"  # MLflow's section of unprefixed metrics (MLFLOW_MODEL_METRIC_NAME)


def _section(uuid: str, name: str) -> dict[str, Any]:
    # isReordered: MLflow appends a new metric's chart to the section (in the order the run's
    # metrics come, by name) instead of splicing it in by name, which misplaces the last one.
    return {"uuid": uuid, "name": name, "display": True, "isReordered": True, "deleted": False, "isGenerated": True}


# isAccordionReordered: without it MLflow re-sorts the sections on every update
# (updateChartAndSectionConfigs: prefixed sections first, then Model metrics), undoing ours.


def _scatter(uuid: str, x_param: str, y_metric: str, title: str) -> dict[str, Any]:
    return {"uuid": uuid, "type": "SCATTER", "metricSectionId": "sweep-summary", "deleted": False,
            "isGenerated": False, "displayName": title, "runsCountToCompare": 10000,
            "xaxis": {"key": x_param, "type": "PARAM"}, "yaxis": {"key": y_metric, "type": "METRIC"}}


#: Axes of the parallel-coordinates chart: what the sweep searches, then the outcome.
PARALLEL_PARAMS = ["keep_prob", "depth", "units", "learning_rate", "normalization"]

#: The experiment's chart view: what the search found first (parallel coordinates,
#: keep_prob against best val acc and against the final gap), then every run's curves.
CHART_VIEW: dict[str, Any] = {
    "compareRunSections": [_section("sweep-summary", SUMMARY_SECTION), _section("sweep-curves", MODEL_SECTION)],
    "compareRunCharts": [
        {"uuid": "sweep-parallel", "type": "PARALLEL", "metricSectionId": "sweep-summary", "deleted": False,
         "isGenerated": False, "displayName": "what the search tried -> best val acc", "runsCountToCompare": 10000,
         "selectedParams": PARALLEL_PARAMS, "selectedMetrics": ["summary/best_val_acc"], "showAllRuns": True},
        _scatter("sweep-keep-acc", "keep_prob", "summary/best_val_acc", "keep_prob vs best val acc"),
        _scatter("sweep-keep-gap", "keep_prob", "summary/final_gap", "keep_prob vs final train-val gap"),
    ],
    "isAccordionReordered": True,
}

#: A run page's sections, curves first (MLflow adds one chart per metric into them).
RUN_PAGE_SECTIONS: dict[str, Any] = {
    "isAccordionReordered": True,
    "compareRunCharts": [],
    "compareRunSections": [_section("run-curves", MODEL_SECTION), _section("run-summary", SUMMARY_SECTION)],
    "autoRefreshEnabled": True,
    "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
}
