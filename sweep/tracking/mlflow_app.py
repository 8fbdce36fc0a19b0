"""`mlflow ui --app-name dropout-sweep`: MLflow's own server, opening every page in its machine-learning view.

Why a server app and not a tag: in MLflow 3.17 the UI decides GenAI vs
machine-learning view in `WorkflowTypeProvider`
(mlflow/server/js/src/common/contexts/WorkflowTypeContext.tsx) from the
`workflowType` query parameter if present, else the browser's localStorage
key `mlflow.workflowType_v1` (written only by the sidebar's "GenAI / Model
training" switch), else GENAI. No experiment or run tag is read there
(`mlflow.experimentKind` only picks the experiment page's tabs), and the
links inside the UI (runs table -> run, run -> parent, Compare) drop the
query parameter. So the only lever the product has is the browser's stored
choice: this app serves MLflow's index.html with one line of script that
stores "machine_learning" before MLflow's bundle reads it. A person who
flips the switch to GenAI keeps it until the next full page load.

Everything else is MLflow's server unchanged (the same FastAPI app
`mlflow server` runs under uvicorn). Registered in pyproject.toml under the
`mlflow.app` entry points; `sweep ui` passes `--app-name dropout-sweep`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

from flask import Response
from flask.typing import ResponseReturnValue
from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app  # noqa: F401  (what uvicorn serves: MLflow's ASGI app around flask_app)

from sweep.tracking.charts import RUN_PAGE_SECTIONS

#: useLocalStorage stores `${key}_v${version}` as JSON (mlflow/server/js/src/shared/web-shared/hooks/useLocalStorage).
WORKFLOW_TYPE_KEY = "mlflow.workflowType_v1"
MACHINE_LEARNING = "machine_learning"
SET_VIEW_SCRIPT = (f"<script>try{{localStorage.setItem({json.dumps(WORKFLOW_TYPE_KEY)},"
                   f"{json.dumps(json.dumps(MACHINE_LEARNING))})}}catch(e){{}}</script>")

# A run page's chart layout lives only in the browser (sweep.tracking.charts): while a run has
# none stored, MLflow's read of it gets RUN_PAGE_SECTIONS (the curves' section before `summary`),
# which MLflow then fills with the run's metrics and stores as the run's own. Nothing else is touched.
RUN_PAGE_KEY = r"^MLflowLocalStorage-[^-]+-RunPage-[0-9a-f]+-model-chartUIState$"
SEED_RUN_PAGE_SCRIPT = (
    "<script>try{(function(){var get=Storage.prototype.getItem,key=new RegExp(" + json.dumps(RUN_PAGE_KEY) + "),"
    "seed=" + json.dumps(json.dumps(RUN_PAGE_SECTIONS)) + ";Storage.prototype.getItem=function(k){"
    "var v=get.call(this,k);return v===null&&this===window.localStorage&&key.test(k)?seed:v}})()}catch(e){}</script>"
)

# MLflow's serve is a plain (not async) view: what it returns is what a view may return.
_mlflow_serve = cast("Callable[[], ResponseReturnValue]", flask_app.view_functions["serve"])


def serve_in_machine_learning_view() -> ResponseReturnValue:
    """MLflow's index.html with SET_VIEW_SCRIPT and SEED_RUN_PAGE_SCRIPT first in <head>;
    anything else (no UI built) as MLflow serves it."""
    index = Path(flask_app.static_folder or "") / "index.html"  # MLflow always names its static folder
    if not index.exists():
        return _mlflow_serve()
    html = index.read_text(encoding="utf-8")
    scripts = SET_VIEW_SCRIPT + SEED_RUN_PAGE_SCRIPT
    html = html.replace("<head>", "<head>" + scripts, 1) if "<head>" in html else scripts + html
    # no-cache: a browser must not keep a copy of this page without the script (or MLflow's with it).
    return Response(html, mimetype="text/html", headers={"Cache-Control": "no-cache"})


flask_app.view_functions["serve"] = serve_in_machine_learning_view
