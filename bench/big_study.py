"""Do big studies stay fast? A study of N tiny trials, per-trial time by hundred, MLflow's backlog, report/status.

Runs `sweep run` on N digits trials of ~0.05-0.1 s each (300 training rows, one
hidden layer of 8-32 units, 2 epochs, no pruning, --jobs 2) in a fresh working
folder, then prints:

* wall time per trial for each hundred trials, in the order they ended (from
  the trials' end times in the journal) and its ratio to the first hundred
  after warm-up (the second hundred: the first holds imports, the MLflow
  store's creation and TPE's start-up trials);
* MLflow's backlog over time: runs that ended (or had no run yet) and were not
  in MLflow when the tracker's sync started (from SWEEP_MIRROR_LOG), its
  maximum per tenth of the sweep, and how many runs MLflow lacks at the end;
* how long `sweep report` and `sweep status` take on the finished study (twice
  each: the second report reads its cached importances).

    python bench/big_study.py              # N = 1 000
    python bench/big_study.py --big        # N = 10 000 (about 20-30 min on 2 cores)
    python bench/big_study.py --trials 300 --keep /tmp/big   # keep the folder

`bench/overhead_6s.py` measures the other half of issue 23 (6-s trials
against their bare twin and a naive Optuna + MLflow script).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[sweep]
dataset = "digits"
num_train = 300
pruner = "none"
seed = 11
study = "big"

[space]
keep_prob = {low = 0.3, high = 1.0, step = 0.05}
depth = 1
width = {low = 8, high = 32, log = true}
learning_rate = {low = 1e-3, high = 1e-2, log = true}
normalization = ["none", "batchnorm"]
weight_scale = 0.05
batch_size = 100
epochs = 2
lr_decay = 1.0
"""


def sweep(work: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=work, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"sweep {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def per_hundred(work: Path) -> list[float]:
    """Seconds of wall time per trial, for each hundred trials in order of their end."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(work / "optuna.journal")))
    study = optuna.load_study(study_name="big", storage=storage)
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    ends = sorted(t.datetime_complete.timestamp() for t in trials)
    start = min(t.datetime_start.timestamp() for t in trials if t.datetime_start is not None)
    edges = [start, *ends[99::100]]
    return [(b - a) / 100 for a, b in itertools.pairwise(edges)]


def backlog_series(log: Path, tenths: int = 10) -> tuple[list[int], int]:
    """Maximum backlog (runs behind at a sync's start) per tenth of the sweep, and overall."""
    rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    if not rows:
        return [], 0
    times = [float(r[0]) for r in rows]
    behind = [int(r[1]) for r in rows]
    t0, t1 = times[0], times[-1]
    span = max(t1 - t0, 1e-9)
    out = [0] * tenths
    for t, b in zip(times, behind, strict=False):
        i = min(tenths - 1, int((t - t0) / span * tenths))
        out[i] = max(out[i], b)
    return out, max(behind)


def runs_in_mlflow(work: Path) -> int:
    from sweep.tracking.store import make_client

    client = make_client(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("big")
    n, token = 0, None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string="tags.`sweep.kind` = 'trial'",
                                  max_results=50000, page_token=token)
        n += sum(1 for r in page if r.info.status != "RUNNING")
        token = page.token
        if not token:
            return n


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--big", action="store_true", help="10 000 trials")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()
    n = 10_000 if args.big else args.trials
    work = args.keep or Path(tempfile.mkdtemp(prefix="big-study-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench.toml").write_text(CONFIG)
    log = work / "mirror.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, SWEEP_MIRROR_LOG=str(log))
    env.pop("MLFLOW_TRACKING_URI", None)
    print(f"{n} tiny digits trials, --jobs {args.jobs}, {os.cpu_count()} cores; work in {work}; "
          f"load average before: {loadavg()}")
    seconds, out = sweep(work, env, "run", "bench.toml", "--trials", str(n), "--jobs", str(args.jobs))
    print(f"sweep run: {seconds:.1f} s ({seconds / n * 1000:.1f} ms per trial); load average after: {loadavg()}")
    untracked = [line for line in out.splitlines() if "NOT ALL IN MLFLOW" in line or "not in MLflow" in line]
    hundreds = per_hundred(work)
    print("ms per trial by hundred (in order of their end):")
    print("  " + " ".join(f"{h * 1000:.0f}" for h in hundreds))
    if len(hundreds) >= 3:
        base = hundreds[1]
        print(f"last hundred / second hundred: {hundreds[-1] / base:.2f} "
              f"(max over hundreds 2..: {max(hundreds[1:]) / base:.2f})")
    tenths, worst = backlog_series(log)
    print(f"MLflow backlog (runs behind at a sync's start), max per tenth of the sweep: {tenths}; "
          f"max {worst} (limit 2 x jobs = {2 * args.jobs})")
    have = runs_in_mlflow(work)
    print(f"at the end: {have} ended trial runs in MLflow for {n} trials"
          + (f"; the sweep said: {untracked}" if untracked else ""))
    for i in range(2):
        rep_s, _ = sweep(work, env, "report", "bench.toml")
        st_s, _ = sweep(work, env, "status", "--study", "big")
        print(f"sweep report {rep_s:.2f} s, sweep status {st_s:.2f} s" + (" (cached)" if i else " (first)"))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
