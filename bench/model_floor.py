"""How fast can the issue-2 training step get? Ceilings on the numpy/torch ratio.

Runs the same net as ``bench/model_throughput.py`` (3072-512-256-10,
batchnorm, keep_prob 0.5, batch 256, float32, Adam, one BLAS thread) and
times, best of ``--rounds``, interleaved so that load hits every part alike:

- ``full``: ``Solver.train_step`` as in training (gather, loss, gradient
  checks, Adam);
- ``no update``: the same with the update rule replaced by a no-op, i.e.
  the forward/backward pass plus the finiteness checks, in the same cache
  state as training;
- ``GEMMs``: only the matrix products of one step, with the step's shapes,
  back to back (hot caches);
- ``torch``: the PyTorch CPU step of the throughput bench.

Adam on W1 (3072x512) has to stream w, m, v and dw in and w, m, v out: seven
times W1's bytes every step. The script measures this machine's streaming
bandwidth (a copy of that working set) and turns the bytes into a time: no
implementation of the update can be faster than that. Then it prints the
best ratio numpy could reach if the update were free, and if it ran at that
memory floor.

Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/model_floor.py
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import model_throughput as mt  # the reference net and its torch twin


def step_gemms(rng: np.random.Generator, batch: int) -> Any:
    """A function running one training step's matrix products (same shapes, same transposes)."""
    dims = [mt.INPUT_DIM, *mt.HIDDEN, mt.NUM_CLASSES]
    acts = [rng.standard_normal((batch, d), dtype=np.float32) for d in dims]
    ws = [rng.standard_normal((a, b), dtype=np.float32) for a, b in itertools.pairwise(dims)]

    def run() -> None:
        for i, w in enumerate(ws):  # forward
            acts[i] @ w
        for i in range(len(ws) - 1, -1, -1):  # backward: dW always, dX except for the input
            acts[i].T @ acts[i + 1]
            if i > 0:
                acts[i + 1] @ ws[i].T

    return run


def stream_gbps(nbytes: int, reps: int = 10) -> float:
    """Best read+write bandwidth (GB/s) of copying ``nbytes`` (a working set like Adam's)."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / 1e9


def timed(fn: Any, steps: int) -> float:
    """Seconds per call of fn(i) over i in range(steps)."""
    t0 = time.perf_counter()
    for i in range(steps):
        fn(i)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)

    with threadpool_limits(limits=1):
        rng = np.random.default_rng(0)
        n = args.batch * args.steps
        X = rng.standard_normal((n, mt.INPUT_DIM), dtype=np.float32)
        y = rng.integers(0, mt.NUM_CLASSES, size=n)
        idx = [rng.permutation(n)[: args.batch] for _ in range(args.steps)]

        solver, net = mt.make_numpy(X, y, args.batch)
        frozen, _ = mt.make_numpy(X, y, args.batch)
        frozen.update_rule = lambda w, dw, config: (w, config)  # forward/backward and checks only
        gemms = step_gemms(rng, args.batch)
        parts: dict[str, Any] = {
            "full": lambda i: solver.train_step(X[idx[i]], y[idx[i]]),
            "no update": lambda i: frozen.train_step(X[idx[i]], y[idx[i]]),
            "GEMMs": lambda i: gemms(),
        }
        if not args.no_torch:
            try:
                torch, tmodel, topt = mt.make_torch(net, "default")
                Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
                t_idx = [[torch.from_numpy(i)] for i in idx]
                parts["torch"] = lambda i: mt.torch_round(torch, tmodel, topt, Xt, yt, t_idx[i])
            except ImportError:
                print("torch not importable: numpy parts only")
        for fn in parts.values():  # warm-up
            timed(fn, 3)
        best = {k: float("inf") for k in parts}
        for _ in range(args.rounds):
            for k, fn in parts.items():
                timed(fn, 2)  # settle: refill caches after the other parts
                best[k] = min(best[k], timed(fn, args.steps))

        w1 = net.params["W1"]
        adam_bytes = 7 * w1.nbytes  # reads w, dw, m, v; writes w, m, v
        gbps = stream_gbps(4 * w1.nbytes)
        adam_floor = adam_bytes / (gbps * 1e9)

    ms = {k: v * 1e3 for k, v in best.items()}
    print(f"net {mt.INPUT_DIM}-{'-'.join(map(str, mt.HIDDEN))}-{mt.NUM_CLASSES} batchnorm keep_prob={mt.KEEP_PROB} "
          f"batch={args.batch} float32 adam, one BLAS thread; best of {args.rounds} rounds x {args.steps} steps")
    for k, v in ms.items():
        print(f"  {k:10s} {v:6.2f} ms/step  ({args.batch / v * 1e3:6.0f} samples/s)")
    print(f"  update in training (full - no update): {ms['full'] - ms['no update']:.2f} ms")
    print(f"  rest of forward/backward (no update - GEMMs): {ms['no update'] - ms['GEMMs']:.2f} ms")
    print(f"Adam on W1 streams {adam_bytes / 1e6:.0f} MB/step; copy bandwidth of its "
          f"{4 * w1.nbytes / 1e6:.0f} MB working set: {gbps:.1f} GB/s -> floor {adam_floor * 1e3:.2f} ms")
    if "torch" in ms:
        t = ms["torch"]
        print(f"ratio numpy/torch now: {t / ms['full']:.2f}")
        print(f"  ceiling if the whole update were free: {t / ms['no update']:.2f}")
        print(f"  ceiling with Adam on W1 at the memory floor and every other update free: "
              f"{t / (ms['no update'] + adam_floor * 1e3):.2f}")
        print(f"  ceiling if only GEMMs ran: {t / ms['GEMMs']:.2f}")


if __name__ == "__main__":
    main()
