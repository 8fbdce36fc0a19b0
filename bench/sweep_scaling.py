"""Does `sweep run` use every core? The same CIFAR-10-subset trials with 1 and 2 jobs.

Eight trials on a 10 000-example CIFAR-10 subset (two hidden layers of 128..256, batchnorm,
5 epochs, no pruning). Trials 0..9 are TPE start-up trials drawn from (study
seed, trial number), so both runs train exactly the same configurations with
the same seeds (checked below). --jobs 1 gives its worker both cores' BLAS
threads; --jobs 2 gives each worker one. Prints wall times and the speedup
(the issue's target: >= 1.8x on 2 cores).

    SWEEP_DATA_DIR=/path/with/cifar-10-batches-py python bench/sweep_scaling.py
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
