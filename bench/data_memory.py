"""How many copies of CIFAR-10 does the machine hold when loky workers load it?

The parent and two joblib/loky workers each call ``load_dataset('cifar10')``
and read every byte of ``X_train`` (49 000 x 3 072 float32 = 602 MB). Memory
is measured while all three hold it, against a baseline taken when the
workers are up but have loaded nothing:

- PSS (proportional set size, /proc/<pid>/smaps_rollup) summed over the
  parent and the workers: a page shared by k processes counts 1/k in each,
  so the sum is what the machine really holds for them.
- /proc/meminfo: AnonPages (private copies), Mapped (file pages mapped by
  anyone: the shared cache file) and MemAvailable. These are machine-wide,
  so other work on the machine adds noise; MemAvailable also counts page
  cache as available, so a shared file mapping barely moves it.

Mode ``mmap`` is the product path (memory maps of the .npy cache). Mode
``copy`` makes each process take a private copy (``np.array``), as
unpickled or ``np.load``-ed arrays would be: the three-copies reference.

usage: python bench/data_memory.py [--data-dir DIR] [--cache-dir DIR] [--mode mmap|copy|both]
       (data dir defaults to $SWEEP_DATA_DIR; cache dir to the user cache)
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor

from sweep.data.datasets import load_dataset

N_WORKERS = 2
ONE_COPY_MB = 49_000 * 3072 * 4 / 1e6
_WAIT_S = 300.0


def pss_kb(pid: int) -> dict[str, int]:
    """Pss, Pss_Anon and Pss_File of a process in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Pss_Anon", "Pss_File"):
            out[key] = int(rest.split()[0])
    return out


def meminfo_kb() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemAvailable", "AnonPages", "Mapped"):
            fields[key] = int(rest.split()[0])
    return fields


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + _WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {_WAIT_S:.0f} s")
        time.sleep(0.01)


def hold(data_dir: str | None, cache_dir: str | None, mode: str) -> tuple[np.ndarray, float]:
    """Load CIFAR-10, read all of X_train, and return it (mapped or copied) with its sum."""
    data = load_dataset("cifar10", data_dir, cache_dir=cache_dir)
    X = data["X_train"] if mode == "mmap" else np.array(data["X_train"])
    del data  # in copy mode this drops the mapping: only the private copy stays
    return X, float(X.sum(dtype=np.float64))  # touches every page


def worker(data_dir: str | None, cache_dir: str | None, mode: str, sync: str) -> tuple[int, float]:
    """Runs in a loky worker: report idle, load on 'go', hold the data until 'release'."""
    sync_dir, pid = Path(sync), os.getpid()
    (sync_dir / f"idle-{pid}").touch()
    wait_for(sync_dir / "go")
    X, total = hold(data_dir, cache_dir, mode)
    (sync_dir / f"loaded-{pid}").touch()
    wait_for(sync_dir / "release")
    del X
    return pid, total


def run(mode: str, data_dir: str | None, cache_dir: str | None, sync_dir: Path) -> dict[str, object]:
    sync_dir.mkdir(parents=True)
    results: list[tuple[int, float]] = []
    jobs = Parallel(n_jobs=N_WORKERS, backend="loky", batch_size=1)
    thread = threading.Thread(
        target=lambda: results.extend(
            jobs(delayed(worker)(data_dir, cache_dir, mode, str(sync_dir)) for _ in range(N_WORKERS))
        )
    )
    thread.start()
    try:
        for _ in range(int(_WAIT_S * 100)):
            idle = sorted(sync_dir.glob("idle-*"))
            if len(idle) == N_WORKERS:
                break
            time.sleep(0.01)
        pids = [os.getpid()] + [int(p.name.split("-")[1]) for p in idle]
        assert len(set(pids)) == N_WORKERS + 1, f"need {N_WORKERS} distinct workers, got {pids}"
        gc.collect()
        before = {pid: pss_kb(pid) for pid in pids}
        mem_before = meminfo_kb()

        X, parent_total = hold(data_dir, cache_dir, mode)
        (sync_dir / "go").touch()
        for pid in pids[1:]:
            wait_for(sync_dir / f"loaded-{pid}")
        after = {pid: pss_kb(pid) for pid in pids}
        mem_after = meminfo_kb()
    finally:
        (sync_dir / "release").touch()
        thread.join()
    del X
    totals = {parent_total, *(t for _, t in results)}
    assert len(totals) == 1, f"processes saw different data: {totals}"
    delta = {k: sum(after[p][k] - before[p][k] for p in pids) / 1e3 for k in ("Pss", "Pss_Anon", "Pss_File")}
    return {
        "mode": mode,
        "pids": pids,
        "per_process_mb": [round((after[p]["Pss"] - before[p]["Pss"]) * 1.024e-3) for p in pids],
        "pss_mb": delta["Pss"] * 1.024,  # smaps reports KiB
        "pss_anon_mb": delta["Pss_Anon"] * 1.024,
        "pss_file_mb": delta["Pss_File"] * 1.024,
        **{f"{k}_mb": (mem_after[k] - mem_before[k]) * 1.024e-3 for k in ("AnonPages", "Mapped")},
        "available_drop_mb": (mem_before["MemAvailable"] - mem_after["MemAvailable"]) * 1.024e-3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py (default $SWEEP_DATA_DIR)")
    parser.add_argument("--cache-dir", default=None, help="folder of the .npy cache (default: the user cache)")
    parser.add_argument("--mode", choices=("mmap", "copy", "both"), default="both")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = load_dataset("cifar10", args.data_dir, cache_dir=args.cache_dir)  # build the cache once, up front
    print(f"cache ready in {time.perf_counter() - t0:.1f} s: {Path(data['X_train'].filename).parent}")
    del data
    print(f"one copy of X_train: 49000 x 3072 float32 = {ONE_COPY_MB:.0f} MB; "
          f"{N_WORKERS} loky workers + the parent each load it and read every byte\n")
    print(f"{'mode':5} {'sum PSS':>8} {'copies':>7} {'anon':>7} {'file':>7}   "
          f"{'AnonPages':>9} {'Mapped':>7} {'MemAvail':>8}   per process PSS (parent, workers)")
    sync_root = Path(os.environ.get("TMPDIR", "/tmp")) / f"data_memory-{os.getpid()}"
    modes = ("mmap", "copy") if args.mode == "both" else (args.mode,)
    try:
        for mode in modes:
            r = run(mode, args.data_dir, args.cache_dir, sync_root / mode)
            print(f"{mode:5} {r['pss_mb']:6.0f}MB {r['pss_mb'] / ONE_COPY_MB:6.2f}x "
                  f"{r['pss_anon_mb']:5.0f}MB {r['pss_file_mb']:5.0f}MB   "
                  f"{r['AnonPages_mb']:7.0f}MB {r['Mapped_mb']:5.0f}MB {r['available_drop_mb']:6.0f}MB   "
                  f"{r['per_process_mb']} MB")
            get_reusable_executor().shutdown(wait=True)  # fresh workers for the next mode
    finally:
        shutil.rmtree(sync_root, ignore_errors=True)
    print("\nsum PSS / copies: extra memory of parent + workers in units of one copy (PSS splits shared pages);"
          "\nAnonPages / Mapped / MemAvail: machine-wide /proc/meminfo changes (noisy while others work).")


if __name__ == "__main__":
    main()
