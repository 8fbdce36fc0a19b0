"""Does `sweep run` use every core? The same CIFAR-10-subset trials with 1 and 2 jobs.

Eight trials on a 10 000-example CIFAR-10 subset (two hidden layers of 128..256, batchnorm,
5 epochs, no pruning). Trials 0..9 are TPE start-up trials drawn from (study
seed, trial number), so both runs train exactly the same configurations with
the same seeds (checked below). --jobs 1 gives its worker both cores' BLAS
threads; --jobs 2 gives each worker one. Prints wall times and the speedup
(the issue's target: >= 1.8x on 2 cores).

It then trains the SAME trials (params and seeds read back from the study)
bare, with neither Optuna nor MLflow: once in one process with 2 BLAS threads
(what --jobs 1 does, minus the sweep) and once split over 2 processes with one
BLAS thread each (what --jobs 2 does, minus the sweep). Their ratio is the
speedup the workload itself allows when the one-job run already uses both
cores for its GEMMs; each sweep's wall time over its bare twin is what the
sweep machinery costs.

    SWEEP_DATA_DIR=/path/with/cifar-10-batches-py python bench/sweep_scaling.py
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

CONFIG = """
[sweep]
dataset = "cifar10"
num_train = {num_train}
pruner = "none"
seed = 3

[space]
keep_prob = {{low = 0.3, high = 1.0, step = 0.05}}
depth = 2
width = {{low = 128, high = 256, log = true}}
learning_rate = {{low = 1e-4, high = 1e-3, log = true}}
normalization = "batchnorm"
weight_scale = 0.01
batch_size = 100
epochs = {epochs}
lr_decay = 1.0
"""


# Trains tasks[i::procs] with `threads` BLAS threads; imports neither Optuna nor MLflow.
BARE_WORKER = r"""
import json, sys
from threadpoolctl import threadpool_limits
from sweep.config.sweep_file import TrainParams
from sweep.data.datasets import load_dataset
from sweep.training import RunSeeds, train
spec, i, procs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tasks = json.loads(open(spec).read())[i::procs]
d = tasks[0]["data"]
data = load_dataset("cifar10", data_dir=d["data_dir"], num_train=d["num_train"], num_val=d["num_val"], seed=d["seed"])
with threadpool_limits(limits=threads):
    for t in tasks:
        train(TrainParams.from_flat(t["params"]), data, RunSeeds.derive(t["seed"], t["index"]))
assert "optuna" not in sys.modules and "mlflow" not in sys.modules
"""


def trial_tasks(work: Path) -> list[dict]:
    """Params and seeds of the study's trials, in trial order (as the sweep ran them)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweep.config.sweep_file import load_config
    from sweep.search.study import seed_index

    cfg = load_config(work / "bench.toml")
    study = optuna.load_study(study_name=cfg.study_name,
                              storage=JournalStorage(JournalFileBackend(str(work / "optuna.journal"))))
    data = {"data_dir": cfg.data_dir, "num_train": cfg.num_train, "num_val": cfg.num_val, "seed": cfg.seed}
    return [{"params": cfg.space.params_from_trial(t.params).to_flat(), "seed": cfg.seed,
             "index": seed_index(t), "data": data} for t in sorted(study.trials, key=lambda t: t.number)]


def run_bare(work: Path, tasks: list[dict], procs: int, threads: int, env: dict[str, str]) -> float:
    spec = work / "tasks.json"
    spec.write_text(json.dumps(tasks))
    t0 = time.perf_counter()
    children = [subprocess.Popen([sys.executable, "-c", BARE_WORKER, str(spec), str(i), str(procs), str(threads)],
                                 cwd=work, env=env) for i in range(procs)]
    if any(p.wait() for p in children):
        raise SystemExit("bare worker failed")
    return time.perf_counter() - t0


def run(work: Path, jobs: int, trials: int, env: dict[str, str]) -> tuple[float, list[tuple]]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweep.cli", "run", "bench.toml", "--trials", str(trials), "--jobs", str(jobs)],
                   cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="dropout-cifar10",
                              storage=JournalStorage(JournalFileBackend(str(work / "optuna.journal"))))
    return wall, sorted((t.number, tuple(sorted(t.params.items()))) for t in study.trials)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--num-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    if not os.environ.get("SWEEP_DATA_DIR"):
        raise SystemExit("set SWEEP_DATA_DIR to a folder holding cifar-10-batches-py")
    root = Path(tempfile.mkdtemp(prefix="sweep-scaling-"))
    env = dict(os.environ, SWEEP_CACHE_DIR=str(root / "cache"))
    env.pop("MLFLOW_TRACKING_URI", None)
    walls = {}
    trials = {}
    # Warm the dataset cache and the MLflow schema template first, so neither run pays it.
    for jobs in (2, 1, 2, 1):
        work = root / f"jobs{jobs}-{len(walls)}"
        work.mkdir()
        (work / "bench.toml").write_text(CONFIG.format(num_train=args.num_train, epochs=args.epochs))
        wall, params = run(work, jobs, args.trials, env)
        walls.setdefault(jobs, []).append(wall)
        trials.setdefault(jobs, params)
        print(f"--jobs {jobs}: {wall:.1f} s for {args.trials} trials")
    assert trials[1] == trials[2], "the two runs trained different configurations"
    t1, t2 = min(walls[1]), min(walls[2])
    print(f"best of 2: --jobs 1 {t1:.1f} s, --jobs 2 {t2:.1f} s, speedup {t1 / t2:.2f}x (target >= 1.8x)")

    tasks = trial_tasks(work)
    bare: dict[int, list[float]] = {}
    for procs, threads in ((1, 2), (2, 1), (1, 2), (2, 1)):
        bare.setdefault(procs, []).append(run_bare(work, tasks, procs, threads, env))
    b1, b2 = min(bare[1]), min(bare[2])
    print(f"bare (no Optuna, no MLflow), best of 2: 1 process x 2 BLAS threads {b1:.1f} s, "
          f"2 processes x 1 thread {b2:.1f} s: the workload's own speedup {b1 / b2:.2f}x")
    print(f"sweep / bare: --jobs 1 {t1 / b1:.2f}, --jobs 2 {t2 / b2:.2f}")


if __name__ == "__main__":
    main()
