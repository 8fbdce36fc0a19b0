"""examples/quickstart.ipynb executed as a person would (a Jupyter kernel, cell by cell), its outputs checked.

The notebook is written by examples/make_quickstart.py (edit that, then run it)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs_and_shows_the_verdict_tables_and_a_figure(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    env = {"SWEEP_CACHE_DIR": str(tmp_path / "cache")}
    old = {k: os.environ.get(k) for k in (*env, "MLFLOW_TRACKING_URI")}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    html = "\n".join(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "**Sweep `dropout-digits`**: 6 of 6 trials counted" in markdown
    assert "**Ablation `" in markdown and "In short" in markdown  # the verdict, inline
    assert "**Report for `dropout-digits`**" in markdown
    assert "params_keep_prob" in html and "mean_diff" in html  # the trials and comparisons tables
    pngs = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert pngs and base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in text
    assert (tmp_path / "reports" / "dropout-digits" / "report.md").exists()
    # Part 2: the check finds the write-up's mistake; the ablation runs on the student's own net.
    assert "FAIL  dropout_forward: with p=0.25 it keeps 7" in text and "p acts as a DROP probability" in text
    assert "model FullyConnectedNet from " in text and "a KEEP probability, given keep_prob" in text
    assert markdown.count("**Ablation `") == 2, markdown


def test_the_notebook_is_what_its_generator_writes() -> None:
    """examples/quickstart.ipynb is generated: an edit by hand would be lost at the next generation."""
    nbformat = pytest.importorskip("nbformat")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_quickstart", NOTEBOOK.parent / "make_quickstart.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in generator.BUILT_IN + generator.OWN]
