"""`sweep status`: how a study stands, read from its storage alone (read-only, no MLflow import).

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
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

TARGET_ATTR = "target_trials"
PROCESS_PREFIX = "sweep.process:"
MLFLOW_ATTR = "mlflow"


def mask_password(uri: str) -> str:
    """`uri` with the password of its user-info replaced by '***' (no secret in attrs or output)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def mark_sweep_process(study: Any, target: int, *, ended: bool = False) -> None:
    """Record this `sweep run` process (and the target) on the study; `ended` when it is done."""
    from sweep import spool

    pid = os.getpid()
    host = socket.gethostname()
    key = f"{PROCESS_PREFIX}{host}:{pid}"
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record = study.user_attrs.get(key) if ended else None
    if record is None:
        record = {"host": host, "pid": pid, "proc_start": spool.process_start_time(pid), "started": now, "ended": None}
    if ended:
        record = {**record, "ended": now}
    else:
        study.set_user_attr(TARGET_ATTR, target)
    study.set_user_attr(key, record)


def record_experiment(study: Any, experiment_id: str | None, tracking_uri: str) -> str | None:
    """Keep the study's MLflow experiment id and tracking URI (masked) on the study."""
    if experiment_id is not None:
        study.set_user_attr(MLFLOW_ATTR, {"experiment_id": experiment_id, "tracking_uri": mask_password(tracking_uri)})
    return experiment_id
