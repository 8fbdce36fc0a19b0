"""Training throughput of the numpy model against PyTorch CPU, one thread each.

The net is the issue-2 reference: 3072-512-256-10 with batchnorm, inverted
dropout keep_prob 0.5, batch 256, float32, Adam (lr 1e-3, no L2). The numpy
side runs the real training path, ``Solver.train_step`` on minibatches
gathered from an array, with OpenBLAS pinned to one thread by threadpoolctl;
the torch side runs the same net (same initial weights) with
``torch.set_num_threads(1)``. Rounds alternate numpy / torch so that load
from other processes hits both alike; the best and the median of the rounds
are printed, with achieved GFLOP/s (GEMM FLOPs of a training step) against a
plain numpy float32 GEMM of the first layer's shape timed in the same run.
Each round starts with ``--settle`` untimed steps, so neither side is timed
while refilling caches the other one just used: the figures are steady-state
training throughput. Samples/s come from wall time; the "cpu" figures divide by this thread's CPU
time instead (both frameworks do all their work on the calling thread
here), which is far less sensitive to other processes on a shared machine.

Run (the machine may export OpenBLAS tuning variables that slow numpy down,
so drop them; the kernel threadpoolctl reports is printed)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/model_throughput.py

Options: ``--rounds``, ``--steps`` (per round), ``--batch``,
``--torch-adam {default,foreach,fused}`` (torch's Adam implementation; its
CPU default is the per-tensor loop a plain ``torch.optim.Adam(...)`` gets).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from model import FullyConnectedNet, Solver

INPUT_DIM, HIDDEN, NUM_CLASSES = 3072, (512, 256), 10
KEEP_PROB, LEARNING_RATE = 0.5, 1e-3


def step_flops(batch: int) -> int:
    """GEMM FLOPs of one training step: forward, weight gradients, and input
    gradients of every layer but the first (whose input needs none)."""
    dims = [INPUT_DIM, *HIDDEN, NUM_CLASSES]
    mac = sum(a * b for a, b in itertools.pairwise(dims))
    mac_dx = sum(a * b for a, b in itertools.pairwise(dims[1:]))
    return 2 * batch * (2 * mac + mac_dx)


def numpy_gemm_gflops(rng: np.random.Generator, batch: int, reps: int = 10) -> tuple[float, float]:
    """Best-of (wall, cpu) GFLOP/s of (batch, 3072) @ (3072, 512) float32: the net's biggest GEMM."""
    a = rng.standard_normal((batch, INPUT_DIM), dtype=np.float32)
    b = rng.standard_normal((INPUT_DIM, HIDDEN[0]), dtype=np.float32)
    out = np.empty((batch, HIDDEN[0]), dtype=np.float32)
    np.matmul(a, b, out=out)
    wall = cpu = float("inf")
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.thread_time()
        np.matmul(a, b, out=out)
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.thread_time() - c0)
    flop = 2 * batch * INPUT_DIM * HIDDEN[0]
    return flop / wall / 1e9, flop / cpu / 1e9


def make_numpy(X: np.ndarray, y: np.ndarray, batch: int) -> tuple[Solver, FullyConnectedNet]:
    net = FullyConnectedNet(list(HIDDEN), input_dim=INPUT_DIM, num_classes=NUM_CLASSES, keep_prob=KEEP_PROB,
                            normalization="batchnorm", weight_scale=1e-2, dtype=np.float32, seed=0)
    data = {"X_train": X, "y_train": y, "X_val": X[:batch], "y_val": y[:batch]}
    solver = Solver(net, data, update_rule="adam", optim_config={"learning_rate": LEARNING_RATE},
                    batch_size=batch, seed=0)
    return solver, net


def numpy_round(solver: Solver, X: np.ndarray, y: np.ndarray, batches: list[np.ndarray]) -> tuple[float, float]:
    """Wall and CPU seconds (this thread) of training on ``batches``."""
    w0, c0 = time.perf_counter(), time.thread_time()
    for idx in batches:
        solver.train_step(X[idx], y[idx])
    return time.perf_counter() - w0, time.thread_time() - c0


def make_torch(net: FullyConnectedNet, adam_impl: str) -> tuple[Any, Any, Any]:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    dims = [INPUT_DIM, *HIDDEN, NUM_CLASSES]
    mods: list[nn.Module] = []
    linears = []
    for i in range(len(dims) - 1):
        lin = nn.Linear(dims[i], dims[i + 1])
        linears.append(lin)
        mods.append(lin)
        if i < len(dims) - 2:
            mods += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(), nn.Dropout(1 - KEEP_PROB)]  # torch's p = drop prob
    model = nn.Sequential(*mods)
    with torch.no_grad():  # identical starting point: the numpy net's weights
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(net.params[f"W{i + 1}"].T.copy()))
            lin.bias.zero_()
    kwargs = {} if adam_impl == "default" else {adam_impl: True}
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, **kwargs)
    model.train()
    return torch, model, opt


def torch_round(torch: Any, model: Any, opt: Any, Xt: Any, yt: Any, batches: list[Any]) -> tuple[float, float]:
    """Wall and CPU seconds (this thread: one intra-op thread and CPU autograd run here) of training."""
    f = torch.nn.functional
    w0, c0 = time.perf_counter(), time.thread_time()
    for idx in batches:
        xb, yb = Xt[idx], yt[idx]
        opt.zero_grad(set_to_none=True)
        loss = f.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        loss.item()  # the Solver records each loss as a Python float too
    return time.perf_counter() - w0, time.thread_time() - c0


def describe_blas() -> list[str]:
    lines = []
    for info in threadpool_info():
        lines.append(
            f"  {info.get('user_api')}: {info.get('internal_api')} {info.get('version')} "
            f"kernel={info.get('architecture', '-')} threads={info.get('num_threads')} ({Path(info['filepath']).name})"
        )
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        lines.append(f"  env {var}={os.environ.get(var, '<unset>')}")
    if "OPENBLAS_CORETYPE" in os.environ or "OPENBLAS_L2_SIZE" in os.environ:
        lines.append("  WARNING: OpenBLAS tuning variables are set and may slow numpy down; "
                     "rerun with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per framework")
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before the first round")
    parser.add_argument("--settle", type=int, default=2,
                        help="untimed steps at the start of every round (caches refill after the other framework ran)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--torch-adam", choices=["default", "foreach", "fused"], default="default")
    parser.add_argument("--no-torch", action="store_true", help="numpy only")
    args = parser.parse_args(argv)

    with threadpool_limits(limits=1):
        rng = np.random.default_rng(0)
        n = args.batch * args.steps
        X = rng.standard_normal((n, INPUT_DIM), dtype=np.float32)
        y = rng.integers(0, NUM_CLASSES, size=n)
        # The same minibatch indices for both frameworks: one permutation per round.
        rounds = [[p[i * args.batch:(i + 1) * args.batch] for i in range(args.steps)]
                  for p in (rng.permutation(n) for _ in range(args.rounds))]
        warm = rounds[0][: args.warmup]

        solver, net = make_numpy(X, y, args.batch)
        torch = None
        if not args.no_torch:
            try:
                torch, tmodel, topt = make_torch(net, args.torch_adam)
            except ImportError:
                print("torch not importable: numpy only")
        numpy_round(solver, X, y, warm)
        if torch is not None:
            Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
            t_rounds = [[torch.from_numpy(idx) for idx in r] for r in rounds]
            torch_round(torch, tmodel, topt, Xt, yt, t_rounds[0][: args.warmup])

        print(f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else ""))
        print("BLAS (threadpoolctl, inside the limit):")
        print("\n".join(describe_blas()))
        if torch is not None:
            print(f"  torch: num_threads={torch.get_num_threads()} adam={args.torch_adam}")
        print(f"net {INPUT_DIM}-{'-'.join(map(str, HIDDEN))}-{NUM_CLASSES} batchnorm keep_prob={KEEP_PROB} "
              f"batch={args.batch} float32 adam; {args.rounds} rounds x {args.steps} timed steps "
              f"(+{args.settle} untimed each)")

        gemm_before = numpy_gemm_gflops(rng, args.batch)
        samples = args.steps * args.batch
        np_wall, np_cpu, t_wall, t_cpu = [], [], [], []
        for r in range(args.rounds):
            numpy_round(solver, X, y, rounds[r][: args.settle])
            wall, cpu = numpy_round(solver, X, y, rounds[r])
            np_wall.append(samples / wall)
            np_cpu.append(samples / cpu)
            line = f"round {r + 1:2d}: numpy {np_wall[-1]:6.0f} samples/s (cpu {np_cpu[-1]:6.0f})"
            if torch is not None:
                torch_round(torch, tmodel, topt, Xt, yt, t_rounds[r][: args.settle])
                wall, cpu = torch_round(torch, tmodel, topt, Xt, yt, t_rounds[r])
                t_wall.append(samples / wall)
                t_cpu.append(samples / cpu)
                line += (f"   torch {t_wall[-1]:6.0f} samples/s (cpu {t_cpu[-1]:6.0f})"
                         f"   ratio {np_wall[-1] / t_wall[-1]:.2f} (cpu {np_cpu[-1] / t_cpu[-1]:.2f})")
            print(line)
        gemm_after = numpy_gemm_gflops(rng, args.batch)
        gemm_wall, gemm_cpu = max(gemm_before[0], gemm_after[0]), max(gemm_before[1], gemm_after[1])

    flops = step_flops(args.batch)

    def gflops(sps: float) -> float:
        return sps / args.batch * flops / 1e9

    print(f"numpy GEMM reference ({args.batch}x{INPUT_DIM} @ {INPUT_DIM}x{HIDDEN[0]}, float32, best of run): "
          f"{gemm_wall:.1f} GFLOP/s wall, {gemm_cpu:.1f} GFLOP/s cpu; one training step = {flops / 1e9:.3f} GFLOP of GEMM")
    print("samples/s from wall time; 'cpu' from this thread's CPU time (less sensitive to other processes)")
    for name, wall, cpu in (("numpy", np_wall, np_cpu), ("torch", t_wall, t_cpu)):
        if wall:
            print(f"{name}: wall best {max(wall):.0f} samples/s ({gflops(max(wall)):.1f} GFLOP/s), "
                  f"median {statistics.median(wall):.0f}; cpu best {max(cpu):.0f} samples/s "
                  f"({gflops(max(cpu)):.1f} GFLOP/s = {gflops(max(cpu)) / gemm_cpu:.0%} of the GEMM), "
                  f"median {statistics.median(cpu):.0f} ({gflops(statistics.median(cpu)):.1f} GFLOP/s)")
    if t_wall:
        paired = [a / b for a, b in zip(np_wall, t_wall, strict=True)]
        paired_cpu = [a / b for a, b in zip(np_cpu, t_cpu, strict=True)]
        print(f"ratio numpy/torch (wall): best/best {max(np_wall) / max(t_wall):.2f}, "
              f"median/median {statistics.median(np_wall) / statistics.median(t_wall):.2f}, "
              f"paired rounds median {statistics.median(paired):.2f} (min {min(paired):.2f}, max {max(paired):.2f})")
        print(f"ratio numpy/torch (cpu):  best/best {max(np_cpu) / max(t_cpu):.2f}, "
              f"median/median {statistics.median(np_cpu) / statistics.median(t_cpu):.2f}, "
              f"paired rounds median {statistics.median(paired_cpu):.2f}")


if __name__ == "__main__":
    main()
