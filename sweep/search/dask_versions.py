"""One line, not Dask's table, when this machine's versions differ from its Dask cluster's.

Every `distributed.Client` warns with a table of mismatched versions, at each
connection (a sweep connects more than once), and counts a Python patch level
(3.11.2 in a container, 3.11.7 here) as a mismatch although trials, sent as
pickles, do not change with it. `dask_client` connects without that warning
and says once per scheduler, on stderr, which packages really differ.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

_checked: set[str] = set()  # schedulers already checked in this process


@contextlib.contextmanager
def dask_client(scheduler: str, err: TextIO | None = None, timeout: float | None = None) -> Iterator[Any]:
    """A `distributed.Client` to `scheduler` (trying to connect for `timeout` s, default Dask's);
    the first time in this process, one line on `err` (default stderr) naming the packages
    whose versions differ, if any."""
    from distributed import Client
    from distributed.versions import VersionMismatchWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VersionMismatchWarning)
        client = Client(scheduler, **({"timeout": timeout} if timeout else {}))
    with client:
        if scheduler not in _checked:
            _checked.add(scheduler)
            versions: Any = client.get_versions()  # a dict (the client is synchronous)
            line = mismatch_line(versions)
            if line:
                (err or sys.stderr).write(line + "\n")
        yield client


def _packages(info: Any) -> dict[str, str]:
    """{package: version} of one side of `Client.get_versions()`, Python as major.minor."""
    packages = dict((info or {}).get("packages") or {})
    if packages.get("python"):
        packages["python"] = ".".join(str(packages["python"]).split(".")[:2])
    return {k: str(v) for k, v in packages.items()}


def mismatch_line(versions: Mapping[str, Any]) -> str:
    """'' when this machine, the scheduler and every worker have the same versions (a Python
    patch level aside), else one line naming each package that differs and where."""
    here = _packages(versions.get("client"))
    sides = {"the scheduler": _packages(versions.get("scheduler"))}
    sides.update({f"worker {w}": _packages(info) for w, info in (versions.get("workers") or {}).items()})
    differ = []
    for pkg in sorted(set(here).union(*sides.values())):
        mine = here.get(pkg, "missing")
        theirs = sorted({f"{v.get(pkg, 'missing')} on {where}" for where, v in sides.items()
                         if v.get(pkg, "missing") != mine and pkg in (set(here) | set(v))})
        if theirs:
            differ.append(f"{pkg} {mine} here, " + ", ".join(theirs))
    if not differ:
        return ""
    return ("dask: versions differ from the cluster's (trials travel as pickles; install the same versions, "
            "e.g. docker/sweep/requirements.txt): " + "; ".join(differ))
