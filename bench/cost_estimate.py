"""How close is `sweep ablate`'s cost estimate to the wall time it then takes?

Runs a short sweep (a fixed-size space, no pruning) in a fresh folder, then
an ablation of `--sizes` × `--keep-probs` × `--seeds` cells, and prints the
estimate the ablation printed before its first cell, the measured wall time
(first cell start to last cell end, from the MLflow runs) and their ratio.
The estimate scales the sweep's own measured epoch time (sweep.ablation.cost),
so the ratio moves with whatever else the machine runs: that is why this is a
benchmark and not a test.

    python bench/cost_estimate.py [--sizes 500,1000] [--seeds 2] [--keep-probs 1,0.5] [--jobs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACE = """[sweep]
dataset = "digits"
pruner = "none"

[space]
keep_prob = {low = 0.3, high = 1.0, step = 0.05}
depth = 2
width = 512
learning_rate = {low = 1e-3, high = 3e-3, log = true}
normalization = "none"
weight_scale = 0.05
batch_size = 50
epochs = 10
lr_decay = 1.0
"""


def sweep(work: Path, *args: str) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=work, env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout


def measured_wall(work: Path) -> float:
    """Seconds from the first cell's start to the last cell's end, from MLflow."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.data.tags.get("sweep.kind") == "cell"]
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000")
    parser.add_argument("--seeds", default="2")
    parser.add_argument("--keep-probs", default="1,0.5")
    parser.add_argument("--jobs", default="2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "s.toml").write_text(SPACE)
            sweep(work, "run", "s.toml", "--jobs", args.jobs, "--trials", "4")
            out = sweep(work, "ablate", "s.toml", "--sizes", args.sizes, "--seeds", args.seeds,
                        "--keep-probs", args.keep_probs, "--jobs", args.jobs)
            found = re.search(r"estimated (\d+):(\d\d):(\d\d) wall", out)
            if found is None:
                sys.exit(f"no estimate in the ablation's output:\n{out}")
            h, m, s = (int(g) for g in found.groups())
            estimate, wall = 3600 * h + 60 * m + s, measured_wall(work)
            print(f"repeat {repeat + 1}: estimated {estimate} s, measured {wall:.1f} s wall, "
                  f"estimate / measured = {estimate / wall:.2f}", flush=True)


if __name__ == "__main__":
    main()
