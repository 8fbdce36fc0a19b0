"""On realistic trials (~6 s each), what do the sweep and a naive Optuna + MLflow script cost over bare training?

Three runs of the SAME 40 trials (params and seeds), side by side, fresh folders:

* `sweep run`: digits, three hidden layers of 1 024, 13 epochs, no pruning, --jobs 2;
* bare: the trials (read back from the sweep's study) trained by 2 plain processes
  with one BLAS thread each, neither Optuna nor MLflow imported;
* naive: a script written from Optuna's and MLflow's docs: a journal study with
  the same trials enqueued, 2 loky processes each calling `study.optimize`,
  one MLflow run per trial (`mlflow.start_run`, `log_params`, `log_metrics` per
  epoch) in a local SQLite store.

Prints wall times, the ratios to bare, and the median `epoch_seconds` in each.
`--load` runs one CPU-bound process beside the benchmark (a numpy GEMM loop on
one BLAS thread) for the "busy machine" figure.

    python bench/overhead_6s.py [--trials 40] [--repeats 1] [--load] [--epochs 13]

With --repeats the three run in a turning order (the sweep first, then bare first, then
naive first, ...) and the median ratios are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[sweep]
dataset = "digits"
pruner = "none"
seed = 23
study = "six"

[space]
keep_prob = {low = 0.3, high = 1.0, step = 0.05}
depth = 3
width = 1024
learning_rate = {low = 1e-4, high = 1e-3, log = true}
normalization = "none"
weight_scale = 0.02
batch_size = 100
epochs = 13
lr_decay = 0.95
"""

BARE_WORKER = r"""
import json, sys
from sweep.config.sweep_file import TrainParams
from sweep.data.datasets import load_dataset
from sweep.training import RunSeeds, train
tasks = json.loads(open(sys.argv[1]).read())[int(sys.argv[2])::2]
data = load_dataset("digits", seed=tasks[0]["data_seed"]) if tasks else None
out = []
for t in tasks:
    res = train(TrainParams.from_flat(t["params"]), data, RunSeeds.derive(t["seed"], t["index"]))
    out += [e["epoch_seconds"] for e in res.epochs if "epoch_seconds" in e]
assert "optuna" not in sys.modules and "mlflow" not in sys.modules, "bare run must not import them"
print(json.dumps(out))
"""

# What a user writes from the two projects' docs (the project's own model and data loader).
NAIVE = r"""
import json, sys
import mlflow, optuna
from joblib import Parallel, delayed
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

tasks = json.loads(open(sys.argv[1]).read())
journal, uri = sys.argv[2], sys.argv[3]

def worker(n):
    from sweep.config.sweep_file import TrainParams
    from sweep.data.datasets import load_dataset
    from sweep.training import RunSeeds, train
    by_number = {i: t for i, t in enumerate(tasks)}
    data = load_dataset("digits", seed=tasks[0]["data_seed"])
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("naive")
    study = optuna.load_study(study_name="naive", storage=JournalStorage(JournalFileBackend(journal)))
    def objective(trial):
        t = by_number[trial.number]
        for k, v in t["suggest"].items():  # the enqueued values come back from suggest_*
            trial.suggest_float(k, v, v) if isinstance(v, float) else trial.suggest_categorical(k, [v])
        with mlflow.start_run(run_name=f"trial-{trial.number}"):
            mlflow.log_params(t["params"])
            def on_epoch(epoch, metrics):
                mlflow.log_metrics(metrics, step=epoch)
                return True
            res = train(TrainParams.from_flat(t["params"]), data, RunSeeds.derive(t["seed"], t["index"]),
                        on_epoch=on_epoch)
            best = max(e["val_acc"] for e in res.epochs)
            mlflow.log_metric("best_val_acc", best)
        trial.set_user_attr("epoch_seconds", [e["epoch_seconds"] for e in res.epochs if "epoch_seconds" in e])
        return best
    study.optimize(objective, n_trials=n)

mlflow.set_tracking_uri(uri)
mlflow.set_experiment("naive")  # creates the store once, before the workers use it
study = optuna.create_study(study_name="naive", storage=JournalStorage(JournalFileBackend(journal)),
                            direction="maximize")
for t in tasks:
    study.enqueue_trial(t["suggest"])
Parallel(n_jobs=2, backend="loky")(delayed(worker)(n) for n in (len(tasks) // 2, len(tasks) - len(tasks) // 2))
secs = [s for t in study.trials for s in t.user_attrs.get("epoch_seconds", [])]
print(json.dumps(secs))
"""

LOAD = r"""
import numpy as np, time
a = np.random.default_rng(0).standard_normal((400, 400))
while True:
    a = np.tanh(a @ a / 400.0)
"""


def run_sweep(work: Path, trials: int, env: dict[str, str], epochs: int = 13) -> float:
    (work / "bench.toml").write_text(CONFIG.replace("epochs = 13", f"epochs = {epochs}"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweep.cli", "run", "bench.toml", "--trials", str(trials), "--jobs", "2"],
                   cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def trial_tasks(work: Path) -> tuple[list[dict], list[float]]:
    """The sweep's trials (params, seeds, raw suggested values) and its epochs' seconds."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweep.config.sweep_file import load_config
    from sweep.search.study import seed_index

    cfg = load_config(work / "bench.toml")
    study = optuna.load_study(study_name="six", storage=JournalStorage(JournalFileBackend(str(work / "optuna.journal"))))
    tasks, secs = [], []
    for t in study.trials:
        params = cfg.space.params_from_trial(t.params)
        tasks.append({"params": params.to_flat(), "seed": cfg.seed, "index": seed_index(t), "data_seed": cfg.seed,
                      "suggest": dict(t.params)})
    from sweep.tracking import spool

    spool_dir = next((work / ".sweep").glob("six*/spool"))  # the study's own folder (sweep.paths)
    for path in spool.spool_files(spool_dir):  # every epoch's time, as the workers wrote it
        secs += [e["metrics"]["epoch_seconds"] for e in spool.read_state(path).epochs if "epoch_seconds" in e["metrics"]]
    return tasks, secs


def run_bare(work: Path, tasks: list[dict], env: dict[str, str]) -> tuple[float, list[float]]:
    spec = work / "tasks.json"
    spec.write_text(json.dumps(tasks))
    env = dict(env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", BARE_WORKER, str(spec), str(i)], cwd=work, env=env,
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("bare worker failed")
    return time.perf_counter() - t0, [s for o in outs for s in json.loads(o)]


def run_naive(work: Path, tasks: list[dict], env: dict[str, str]) -> tuple[float, list[float]]:
    spec = work / "tasks.json"
    spec.write_text(json.dumps(tasks))
    env = dict(env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", NAIVE, str(spec), str(work / "naive.journal"),
                           f"sqlite:///{work / 'naive.db'}"], cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"naive script failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--load", action="store_true", help="one CPU-bound process beside the benchmark")
    ap.add_argument("--epochs", type=int, default=13,
                    help="epochs per trial: 13 made trials of ~6 s when the issue was measured (0.42 s an epoch); "
                         "on a faster machine raise it until the bare twin prints ~6 s per trial")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="overhead-6s-"))
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    load = None
    if args.load:
        load = subprocess.Popen([sys.executable, "-c", LOAD],
                                env=dict(env, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
    try:
        print(f"{args.trials} digits trials of 3 x 1024 units, {args.epochs} epochs, 2 at a time; "
              f"{'one CPU-bound process beside' if load else 'nothing else started'}; "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; work in {root}")
        # The order turns with each repeat (sweep/bare/naive, bare/naive/sweep, naive/sweep/bare): under load
        # the three differ by a few per cent from one window of minutes to the next. Bare and naive run
        # the trials of the latest sweep (the same work: only keep_prob and the learning rate differ).
        kinds = ["sweep", "bare", "naive"]
        ratios: dict[str, list[float]] = {"sweep": [], "naive": []}
        tasks: list[dict] = []
        for r in range(args.repeats):
            work = root / f"run{r}"
            work.mkdir()
            order = kinds[r % 3:] + kinds[:r % 3]  # the sweep first in repeat 0: the others need its trials
            secs: dict[str, float] = {}
            epochs: dict[str, list[float]] = {}
            for kind in order:
                if kind == "sweep":
                    secs[kind] = run_sweep(work, args.trials, env, args.epochs)
                    tasks, epochs[kind] = trial_tasks(work)
                elif kind == "bare":
                    secs[kind], epochs[kind] = run_bare(work, tasks, env)
                else:
                    secs[kind], epochs[kind] = run_naive(work, tasks, env)
            bare_s = secs["bare"]
            ratios["sweep"].append(secs["sweep"] / bare_s)
            ratios["naive"].append(secs["naive"] / bare_s)
            print(f"repeat {r} ({', '.join(order)}): bare {bare_s:.1f} s ({2 * bare_s / args.trials:.1f} s per trial), "
                  f"sweep run {secs['sweep']:.1f} s ({ratios['sweep'][-1]:.3f}x), "
                  f"naive Optuna + MLflow {secs['naive']:.1f} s ({ratios['naive'][-1]:.3f}x); median epoch_seconds "
                  f"bare {median(epochs['bare']):.3f}, sweep {median(epochs['sweep']):.3f}, "
                  f"naive {median(epochs['naive']):.3f}", flush=True)
        if args.repeats > 1:
            print(f"median over {args.repeats} repeats: sweep run {median(ratios['sweep']):.3f}x, "
                  f"naive {median(ratios['naive']):.3f}x bare")
    finally:
        if load is not None:
            load.kill()
            load.wait()
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
