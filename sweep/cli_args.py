"""The `sweep` command line's flags: every subcommand's parser, with help that states each default.

Defaults a sweep file may set are read from sweep.config (so `--help` cannot
drift from them); a usage error is one line naming the flag and exit code 2.
"""

from __future__ import annotations

import argparse


def _csv_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1,0.75,0.5; got {text!r}") from None


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 500,2000; got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {text!r}")
    return value


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help when argparse holds its real default.

    Flags whose default comes from the sweep file have default None here: their help
    text says the default itself (taken from sweep.config, see `_defaults`).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: {action.default})"


def _defaults() -> dict[str, str]:
    """The built-in defaults as `--help` states them, read from sweep.config (so they cannot drift)."""
    from sweep.config.space import Fixed
    from sweep.config.sweep_file import DEFAULT_ABLATION_SIZES, AblationConfig, SweepConfig

    cfg, grid = SweepConfig(), AblationConfig()
    epochs = cfg.space.epochs
    return {
        "dataset": cfg.dataset, "trials": str(cfg.trials), "seed": str(cfg.seed), "pruner": cfg.pruner,
        "jobs": "all cores" if cfg.jobs == 0 else str(cfg.jobs),
        "epochs": str(epochs.value) if isinstance(epochs, Fixed) else "searched",
        "keep_probs": ",".join(f"{k:g}" for k in grid.keep_probs), "seeds": str(grid.seeds),
        "subsets": grid.subsets,
        "sizes": "; ".join(f"{d} {','.join(map(str, v))}" for d, v in DEFAULT_ABLATION_SIZES.items()),
    }


_FILE = "the sweep file's, else "  # a flag's default when the sweep file may set it


def _add_config(p: argparse.ArgumentParser, d: dict[str, str]) -> None:
    p.add_argument("config", nargs="?",
                   help=f"sweep file (TOML, see examples/); default: the built-in {d['dataset']} sweep")


def _add_where(p: argparse.ArgumentParser, d: dict[str, str]) -> None:
    """The flags naming a study and where it is recorded (every command that reads or writes one)."""
    p.add_argument("--dataset", choices=["digits", "cifar10"],
                   help=f"dataset; names the default study (default: {_FILE}{d['dataset']}, offline)")
    p.add_argument("--study", help=f"Optuna study and MLflow experiment name (default: {_FILE}dropout-<dataset>)")
    p.add_argument("--storage", help=f"Optuna storage URL (default: {_FILE}./optuna.journal)")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: {_FILE}$MLFLOW_TRACKING_URI, "
                                          "else sqlite:///mlflow.db here)")


def _add_common(p: argparse.ArgumentParser, d: dict[str, str]) -> None:
    """The flags of the commands that train (run, ablate)."""
    _add_config(p, d)
    _add_where(p, d)
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py (default: the sweep file's, "
                                      "else $SWEEP_DATA_DIR, else a per-user cache)")
    p.add_argument("--seed", type=int,
                   help=f"study seed; trial seeds derive from it and the trial number (default: {_FILE}{d['seed']})")
    p.add_argument("--num-train", type=int,
                   help="training examples, a nested seeded subset (default: the sweep file's, else the whole split)")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default: {_FILE}{d['epochs']})")
    p.add_argument("--jobs", type=int, help=f"worker processes; 0 = all cores (default: {_FILE}{d['jobs']})")
    p.add_argument("--oversubscribe", action="store_true", default=None,
                   help="allow --jobs above the number of cores, refused otherwise (default: the sweep file's "
                        "oversubscribe, else off)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 first if it is not in the data folder")
    p.add_argument("--model", metavar="MODULE:CLASS",
                   help="train your own cs231n-style FullyConnectedNet instead of the built-in one, e.g. "
                        "cs231n.classifiers.fc_net:FullyConnectedNet or path/to/fc_net.py:FullyConnectedNet; "
                        "checked before any trial (default: the sweep file's [model] class, else the built-in net)")
    p.add_argument("--model-path", metavar="DIR",
                   help="folder to import --model from, e.g. ~/assignment2 (default: the sweep file's [model] "
                        "path, else Python's import path)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the flag and what is allowed) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from sweep.config.factors import MAX_GRID_CELLS

    d = _defaults()
    parser = _Parser(prog="sweep", description="Does dropout regularize a network, and by how much?",
                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _sub_add = sub.add_parser
    sub.add_parser = lambda *a, **k: _sub_add(*a, formatter_class=_HelpFormatter, **k)  # type: ignore[method-assign]

    run = sub.add_parser("run", help="search keep_prob, hidden sizes, learning rate and normalization with Optuna")
    _add_common(run, d)
    run.add_argument("--trials", type=int, help="the study's TOTAL number of trials, a rerun adds only the missing "
                                                 f"ones (default: {_FILE}{d['trials']})")
    run.add_argument("--pruner", choices=["hyperband", "median", "none"],
                     help="stop unpromising trials early: hyperband (successive halving over epochs), median "
                          f"(below the median of earlier trials at the same epoch) or none (default: {_FILE}"
                          f"{d['pruner']})")
    run.add_argument("--reproducible", action="store_true",
                     help="the same --seed gives the same trials, params, pruning and curves at any --jobs "
                          "and on Dask (trial n sees only trials < n - k, waiting for them) (default: off)")
    run.add_argument("--reproducible-lag", type=int, metavar="K",
                     help="k of --reproducible (default: 4; implies it)")
    run.add_argument("--dask-scheduler", help="run trials on a Dask cluster at this address, needs a shared --storage "
                                                          "(default: none, local joblib processes)")
    run.add_argument("--timeout", metavar="DURATION",
                     help="time budget of this run: 90s, 45m, 2h, 1h30m; no trial starts after it "
                          "(running ones finish); the same command later continues towards --trials "
                          "(default: the sweep file's, else none)")
    run.add_argument("--timeout-kill", action="store_true",
                     help="at the budget's end also stop the running trials (re-queued, like Ctrl-C)")

    ablate = sub.add_parser("ablate", help="seed-paired re-training over keep_prob x training-set size")
    _add_common(ablate, d)
    ablate.add_argument("--keep-probs", type=_csv_floats, help="keep probabilities, 1 = no dropout "
                                                               f"(default: {_FILE}{d['keep_probs']})")
    ablate.add_argument("--sizes", type=_csv_ints,
                        help=f"training-set sizes, e.g. 500,2000 (default: {_FILE}by dataset: {d['sizes']})")
    ablate.add_argument("--seeds", type=int,
                        help=f"seeds per cell, paired across keep_prob (default: {_FILE}{d['seeds']})")
    ablate.add_argument("--subsets", choices=["fixed", "per-seed"],
                        help="training rows of each size: the same for every seed (fixed, the default) or "
                             "drawn afresh per seed (per-seed: the intervals then cover the choice of rows) "
                             f"(default: {_FILE}{d['subsets']})")
    ablate.add_argument("--vary", action="append", metavar="NAME=V1,V2,...",
                        help="one more factor of the grid (repeatable): a fixed training parameter and its values, "
                             "e.g. normalization=none,batchnorm or hidden_dims=512-512,1024-1024 "
                             "(replaces [ablation] vary of the sweep file; default: the sweep file's, else none)")
    ablate.add_argument("--until-decided", action="store_true", default=None,
                        help="add seeds in rounds only to the comparisons still undecided, until each "
                             "one's anytime-valid 95 %% interval (Bonferroni over the grid) excludes 0 "
                             "(default: the sweep file's until, else a fixed --seeds)")
    ablate.add_argument("--precision", type=float, metavar="POINTS",
                        help="with --until-decided: also stop a comparison whose anytime interval is at "
                             "most POINTS points of accuracy wide (default: the sweep file's, else none)")
    ablate.add_argument("--max-seeds", type=int, metavar="N",
                        help="with --until-decided: at most N seeds per comparison (default: the sweep "
                             "file's max_seeds, else 20)")
    ablate.add_argument("--yes", action="store_true",
                        help=f"don't ask, run it: a grid of more than {MAX_GRID_CELLS} cells, or one estimated "
                             "at over 10 minutes of wall time")
    ablate.add_argument("--name", help="ablation name (default: ablation-<hash of the configuration and grid>)")
    ablate.add_argument("--dask-scheduler", help="train the cells on a Dask cluster at this address "
                                                 "(default: none, local joblib processes)")

    _add_compare(sub.add_parser("compare", help="regularizers against each other: each tuned on validation with an "
                                "equal budget, then seed-paired on the test split"), d)

    report = sub.add_parser("report", help="statistics, figures and a verdict for a study and its ablations")
    _add_config(report, d)
    _add_where(report, d)
    report.add_argument("--out", help="output folder (default: reports/<its .sweep folder's name> here, "
                                          "e.g. reports/dropout-digits)")

    status = sub.add_parser("status", help="how a study stands, read from its storage (read-only; every study if none named)")
    status.add_argument("config", nargs="?", help="sweep file (TOML) whose [sweep] study/storage/tracking_uri to use "
                                                  "(default: none)")
    status.add_argument("--study", help="study to show (default: the sweep file's, else every study in the storage)")
    status.add_argument("--storage", help=f"Optuna storage URL (default: {_FILE}./optuna.journal)")
    status.add_argument("--tracking-uri", help="MLflow tracking URI, for the address shown (default: the one "
                                               "the sweep recorded, else sqlite:///mlflow.db here)")

    sync = sub.add_parser("sync", help="upload to MLflow what the spool folders hold and MLflow lacks "
                                       "(after a tracking outage); safe to run again")
    sync.add_argument("--study", help="only this study (default: every study under .sweep/ here)")
    sync.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")

    ui = sub.add_parser("ui", help="open MLflow's UI on this sweep's tracking store")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                           "else sqlite:///mlflow.db here)")
    ui.add_argument("--study", help="study whose experiment to point at (default: none, the experiments list)")
    _add_serve(ui, 5000)
    ui.add_argument("--workers", type=_positive_int, default=1,
                    help="server processes (default: 1, one person's browser; MLflow's own default, 4, "
                         "starts each importing MLflow, ~4x the start-up CPU)")

    dash = sub.add_parser("dashboard", help="open optuna-dashboard on this sweep's Optuna storage "
                                            "(history, parameter importances, the objective named)")
    dash.add_argument("--study", help="study to point at (default: the storage's studies list)")
    dash.add_argument("--storage", help="Optuna storage URL (default: ./optuna.journal)")
    _add_serve(dash, 8080)

    check = sub.add_parser("check", help="check your own cs231n layers or net against this project's reference")
    check.add_argument("target", metavar="MODULE[:CLASS]",
                       help="module with layer functions (cs231n.layers, or a .py file), or MODULE:CLASS for a net")
    check.add_argument("--model-path", metavar="DIR",
                       help="folder to import MODULE from, e.g. ~/assignment2 (default: Python's import path)")

    data = sub.add_parser("data", help="dataset management")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    dl = data_sub.add_parser("download", help="download and verify a dataset")
    dl.add_argument("name", choices=["cifar10"])
    dl.add_argument("--data-dir", help="target folder (default: $SWEEP_DATA_DIR, else a per-user cache)")
    dl.add_argument("--url", help="archive URL (default: the official CIFAR-10 address, or $SWEEP_CIFAR10_URL)")
    return parser


def _add_compare(p: argparse.ArgumentParser, d: dict[str, str]) -> None:
    from sweep.ablation.arms import ARM_NAMES

    _add_common(p, d)
    p.add_argument("--arms", help=f"arms, comma-separated, 'none' required: {', '.join(ARM_NAMES)} "
                                  "(default: every arm the dataset takes; augmentation only for images)")
    p.add_argument("--budget", type=_positive_int, default=8,
                   help="tuning trials per arm (each arm's own search of its strength on the validation set)")
    p.add_argument("--seeds", dest="compare_seeds", type=int, default=5,
                   help="paired seeds per arm, >= 2 (seed k: same init, batch order and rows in every arm)")
    p.add_argument("--size", type=_positive_int,
                   help="training rows (default: --num-train / the sweep file's, else the whole split)")
    p.add_argument("--fix", action="append", metavar="ARM:NAME=V[,NAME=V]",
                   help="give an arm's strength instead of searching it (repeatable), e.g. l2:reg=1e-3 or "
                        "dropout+max-norm:keep_prob=0.5,max_norm=3 (default: none, every arm with a knob is searched)")


def _add_serve(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address the server listens on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=port, help="port the server listens on")
