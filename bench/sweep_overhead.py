"""What does the sweep machinery cost on top of the training itself?

Runs `sweep run` (2 jobs, 40 short digits trials, every epoch tracked in
MLflow, fresh working folder: new journal, new MLflow SQLite store) and then
the SAME trials (same params, same seeds, read back from the study) run bare by
2 plain processes that import neither Optuna nor MLflow. Prints both wall
times and their ratio (the issue's target: <= 1.15).

    python bench/sweep_overhead.py [--trials 40] [--repeats 2]

Both sides start from nothing but the interpreter (process start, imports,
data from the shared memory-mapped cache), so fixed start-up counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Trials of ~0.5 s each on one core: a fixed-size net, keep_prob/lr/normalization searched.
CONFIG = """
[sweep]
dataset = "digits"
pruner = "none"
seed = 7

[space]
keep_prob = {low = 0.2, high = 1.0, step = 0.05}
depth = 2
width = 256
learning_rate = {low = 3e-4, high = 3e-3, log = true}
normalization = ["none", "batchnorm", "layernorm"]
weight_scale = 0.05
batch_size = 100
epochs = 13
lr_decay = 0.95
"""

BARE_WORKER = r"""
import json, sys, time
from sweep.data.datasets import load_dataset
from sweep.training import RunSeeds, train
from sweep.config.sweep_file import TrainParams
tasks = json.loads(open(sys.argv[1]).read())[int(sys.argv[2])::2]
data = load_dataset("digits", seed=tasks[0]["data_seed"]) if tasks else None
for t in tasks:
    train(TrainParams.from_flat(t["params"]), data, RunSeeds.derive(t["seed"], t["index"]))
assert "optuna" not in sys.modules and "mlflow" not in sys.modules, "bare run must not import them"
"""


def run_sweep(work: Path, trials: int, env: dict[str, str]) -> float:
    cfg = work / "bench.toml"
    cfg.write_text(CONFIG)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweep.cli", "run", str(cfg), "--trials", str(trials), "--jobs", "2"],
                   cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def trial_tasks(work: Path) -> list[dict]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweep.config.sweep_file import load_config
    from sweep.search.study import seed_index

    cfg = load_config(work / "bench.toml")
    study = optuna.load_study(study_name=cfg.study_name,
                              storage=JournalStorage(JournalFileBackend(str(work / "optuna.journal"))))
    tasks = []
    for t in study.trials:
        params = cfg.space.params_from_trial(t.params)
        tasks.append({"params": params.to_flat(), "seed": cfg.seed, "index": seed_index(t), "data_seed": cfg.seed})
    return tasks


def run_bare(work: Path, tasks: list[dict], env: dict[str, str]) -> float:
    spec = work / "tasks.json"
    spec.write_text(json.dumps(tasks))
    # One BLAS thread per process, as the sweep gives each of its 2 workers.
    env = dict(env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", BARE_WORKER, str(spec), str(i)], cwd=work, env=env)
             for i in range(2)]
    if any(p.wait() for p in procs):
        raise SystemExit("bare worker failed")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    env = dict(os.environ, SWEEP_CACHE_DIR=str(root / "cache"))
    env.pop("MLFLOW_TRACKING_URI", None)
    print(f"{args.trials} digits trials, 2 jobs, {os.cpu_count()} cores; work in {root}")
    ratios = []
    for r in range(args.repeats):
        work = root / f"run{r}"
        work.mkdir()
        sweep_s = run_sweep(work, args.trials, env)
        tasks = trial_tasks(work)
        bare_s = run_bare(work, tasks, env)
        ratios.append(sweep_s / bare_s)
        print(f"repeat {r}: sweep {sweep_s:.2f} s, bare {bare_s:.2f} s "
              f"({bare_s * 2 / len(tasks):.2f} s per trial-core), ratio {sweep_s / bare_s:.3f}")
    ratios.sort()
    print(f"sweep / bare wall time: best {ratios[0]:.3f}, median {ratios[len(ratios) // 2]:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
