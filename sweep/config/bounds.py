"""Up-front bounds on what a sweep or an ablation asks of this machine: processes and memory.

Without them `jobs = 1000` started hundreds of loky processes (8.4 GB) for one
trial, and a hidden width of 10**9 trained until numpy failed to allocate
hundreds of GiB, then a traceback. Both are refused before anything is
created, in one line naming the key or flag and the figures (exit 2).

The memory estimate is for one trial of the largest network the search space
(or the ablation's parameters and --vary levels) can produce, in float64 as
`model/` trains it: the weights, their gradients, Adam's two moments and the
solver's copy of the best weights (5 x the parameters), plus the cached
activations of one batch (about 10 arrays of batch x width per hidden layer:
affine output, normalization caches, ReLU, dropout mask, and their
gradients). It is compared with MemAvailable divided by the workers that run
at once. It is a lower bound: numpy's temporaries come on top.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

from sweep.config.domains import ConfigError
from sweep.config.space import Choice, Fixed, Param, Range
from sweep.config.sweep_file import SweepConfig, available_cores

INPUT_DIMS = {"digits": 64, "cifar10": 3 * 32 * 32}
NUM_CLASSES = 10
_BYTES = 8  # float64
_PARAM_COPIES = 5  # weights, gradients, Adam m and v, the best weights kept by the solver
_ACTIVATION_ARRAYS = 10  # per hidden unit and example of a batch


def useful_jobs(jobs: int, tasks: int) -> int:
    """Workers worth starting: never more than the tasks that can run at once."""
    return max(1, min(jobs, tasks))


def check_jobs(cfg: SweepConfig, origin: str) -> None:
    """Refuse more worker processes than cores unless the user said so (--oversubscribe)."""
    cores = available_cores()
    if cfg.jobs > cores and not cfg.oversubscribe:
        raise ConfigError(f"{cfg.jobs} worker processes on {cores} core(s): each would get a fraction of a core "
                          "and its own copy of the network; give at most "
                          f"{cores}, or add --oversubscribe ([sweep] oversubscribe = true) to run them anyway",
                          key=origin)


@dataclass(frozen=True)
class Network:
    """The shape that bounds one trial's memory."""

    hidden_dims: tuple[int, ...]
    batch_size: int

    def bytes_needed(self, input_dim: int) -> int:
        dims = (input_dim, *self.hidden_dims, NUM_CLASSES)
        params = sum(a * b + b for a, b in itertools.pairwise(dims)) + 2 * sum(self.hidden_dims)  # + norm scale/shift
        activations = _ACTIVATION_ARRAYS * self.batch_size * sum(self.hidden_dims) + 4 * self.batch_size * input_dim
        return _BYTES * (_PARAM_COPIES * params + activations)

    def describe(self) -> str:
        return f"hidden sizes {'-'.join(map(str, self.hidden_dims))}, batch {self.batch_size}"


def _largest(p: Param) -> Any:
    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Range):
        return p.high
    if isinstance(p, Choice):
        return max(p.choices)
    raise TypeError(p)


def largest_networks(cfg: SweepConfig, *, ablation: bool) -> list[tuple[Network, str]]:
    """The largest networks a run (or an ablation) can train, each with the key that sets it."""
    space = cfg.space
    widest = Network((int(_largest(space.width)),) * int(_largest(space.depth)), int(_largest(space.batch_size)))
    if not ablation:
        return [(widest, "space.width/space.depth/space.batch_size")]
    abl = cfg.ablation
    params = abl.params if abl is not None else None
    base, key = ((params.hidden_dims, params.batch_size), "ablation.params") if params else (
        (widest.hidden_dims, widest.batch_size), "space.width/space.depth (the best trial lies within them)")
    vary = dict(abl.vary) if abl is not None else {}
    dims_levels = [(tuple(d), "vary.hidden_dims") for d in vary.get("hidden_dims", ())] or [(tuple(base[0]), key)]
    batch_levels = [(int(b), "vary.batch_size") for b in vary.get("batch_size", ())] or [(int(base[1]), key)]
    return [(Network(d, b), dkey if dkey == bkey or bkey == key else f"{dkey}/{bkey}")
            for d, dkey in dims_levels for b, bkey in batch_levels]


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(cfg: SweepConfig, workers: int, *, ablation: bool) -> None:
    """Refuse a network that cannot fit: its estimate against MemAvailable / workers at once."""
    avail = available_memory()
    if avail is None:
        return
    input_dim = INPUT_DIMS.get(cfg.dataset, 3072)
    need, (net, key) = max(((n.bytes_needed(input_dim), (n, k)) for n, k in largest_networks(cfg, ablation=ablation)),
                           key=lambda x: x[0])
    share = avail // max(1, workers)
    if need > share:
        raise ConfigError(
            f"the largest network it allows ({net.describe()}, {cfg.dataset} input) needs about {_size(need)} per "
            f"trial (weights, gradients, Adam state, one batch's activations), but {_size(avail)} of memory is "
            f"available{f' for {workers} workers at once ({_size(share)} each)' if workers > 1 else ''}; "
            "give smaller sizes" + (" or fewer --jobs" if workers > 1 else ""), key=key)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
