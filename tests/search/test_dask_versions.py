"""sweep.search.dask_versions: a version difference with the Dask cluster is one line, and a
Python patch level (3.11.2 in the stack's containers, 3.11.x here) is none."""

from __future__ import annotations

import copy
import io
from typing import Any

from sweep.search.dask_versions import dask_client as connect
from sweep.search.dask_versions import mismatch_line


def _as_from_another_machine(versions: dict[str, Any], **packages: str) -> dict[str, Any]:
    """The cluster's answer with its first worker reporting other versions of `packages`."""
    other = copy.deepcopy(versions)
    first = sorted(other["workers"])[0]
    other["workers"][first]["packages"].update(packages)
    return other


def test_the_same_versions_or_only_a_python_patch_level_are_no_line(dask_client: Any) -> None:
    versions = dask_client.get_versions()
    assert mismatch_line(versions) == ""
    major, minor, patch = versions["client"]["packages"]["python"].split(".")[:3]
    other_patch = f"{major}.{minor}.{int(patch) + 1}.final.0"
    assert mismatch_line(_as_from_another_machine(versions, python=other_patch)) == ""


def test_a_package_that_differs_is_named_with_both_versions_on_one_line(dask_client: Any) -> None:
    versions = dask_client.get_versions()
    here = versions["client"]["packages"]["numpy"]
    line = mismatch_line(_as_from_another_machine(versions, numpy="1.26.4", python="3.12.1.final.0"))
    worker = sorted(versions["workers"])[0]
    assert "\n" not in line and line.startswith("dask: versions differ from the cluster's")
    assert f"numpy {here} here, 1.26.4 on worker {worker}" in line
    assert "python 3.1" in line and "3.12 on worker" in line  # a minor version does matter
    assert "dask " not in line.split(": ", 2)[-1]  # packages that agree are not listed


def test_dask_client_connects_and_says_nothing_when_the_versions_match(dask_client: Any) -> None:
    err = io.StringIO()
    with connect(dask_client.scheduler.address, err) as client:
        assert sum(client.nthreads().values()) == 2
    assert err.getvalue() == ""
