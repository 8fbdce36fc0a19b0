"""`sweep` command line: run | ablate | compare | report | status | sync | ui | check | data.

Every subcommand takes an optional sweep file (TOML, see examples/) and
flags that override it; with no file the built-in defaults (the same as
examples/digits.toml: a sweep on the offline digits set) apply.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweep.config.sweep_file import SweepConfig

from sweep.cli_args import build_parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    keys = ["dataset", "data_dir", "study", "seed", "storage", "tracking_uri", "num_train", "epochs", "jobs",
            "trials", "pruner", "timeout", "oversubscribe", "reproducible_lag", "keep_probs", "sizes", "seeds", "subsets", "vary",
            "precision", "max_seeds", "model", "model_path"]
    until = {"until": "decided"} if getattr(args, "until_decided", None) else {}
    return {**{k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}, **until}


def _origin(args: argparse.Namespace, key: str) -> str:
    """Where the setting `key` (storage | tracking_uri | jobs) came from, as the error names it."""
    flag = "--" + key.replace("_", "-")
    if getattr(args, key, None) is not None:
        return flag
    config = getattr(args, "config", None)
    if config:
        import tomllib

        try:
            with open(config, "rb") as fh:
                if key in tomllib.load(fh).get("sweep", {}):
                    return f"[sweep] {key} in {config}"
        except (OSError, ValueError):
            pass
    if key == "tracking_uri" and os.environ.get("MLFLOW_TRACKING_URI"):
        return "MLFLOW_TRACKING_URI"
    return flag


def _preflight(args: argparse.Namespace, cfg: SweepConfig, *, storage: bool = True) -> None:
    """Refuse an unusable tracking URI or storage URL before anything is trained or written."""
    from sweep.config.preflight import check_storage, check_tracking_uri, check_writable
    from sweep.tracking.store import default_tracking_uri

    check_tracking_uri(cfg.tracking_uri or default_tracking_uri(), _origin(args, "tracking_uri"),
                       experiment=cfg.study_name)
    if storage:
        check_storage(cfg.storage, _origin(args, "storage"))
    check_writable(_written_folders(args, cfg.tracking_uri or default_tracking_uri(), cfg.storage))


def _written_folders(args: argparse.Namespace, tracking_uri: str, storage: str | None) -> dict[Path, str]:
    """The folders a command writes: the working folder, and a SQLite store's or journal's own folder."""
    folders = {Path.cwd().resolve(): "working folder"}
    for key, url, prefix in (("tracking_uri", tracking_uri, "sqlite:///"), ("storage", storage or "", "journal:")):
        if url.startswith(prefix) and url != prefix:
            folders.setdefault(Path(url.removeprefix(prefix)).parent.resolve(), _origin(args, key))
    if getattr(args, "out", None):  # `sweep report --out FOLDER`: its nearest existing folder
        out = Path(args.out).resolve()
        while not out.is_dir() and out.parent != out:
            out = out.parent
        folders.setdefault(out, "--out")
    return {folder: label for folder, label in folders.items() if folder.is_dir()}


def _load(args: argparse.Namespace, *, storage: bool = True) -> SweepConfig:
    from sweep.config.sweep_file import load_config

    cfg = load_config(args.config, _overrides(args))
    if getattr(args, "reproducible", False) and cfg.reproducible_lag is None:  # else the file's or the flag's k
        from dataclasses import replace

        cfg = replace(cfg, reproducible_lag=4)  # sweep.search.reproducible.DEFAULT_LAG (that module imports optuna)
    _preflight(args, cfg, storage=storage)
    if getattr(args, "download", False) and cfg.dataset == "cifar10":
        from sweep.data.datasets import download_cifar10

        download_cifar10(cfg.data_dir)  # a no-op when the folder is complete
    return cfg


def _check_resources(args: argparse.Namespace, cfg: SweepConfig, *, ablation: bool, local: bool = True) -> None:
    """Refuse more workers than cores, or a network that cannot fit in memory (sweep.config.bounds)."""
    from sweep.config.bounds import check_jobs, check_memory, useful_jobs

    if not local:
        return  # a Dask cluster's workers have their own cores and memory
    check_jobs(cfg, _origin(args, "jobs"))
    tasks = cfg.trials if not ablation else 10**9  # an ablation's cells are counted after it reads MLflow
    check_memory(cfg, useful_jobs(cfg.resolved_jobs(), tasks), ablation=ablation)


def cmd_run(args: argparse.Namespace) -> int:
    from sweep import api

    cfg = _load(args)
    _check_resources(args, cfg, ablation=False, local=not args.dask_scheduler)
    result = api.run(cfg, dask_scheduler=args.dask_scheduler, timeout_kill=args.timeout_kill, progress=False,
                     tables=False, checked=True)
    return result.exit_code


def cmd_ablate(args: argparse.Namespace) -> int:
    from sweep import api
    from sweep.closing import ABLATION_ATTR_PREFIX, ablation_closing, record_on_study
    from sweep.tracking.store import default_tracking_uri

    cfg = _load(args)
    _check_resources(args, cfg, ablation=True, local=not args.dask_scheduler)
    result = api.ablate(cfg, name=args.name, yes=args.yes, dask_scheduler=args.dask_scheduler, progress=False,
                        tables=False, checked=True)
    outcome = result.outcome
    tracking_uri = cfg.tracking_uri or default_tracking_uri()
    record_on_study(cfg, Path.cwd(), ABLATION_ATTR_PREFIX + outcome.name, {
        "parent_run_id": outcome.parent_run_id, "experiment_id": outcome.experiment_id,
        "cells_done": outcome.cells_done, "cells_total": outcome.cells_total,
        "ended": "interrupted" if outcome.interrupted else _utc_now()})
    print("\n".join(ablation_closing(outcome, cfg, args, tracking_uri)), flush=True)
    return result.exit_code


def cmd_compare(args: argparse.Namespace) -> int:
    from sweep import api

    cfg = _load(args)
    _check_resources(args, cfg, ablation=True)
    arms = [a for a in args.arms.split(",")] if args.arms else None
    outcome = api.compare(cfg, arms=arms, budget=args.budget, seeds=args.compare_seeds, size=args.size,
                          fix=args.fix or None, checked=True)
    return 130 if outcome.interrupted else 0


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def cmd_sync(args: argparse.Namespace) -> int:
    from sweep.config.preflight import check_tracking_uri, check_writable
    from sweep.tracking.store import default_tracking_uri
    from sweep.tracking.sync import sync_all

    uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(uri, _origin(args, "tracking_uri"))
    check_writable(_written_folders(args, uri, None))
    return sync_all(Path.cwd(), uri, study=args.study, out=sys.stdout)


def cmd_report(args: argparse.Namespace) -> int:
    from sweep import api
    from sweep.closing import REPORT_ATTR, record_on_study, report_closing
    from sweep.reporting.report import ReportInterrupted, ReportNotUploaded, ReportWritten
    from sweep.search.progress import EXIT_UNTRACKED
    from sweep.tracking.store import default_tracking_uri

    cfg = _load(args)
    written = ReportWritten()
    try:
        path = api.report(cfg, out_dir=args.out, out=sys.stdout, checked=True, written=written).path
    except ReportNotUploaded as exc:
        print(f"sweep report: {exc}", file=sys.stderr)
        return EXIT_UNTRACKED
    except ReportInterrupted as exc:
        print(f"sweep report: {exc}", file=sys.stderr)
        return 130
    record_on_study(cfg, Path.cwd(), REPORT_ATTR, {
        "path": str(path), "written": _utc_now(), "experiment_id": written.experiment_id,
        "run_id": written.run_ids[-1] if written.run_ids else None})
    print("\n".join(report_closing(path, written, cfg.tracking_uri or default_tracking_uri(), cfg.study_name)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sweep.search.status import print_status

    name, storage, tracking_uri = args.study, args.storage, args.tracking_uri
    if args.config:  # the file's settings; flags win
        from sweep.config.sweep_file import load_config

        cfg = load_config(args.config)
        name = name or cfg.study_name
        storage = storage or cfg.storage
        tracking_uri = tracking_uri or cfg.tracking_uri
    return print_status(name, storage, tracking_uri, Path.cwd(), sys.stdout)


def cmd_ui(args: argparse.Namespace) -> int:
    from sweep.redact import mask_url
    from sweep.tracking.store import (
        default_tracking_uri,
        find_parent_run,
        make_client,
        set_runs_view,
        ui_url,
    )

    uri = args.tracking_uri or default_tracking_uri()
    experiment_id = parent = None
    if args.study:
        client = make_client(uri)
        exp = client.get_experiment_by_name(args.study)
        experiment_id = exp.experiment_id if exp else None
        if exp is not None:  # a store recorded before the view existed: the printed address needs it
            set_runs_view(client, exp.experiment_id, exp.tags)
        # The newest study of the name (`sweep ui` knows no storage to tell them apart).
        parent = find_parent_run(client, experiment_id, "study", newest_of_any_study=True) if experiment_id else None
    from sweep.servers import check_port_free, local_address, serve

    check_port_free(args.host, args.port)
    lines = [f"MLflow UI for {mask_url(uri)}", f"  open {ui_url(args.host, args.port, experiment_id)}"]
    if parent:
        lines.append(f"  the study's parent run: {ui_url(args.host, args.port, experiment_id, run_id=parent)}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port),
           "--workers", str(args.workers),
           # MLflow's server with its machine-learning view on every page a person clicks to
           # (sweep/tracking/mlflow_app.py).
           "--app-name", "dropout-sweep"]
    print(f"starting MLflow's UI on {mask_url(uri)} (about 20 s); its address follows once it answers", file=sys.stderr,
          flush=True)
    # The address only once the server answers: printed earlier, a click on it failed for ~20 s.
    return serve(cmd, f"http://{local_address(args.host)}:{args.port}/health", [*lines, "  (Ctrl-C to stop)"],
                 what="mlflow ui")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from sweep.redact import mask_url
    from sweep.search.status import open_storage_readonly
    from sweep.servers import check_port_free, dashboard_command, local_address, serve

    journal = Path.cwd() / "optuna.journal"
    storage = open_storage_readonly(args.storage, journal)  # refuses a missing journal/database, creates nothing
    names = [s.study_name for s in storage.get_all_studies()]
    if args.study is not None and args.study not in names:
        known = ", ".join(map(repr, names)) or "none"
        raise ValueError(f"--study: no study {args.study!r} in this storage (studies: {known})")
    check_port_free(args.host, args.port)
    cmd = dashboard_command(args.storage, str(journal), args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    where = mask_url(args.storage) if args.storage else f"journal {journal}"
    lines = [f"optuna-dashboard for {where}"]
    if args.study is not None:
        lines.append(f"  open {base}/dashboard/studies/{storage.get_study_id_from_name(args.study)}")
    else:
        lines.append(f"  open {base}/dashboard")
    lines.append("  (Ctrl-C to stop)")
    return serve(cmd, f"http://{local_address(args.host)}:{args.port}/api/meta", lines, what="optuna-dashboard")


def cmd_check(args: argparse.Namespace) -> int:
    from sweep.check.runner import cmd_check as check

    return check(args)


def cmd_data(args: argparse.Namespace) -> int:
    from sweep.data.datasets import download_cifar10

    path = download_cifar10(data_dir=args.data_dir, url=args.url)
    print(f"CIFAR-10 ready in {path}")
    return 0


COMMANDS = {"run": cmd_run, "ablate": cmd_ablate, "compare": cmd_compare, "report": cmd_report, "status": cmd_status, "sync": cmd_sync,
            "ui": cmd_ui, "dashboard": cmd_dashboard,
            "check": cmd_check,
            "data": cmd_data}


def _named_as_flag(exc: ValueError) -> str:
    """The error's one line, a command-line setting named as the flag a person typed.

    `--num-train`, not `command line: num_train`; `--keep-probs (value 2)`, not `keep_probs[1]`;
    `--vary keep_prob`, not `vary.keep_prob`.
    """
    from sweep.config.domains import ConfigError

    if not (isinstance(exc, ConfigError) and exc.source == "command line" and exc.key):
        return str(exc)
    key = exc.key
    if key.startswith("--"):
        return f"{key}: {exc.detail}"
    name, _, rest = key.partition(".")
    if not name.partition("[")[0].isidentifier():
        return str(exc)
    flag = "--" + _value_number(name).replace("_", "-")
    return f"{flag} {_value_number(rest)}: {exc.detail}" if rest else f"{flag}: {exc.detail}"


def _value_number(key: str) -> str:
    """`keep_probs[1]` as `keep_probs (value 2)`: people count a flag's values from 1."""
    name, bracket, index = key.partition("[")
    return f"{name} (value {int(index[:-1]) + 1})" if bracket and index[:-1].isdigit() else key


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    from sweep.redact import install_log_masking, mask_text
    from sweep.search.stops import raise_terminated, signal_name

    args = build_parser().parse_args(argv)
    install_log_masking()
    # SIGTERM like Ctrl-C in every command: it stops with a line, not in silence (a command
    # that has more to say, such as `sweep run`, handles it itself).
    old_term = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        return COMMANDS[args.command](args)
    except ValueError as exc:  # config/data errors already name the field or file
        print(f"sweep {args.command}: error: {mask_text(_named_as_flag(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"sweep {args.command}: stopped by {signal_name(exc)}", file=sys.stderr)
        return 130
    except Exception as exc:  # a disk that filled up or turned read-only mid-command (checked at start)
        from sweep.search.progress import EXIT_FAULT
        from sweep.search.recovery import disk_error, disk_error_text

        disk = disk_error(exc)
        if disk is None:
            raise
        print(f"sweep {args.command}: error: {disk_error_text(disk)}; what was recorded before is kept: "
              "free space there (or make it writable) and run the same command to resume", file=sys.stderr)
        return EXIT_FAULT
    finally:
        signal.signal(signal.SIGTERM, old_term)


def console_main() -> None:
    """The `sweep` executable: `main`, then exit without collecting its heap.

    At exit the interpreter's final garbage collection would traverse every
    object MLflow, pandas and Optuna left behind: ~0.7 s after the last
    line is printed (measured: 0.75 s against 0.09 s frozen). `gc.freeze()`
    takes them out of that traversal; atexit handlers and stream flushing
    still run as usual.
    """
    import faulthandler
    import gc

    # A crash in native code (a segfault) prints where it happened instead of ending in silence: a CI
    # run saw one `sweep run` end with -11 and no output (not reproduced in three runs of the same test).
    faulthandler.enable()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_main()
