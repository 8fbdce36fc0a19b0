"""What does `sweep run --reproducible` cost, and what does it buy?

Runs the same sweep (same file, same --seed, fresh working folder each time)
with and without the mode, alternating, `--repeats` times each, at `--jobs`;
prints every wall time and CPU time (the sweep process and its workers: less
sensitive than wall time to other work on a shared machine), the trials' idle time waiting for older trials (the
mode's system attr `sweep.search.reproducible`), and how many trials of each run
differ from the first run of the same mode (params, state, per-epoch
val_acc): without the mode that count is what scheduling changes, with it it
must be 0.

    python bench/reproducible_cost.py [CONFIG|fixed] [--trials 40] [--jobs 2] [--repeats 2] [--lag 4] [--seed N]

CONFIG defaults to examples/digits.toml (the offline default sweep: variable
trial cost, Hyperband pruning), which is what the lag costs in practice: the
wall time also changes because the mode samples other params than today's
scheduling (its TPE model lags k trials, its first 10 + k trials are random).
CONFIG `fixed` is bench/sweep_overhead.py's space (one net size, no pruning:
every trial costs the same), which isolates the scheduling.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_sweep(work: Path, config: Path, args: argparse.Namespace, reproducible: bool,
              env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the sweep and its reaped workers) of one `sweep run`."""
    cmd = [sys.executable, "-m", "sweep.cli", "run", str(config), "--trials", str(args.trials),
           "--jobs", str(args.jobs), "--study", "bench"] + ([] if args.seed is None else ["--seed", str(args.seed)])
    if reproducible:
        cmd += ["--reproducible-lag", str(args.lag)]
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, text=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def trials_of(work: Path) -> dict[int, tuple]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(work / "optuna.journal")))
    study = optuna.load_study(study_name="bench", storage=storage)
    return {t.number: (t.state.name, t.params, t.intermediate_values, t.system_attrs.get("sweep.reproducible"))
            for t in study.get_trials()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "examples" / "digits.toml"))
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lag", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None, help="study seed (default: the file's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.config == "fixed":
            sys.path.insert(0, str(ROOT / "bench"))
            from sweep_overhead import CONFIG

            args.config = str(Path(tmp) / "fixed.toml")
            Path(args.config).write_text(CONFIG)
        measure(Path(args.config).resolve(), args, Path(tmp))


def measure(config: Path, args: argparse.Namespace, tmp: Path) -> None:
    """Alternate today's and the reproducible sweep `args.repeats` times; print the figures."""
    print(f"{config.name}: {args.trials} trials at --jobs {args.jobs}, lag {args.lag}, load {os.getloadavg()[0]:.1f}")
    env = dict(os.environ, SWEEP_CACHE_DIR=str(Path(tmp) / "cache"))
    env.pop("MLFLOW_TRACKING_URI", None)
    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    first: dict[bool, dict[int, tuple]] = {}
    for repeat in range(args.repeats):
        for mode in (False, True):
            work = Path(tmp) / f"{'on' if mode else 'off'}-{repeat}"
            work.mkdir()
            wall, cpu = run_sweep(work, config, args, mode, env)
            walls[mode].append(wall)
            cpus[mode].append(cpu)
            trials = trials_of(work)
            first.setdefault(mode, trials)
            differ = [n for n in first[mode] if first[mode][n][:3] != trials.get(n, (None,) * 3)[:3]]
            pruned = sum(t[0] == "PRUNED" for t in trials.values())
            waited = sum((t[3] or {}).get("waited_seconds", 0.0) for t in trials.values())
            print(f"{'reproducible' if mode else 'today':>12} run {repeat + 1}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, "
                  f"{pruned} pruned, idle waiting {waited:5.1f} s (sum over trials), "
                  f"{len(differ)}/{len(trials)} trials differ from run 1" + (f" {differ}" if differ else ""))
    for what, figures in (("wall", walls), ("CPU", cpus)):
        off, on = statistics.median(figures[False]), statistics.median(figures[True])
        print(f"median {what}: today {off:.1f} s, reproducible {on:.1f} s: x{on / off:.2f}")


if __name__ == "__main__":
    main()
