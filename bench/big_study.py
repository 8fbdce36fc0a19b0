"""Do big studies stay fast? A study of N tiny trials, per-trial time by hundred, MLflow's backlog, report/status.

Runs `sweep run` on N digits trials of ~0.05-0.1 s each (300 training rows, one
hidden layer of 8-32 units, 2 epochs, no pruning, --jobs 2) in a fresh working
folder, then prints:

* wall time per trial for each hundred trials, in the order they ended (from
  the trials' end times in the journal) and its ratio to the first hundred
  after warm-up (the second hundred: the first holds imports, the MLflow
  store's creation and TPE's start-up trials);
* CPU per trial for each hundred (user + system of the sweep's process tree,
  read from /proc every 2 s): steadier than wall time on a shared machine;
* MLflow's backlog over time: runs that ended (or had no run yet) and were not
  in MLflow when the tracker's sync started (from SWEEP_MIRROR_LOG), its
  maximum per tenth of the sweep, and how many runs MLflow lacks at the end;
* how long `sweep report` and `sweep status` take on the finished study (twice
  each: the second report reads its cached importances).

    python bench/big_study.py              # N = 1 000
    python bench/big_study.py --big        # N = 10 000 (about 7 min on 2 cores, report and status included)
    python bench/big_study.py --trials 300 --keep /tmp/big   # keep the folder
    python bench/big_study.py --report-only /tmp/big         # time report and status again on it

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


def sweep(work: Path, env: dict[str, str], *args: str, cpu: list[tuple[int, float]] | None = None) -> tuple[float, str]:
    """Run `sweep ARGS` in `work`; with `cpu`, sample (trials started, CPU seconds of its process tree) every 2 s.
    Returns its wall seconds and output; `sweep.last_cpu` holds its CPU seconds (its own and its children's)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sweep.cli", *args], cwd=work, env=env, stdout=out, stderr=err,
                                text=True)
        while cpu is not None:
            cpu.append((started_trials(work), tree_cpu_seconds(proc.pid)))
            try:
                proc.wait(timeout=2)  # not sleep(2): the wall time would round up to 2 s steps
                break
            except subprocess.TimeoutExpired:
                pass
        proc.wait()
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sweep.last_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # type: ignore[attr-defined]
    if proc.returncode != 0:
        raise SystemExit(f"sweep {' '.join(args)} failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return seconds, stdout


def started_trials(work: Path) -> int:
    """Spool files (one per trial started): one listdir, cheap at 10 000 files."""
    return sum(len([n for n in os.listdir(d) if n.endswith(".jsonl")]) for d in work.glob(".sweep/*/spool"))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its live children (and the children it reaped), from /proc.

    Steadier than wall time on a shared machine: other processes' load slows the sweep's wall
    time, not the CPU it spends per trial."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p: int) -> list[str]:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return []

    own = stat(pid)
    if not own:
        return float("nan")
    total = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            st = stat(int(child.name))
            if st and int(st[1]) == pid:
                total += int(st[11]) + int(st[12])
    return total / tick


def cpu_per_hundred(samples: list[tuple[int, float]]) -> list[float]:
    """CPU seconds per trial for each hundred trials, interpolated between the 2-s samples."""
    pts = [(n, c) for n, c in samples if c == c]
    out = []
    for lo in range(0, (pts[-1][0] // 100) * 100 if pts else 0, 100):
        def at(k: int) -> float:
            for (n0, c0), (n1, c1) in itertools.pairwise(pts):
                if n0 <= k <= n1 and n1 > n0:
                    return c0 + (c1 - c0) * (k - n0) / (n1 - n0)
            return float("nan")
        out.append((at(lo + 100) - at(lo)) / 100)
    return out


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
    ap.add_argument("--report-only", type=Path, metavar="DIR",
                    help="only time `sweep report` and `sweep status` on the study a --keep run left in DIR")
    args = ap.parse_args()
    if args.report_only is not None:
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        time_report_and_status(args.report_only, env)
        return
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
    cpu: list[tuple[int, float]] = []
    seconds, out = sweep(work, env, "run", "bench.toml", "--trials", str(n), "--jobs", str(args.jobs), cpu=cpu)
    print(f"sweep run: {seconds:.1f} s ({seconds / n * 1000:.1f} ms per trial); load average after: {loadavg()}")
    untracked = [line for line in out.splitlines() if "NOT ALL IN MLFLOW" in line or "not in MLflow" in line]
    hundreds = per_hundred(work)
    print("ms per trial by hundred (in order of their end):")
    print("  " + " ".join(f"{h * 1000:.0f}" for h in hundreds))
    if len(hundreds) >= 3:
        base = hundreds[1]
        print(f"last hundred / second hundred: {hundreds[-1] / base:.2f} "
              f"(max over hundreds 2..: {max(hundreds[1:]) / base:.2f})")
    cpu_hundreds = cpu_per_hundred(cpu)
    if cpu_hundreds:
        print("CPU ms per trial by hundred (the sweep's processes, from /proc every 2 s; trials counted as started):")
        print("  " + " ".join(f"{h * 1000:.0f}" for h in cpu_hundreds))
        if len(cpu_hundreds) >= 3:
            print(f"CPU: last hundred / second hundred: {cpu_hundreds[-1] / cpu_hundreds[1]:.2f}")
    tenths, worst = backlog_series(log)
    print(f"MLflow backlog (runs behind at a sync's start), max per tenth of the sweep: {tenths}; "
          f"max {worst} (limit 2 x jobs = {2 * args.jobs})")
    have = runs_in_mlflow(work)
    print(f"at the end: {have} ended trial runs in MLflow for {n} trials"
          + (f"; the sweep said: {untracked}" if untracked else ""))
    time_report_and_status(work, env)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


def time_report_and_status(work: Path, env: dict[str, str]) -> None:
    """`sweep report` and `sweep status` on the finished study, twice (the second report reads cached importances)."""
    print(f"{started_trials(work)} trials in {work}; load average before: {loadavg()}")
    for i in range(2):
        rep_s, _ = sweep(work, env, "report", "bench.toml")
        rep_cpu = sweep.last_cpu  # type: ignore[attr-defined]
        st_s, _ = sweep(work, env, "status", "--study", "big")
        st_cpu = sweep.last_cpu  # type: ignore[attr-defined]
        print(f"sweep report {rep_s:.2f} s ({rep_cpu:.2f} s CPU), sweep status {st_s:.2f} s ({st_cpu:.2f} s CPU)"
              + (" (cached)" if i else " (first)"))


if __name__ == "__main__":
    main()
