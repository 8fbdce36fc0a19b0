"""Cost of image augmentation (and max-norm) against a training epoch, on CIFAR-sized rows.

Synthetic float32 rows of 3 x 32 x 32 = 3072 features (49 000 of them, the
cs231n training pool), batch 200: 245 minibatches an epoch. Timed, with
OpenBLAS pinned to one thread (as a sweep worker runs):

- augmentation: ``draw_augmentation`` + ``apply_augmentation`` (what the
  Solver adds per minibatch) over one whole epoch of minibatches, for flips
  and 4-pixel shifts together and each alone; the gather ``X[idx]`` is not
  counted, training does it anyway;
- training: ``Solver.train_step`` of a typical net, 3072-1024-1024-10,
  keep_prob 0.5, Adam, on ``--steps`` minibatches, scaled to an epoch;
- input dropout: the same training step with ``input_keep_prob=0.8``;
- max-norm: ``net.apply_constraints()`` (W1 and W2 projected) per step, the
  worst case where every column is over the bound.

The training epoch counted is its minibatch steps only (the per-epoch
evaluation would add to it), so the fractions are upper bounds.

The figures are this thread's CPU time (``time.thread_time``), which other
processes on a shared machine disturb far less than wall time; wall time is
printed too. Each figure is the median of ``--rounds``.

Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/augment_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from model import FullyConnectedNet, Solver
from model.augment import apply_augmentation, draw_augmentation, epoch_rng

IMAGE_SHAPE = (3, 32, 32)
HIDDEN = (1024, 1024)


def timed(fn) -> tuple[float, float]:
    """(cpu, wall) seconds of fn()."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.thread_time() - c0, time.perf_counter() - w0


def augmentation_epoch(X: np.ndarray, batches: list[np.ndarray], flip: bool, shift: int) -> tuple[float, float]:
    """CPU and wall seconds of augmenting every minibatch of one epoch (gathers excluded)."""
    rng = epoch_rng(0, 1)
    cpu = wall = 0.0
    for idx in batches:
        Xb = X[idx]
        w0, c0 = time.perf_counter(), time.thread_time()
        flips, dy, dx = draw_augmentation(len(idx), rng, flip=flip, max_shift=shift)
        apply_augmentation(Xb, IMAGE_SHAPE, flips, dy, dx)
        cpu += time.thread_time() - c0
        wall += time.perf_counter() - w0
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=49_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, 3 * 32 * 32), dtype=np.float32)
    y = rng.integers(0, 10, args.rows)
    perm = rng.permutation(args.rows)
    batches = [perm[i * args.batch : (i + 1) * args.batch] for i in range(args.rows // args.batch)]
    n_batches = len(batches)
    print(f"{args.rows} rows x 3072 float32, batch {args.batch}: {n_batches} minibatches an epoch; "
          f"median of {args.rounds} rounds, this thread's CPU time (wall in brackets)")

    with threadpool_limits(1):
        data = {"X_train": X, "y_train": y, "X_val": X[: args.batch], "y_val": y[: args.batch]}

        def make(input_keep_prob: float) -> tuple[FullyConnectedNet, Solver]:
            net = FullyConnectedNet(list(HIDDEN), input_dim=3072, num_classes=10, keep_prob=0.5,
                                    weight_scale=1e-2, dtype=np.float32, seed=0, input_keep_prob=input_keep_prob)
            solver = Solver(net, data, optim_config={"learning_rate": 1e-3}, batch_size=args.batch, seed=0)
            for idx in batches[:3]:  # warm-up: Adam state, caches
                solver.train_step(X[idx], y[idx])
            return net, solver

        (net, solver), (_, solver_in) = make(1.0), make(0.8)
        step_cpu, step_wall, in_cpu, in_wall = [], [], [], []
        for r in range(args.rounds):  # alternating, so load from other processes hits both alike
            chunk = batches[3 + r * args.steps : 3 + (r + 1) * args.steps]
            for s, cpus, walls in ((solver, step_cpu, step_wall), (solver_in, in_cpu, in_wall)):
                cpu, wall = timed(lambda s=s, chunk=chunk: [s.train_step(X[i], y[i]) for i in chunk])
                cpus.append(cpu / len(chunk))
                walls.append(wall / len(chunk))
        step_c, step_w = statistics.median(step_cpu), statistics.median(step_wall)
        epoch_c, epoch_w = step_c * n_batches, step_w * n_batches
        print(f"training step ({'-'.join(map(str, (3072, *HIDDEN, 10)))}, keep_prob 0.5, adam): "
              f"{step_c * 1e3:.1f} ms [{step_w * 1e3:.1f}] -> epoch {epoch_c:.1f} s [{epoch_w:.1f}]")
        in_c, in_w = statistics.median(in_cpu), statistics.median(in_wall)
        print(f"the same step with input_keep_prob 0.8: {in_c * 1e3:.1f} ms [{in_w * 1e3:.1f}] "
              f"= {in_c / step_c - 1:+.1%} [{in_w / step_w - 1:+.1%}]")

        for label, flip, shift in (("flip + shift 4", True, 4), ("flip only", True, 0), ("shift 4 only", False, 4)):
            runs = [augmentation_epoch(X, batches, flip, shift) for _ in range(args.rounds)]
            cpu = statistics.median(c for c, _ in runs)
            wall = statistics.median(w for _, w in runs)
            print(f"augmentation {label:>14}: {cpu / n_batches * 1e3:.2f} ms a batch [{wall / n_batches * 1e3:.2f}], "
                  f"{cpu:.2f} s an epoch [{wall:.2f}] = {cpu / epoch_c:.2%} of a training epoch [{wall / epoch_w:.2%}]")

        net.max_norm = 1e-3  # every column over the bound: the projection's worst case
        runs = []
        for _ in range(args.rounds):
            for name in ("W1", "W2"):
                net.params[name][:] = rng.standard_normal(net.params[name].shape, dtype=np.float32)
            runs.append(timed(net.apply_constraints))
        cpu, wall = statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)
        print(f"max-norm projection of W1, W2 (all columns over): {cpu * 1e3:.2f} ms a step [{wall * 1e3:.2f}] "
              f"= {cpu / step_c:.2%} of a training step [{wall / step_w:.2%}]")


if __name__ == "__main__":
    main()
