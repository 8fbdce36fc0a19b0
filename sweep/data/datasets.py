"""Datasets as float32 rows with the training mean subtracted, cached as ``.npy``.

Two datasets:

- ``cifar10``: the official python layout ``<data_dir>/cifar-10-batches-py``,
  split as in cs231n: val = the last ``num_val`` rows of the five training
  batches (49000..49999 by default), the training pool = all rows before them
  (0..48999), test = the first ``num_test`` test images (1 000). D = 3072 (CHW
  order), pixels 0..255. Smaller files work too, with sizes that fit them.
- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, offline). A
  stratified split with a fixed seed puts ``num_test`` (300) images in test,
  ``num_val`` (300) in val and the rest (1197) in the training pool, the same
  for every ``seed``. Pixels (0..16) are rescaled by 255/16 to CIFAR-like
  0..255 units so learning rates and weight scales transfer. D = 64.

``seed`` only picks the training subset: with ``num_train`` below the pool
size, train = the first ``num_train`` entries of
``np.random.default_rng(seed).permutation(pool)`` (kept in row order), so for
one seed (and fixed ``num_val``/``num_test``) a larger subset always contains a
smaller one. Val and test never depend on ``seed`` or ``num_train``.

Each result is written once per (dataset, sizes, seed, source files) into a
cache folder and returned as read-only memory maps, so every process that
loads the same key shares one copy through the page cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import operator
import os
import pickle
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.data.download import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    CIFAR10_MD5,
    CIFAR10_URL,
    DatasetError,
    PathLike,
    download_cifar10,
    how_to_get_cifar10,
    missing_cifar10_files,
    resolve_data_dir,
    user_cache_root,
)

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASETS",
    "DatasetError",
    "download_cifar10",
    "load_dataset",
    "resolve_cache_dir",
    "resolve_data_dir",
]

DATASETS = ("digits", "cifar10")
KEYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")

# cs231n's split of the 50 000 official training rows: the last 1 000 are val.
_CIFAR10_DEFAULT_VAL = 1_000
_CIFAR10_DEFAULT_TEST = 1_000
_CIFAR10_DIM = 3 * 32 * 32
_CIFAR10_CLASSES = 10

_DIGITS_ROWS = 1_797
_DIGITS_DEFAULT_VAL = 300
_DIGITS_DEFAULT_TEST = 300
_DIGITS_SPLIT_SEED = 0  # val/test are fixed; `seed` only picks the training subset
_DIGITS_SCALE = 255.0 / 16.0

_CACHE_FORMAT = 1  # bump when the preprocessing changes, to orphan old entries
_CHUNK_ROWS = 4096  # rows converted at a time while writing (~50 MB of float32 for CIFAR-10)

# What a CIFAR-10 batch pickle may reference: numpy array reconstruction only.
# Anything else (os.system, builtins.open, ...) is refused, so even an
# unverified data folder cannot run code through pickle.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol < 3
    }
)


def resolve_cache_dir(cache_dir: PathLike | None = None) -> Path:
    """The folder of the preprocessed ``.npy`` arrays.

    Args:
        cache_dir: Explicit folder; wins over everything else.

    Returns:
        ``cache_dir``, else ``$SWEEP_CACHE_DIR``, else ``$XDG_CACHE_HOME`` (or
        ``~/.cache``) ``/dropout-sweep/arrays``.
    """
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get("SWEEP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return user_cache_root() / "arrays"


def load_dataset(
    name: str,
    data_dir: PathLike | None = None,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
    *,
    download: bool = False,
    cache_dir: PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Load a dataset as mean-subtracted float32 rows, shared through a memory-mapped cache.

    Args:
        name: One of ``DATASETS``.
        data_dir: Folder holding ``cifar-10-batches-py`` (see ``resolve_data_dir``);
            ignored for ``digits``.
        num_train: Training rows; default (None) is the whole training pool:
            49 000 for cifar10, 1 197 for digits (with default val/test sizes).
            Smaller values take a nested seeded subset (see the module docstring).
        num_val: Validation rows (cifar10: last rows of the training batches,
            default 1 000; digits: default 300).
        num_test: Test rows (cifar10: first rows of ``test_batch``, default
            1 000; digits: default 300).
        seed: Picks the training subset when ``num_train`` is below the pool size.
        download: Fetch CIFAR-10 (``download_cifar10``) if it is missing.
        cache_dir: Folder of the preprocessed arrays (see ``resolve_cache_dir``).

    Returns:
        ``X_train, y_train, X_val, y_val, X_test, y_test``: X float32 (N, D)
        C-contiguous minus the mean of the selected training rows, y int64
        (N,) in 0..9. All are read-only ``np.memmap`` views of the cache.

    Raises:
        ValueError: Unknown ``name``; a size that is not a positive int or
            exceeds the rows available; a negative ``seed``.
        DatasetError: CIFAR-10 missing (and ``download`` is False) or not
            downloadable, or a batch file is truncated or corrupt.

    Example:
        >>> data = load_dataset("digits", num_train=500, seed=1)
        >>> data["X_train"].shape, data["X_train"].dtype
        ((500, 64), dtype('float32'))
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    num_train = _check_size("num_train", num_train)
    num_val = _check_size("num_val", num_val)
    num_test = _check_size("num_test", num_test)
    seed = _check_seed(seed)
    source = _cifar10_source(data_dir, download) if name == "cifar10" else _Digits()
    root = resolve_cache_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)

    raw: _Raw | None = None
    counts = source.known_counts(root)
    if counts is None:  # first sight of these files: count their rows once
        raw = source.read()
        counts = raw.counts()
        source.remember_counts(root, counts)
    request = source.request(counts, num_train, num_val, num_test, seed)
    entry = root / request.entry_name()
    if not entry.is_dir():
        # The lock only saves duplicate work when workers start together;
        # correctness comes from the atomic rename in _write_entry.
        with _exclusive(root / f".{entry.name}.lock"):
            if not entry.is_dir():
                _write_entry(entry, source.split(raw or source.read(), request))
    return _open_entry(entry)


@dataclass(frozen=True)
class _Request:
    """Resolved sizes plus what identifies the source files: the cache key."""

    dataset: str
    num_train: int
    num_val: int
    num_test: int
    seed: int | None  # None when the whole pool is used, so every seed shares one entry
    source_id: tuple[object, ...]

    def entry_name(self) -> str:
        key = json.dumps([_CACHE_FORMAT, *self.__dict__.values()], default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        seed = "all" if self.seed is None else self.seed
        return f"{self.dataset}-{self.num_train}-{self.num_val}-{self.num_test}-s{seed}-{digest}"


@dataclass(frozen=True)
class _Raw:
    """A dataset's rows before splitting, pixels in 0..255 units."""

    X: np.ndarray  # (N, D) training rows (cifar10) or all rows (digits)
    y: np.ndarray  # (N,) int64
    X_test: np.ndarray | None = None  # (M, D) separate test rows (cifar10); None: carved from X
    y_test: np.ndarray | None = None

    def counts(self) -> tuple[int, int]:
        return len(self.X), 0 if self.X_test is None else len(self.X_test)


@dataclass(frozen=True)
class _Split:
    """Rows ``idx`` of ``X`` (N, D) and ``y`` (N,) that make one split."""

    X: np.ndarray
    y: np.ndarray
    idx: np.ndarray


def _nested_request(
    dataset: str, pool: int, num_train: int | None, seed: int, sizes: tuple[int, int], source_id: tuple[object, ...]
) -> _Request:
    """Default ``num_train`` to the whole pool (then the seed does not matter) and check it fits."""
    num_train = pool if num_train is None else num_train
    _check_fits("num_train", num_train, pool, f"the training pool left by num_val={sizes[0]}, num_test={sizes[1]} has {pool} rows")
    return _Request(dataset, num_train, *sizes, None if num_train == pool else seed, source_id)


class _Cifar10:
    """``cifar-10-batches-py``: train pool and val from the five training batches, test from ``test_batch``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def source_id(self) -> tuple[object, ...]:
        # A rebuilt or replaced data folder gets new cache entries.
        stats = [(self.folder / f).stat() for f in CIFAR10_FILES]
        return (str(self.folder.resolve()), *((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats))

    def _counts_file(self, root: Path) -> Path:
        digest = hashlib.sha256(json.dumps(self.source_id()).encode()).hexdigest()[:12]
        return root / f".cifar10-rows-{digest}.json"

    def known_counts(self, root: Path) -> tuple[int, int] | None:
        """Row counts (training, test) of these exact files, if read before."""
        try:
            rows = json.loads(self._counts_file(root).read_text())
            return int(rows[0]), int(rows[1])
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def remember_counts(self, root: Path, counts: tuple[int, int]) -> None:
        _write_atomic(self._counts_file(root), json.dumps(counts).encode())

    def read(self) -> _Raw:
        batches = [_read_batch(self.folder / f) for f in CIFAR10_FILES[:-1]]
        X_test, y_test = _read_batch(self.folder / CIFAR10_FILES[-1])
        return _Raw(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), X_test, y_test)

    def request(
        self, counts: tuple[int, int], num_train: int | None, num_val: int | None, num_test: int | None, seed: int
    ) -> _Request:
        rows, test_rows = counts
        num_val = _CIFAR10_DEFAULT_VAL if num_val is None else num_val
        num_test = _CIFAR10_DEFAULT_TEST if num_test is None else num_test
        _check_fits("num_val", num_val, rows - 1, f"{self.folder} has {rows} training rows and 1 must stay for training")
        _check_fits("num_test", num_test, test_rows, f"{self.folder / 'test_batch'} has {test_rows} rows")
        return _nested_request("cifar10", rows - num_val, num_train, seed, (num_val, num_test), self.source_id())

    def split(self, raw: _Raw, request: _Request) -> dict[str, _Split]:
        assert raw.X_test is not None and raw.y_test is not None
        pool = np.arange(len(raw.X) - request.num_val)
        return {
            "train": _Split(raw.X, raw.y, _nested_subset(pool, request.num_train, request.seed)),
            "val": _Split(raw.X, raw.y, np.arange(len(pool), len(raw.X))),
            "test": _Split(raw.X_test, raw.y_test, np.arange(request.num_test)),
        }


class _Digits:
    """scikit-learn's 8x8 digits: one fixed stratified split into test, val and the training pool."""

    def source_id(self) -> tuple[object, ...]:
        return ("sklearn.datasets.load_digits", importlib.metadata.version("scikit-learn"))

    def known_counts(self, root: Path) -> tuple[int, int] | None:
        return _DIGITS_ROWS, 0  # bundled with scikit-learn; read() checks it

    def remember_counts(self, root: Path, counts: tuple[int, int]) -> None:
        pass

    def read(self) -> _Raw:
        from sklearn.datasets import load_digits  # imported here: sklearn takes ~1 s to import

        X, y = load_digits(return_X_y=True)
        if len(X) != _DIGITS_ROWS:
            raise DatasetError(f"scikit-learn's digits has {len(X)} images, expected {_DIGITS_ROWS}")
        return _Raw(X * _DIGITS_SCALE, y.astype(np.int64))  # 0..16 -> 0..255, CIFAR-like units

    def request(
        self, counts: tuple[int, int], num_train: int | None, num_val: int | None, num_test: int | None, seed: int
    ) -> _Request:
        rows = counts[0]
        num_val = _DIGITS_DEFAULT_VAL if num_val is None else num_val
        num_test = _DIGITS_DEFAULT_TEST if num_test is None else num_test
        _check_fits("num_test", num_test, rows - 2, f"digits has {rows} images and val and train need 1 each")
        left = rows - num_test
        _check_fits("num_val", num_val, left - 1, f"{left} images are left after num_test={num_test} and train needs 1")
        return _nested_request("digits", left - num_val, num_train, seed, (num_val, num_test), self.source_id())

    def split(self, raw: _Raw, request: _Request) -> dict[str, _Split]:
        order = _stratified_order(raw.y, np.random.default_rng(_DIGITS_SPLIT_SEED))
        val_end = request.num_test + request.num_val
        pool = np.sort(order[val_end:])
        return {
            "train": _Split(raw.X, raw.y, _nested_subset(pool, request.num_train, request.seed)),
            "val": _Split(raw.X, raw.y, np.sort(order[request.num_test : val_end])),
            "test": _Split(raw.X, raw.y, np.sort(order[: request.num_test])),
        }


def _cifar10_source(data_dir: PathLike | None, download: bool) -> _Cifar10:
    root = resolve_data_dir(data_dir)
    folder = root / CIFAR10_FOLDER
    missing = missing_cifar10_files(folder)
    if missing and download:
        folder = download_cifar10(root)
    elif missing:
        raise DatasetError(
            f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}. {how_to_get_cifar10()}; "
            "or call load_dataset(..., download=True)"
        )
    return _Cifar10(folder)


def _check_size(field: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a positive int or None, got {value!r}")
    try:
        n = operator.index(value)  # accepts numpy ints, refuses 1.5 and "10"
    except TypeError:
        raise ValueError(f"{field} must be a positive int or None, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{field} must be a positive int or None, got {n}")
    return n


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    try:
        s = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}") from None
    if s < 0:
        raise ValueError(f"seed must be a non-negative int, got {s}")
    return s


def _check_fits(field: str, value: int, available: int, what: str) -> None:
    if value > available:
        raise ValueError(f"{field}={value} is too large: {what} (at most {max(available, 0)})")


def _nested_subset(pool: np.ndarray, n: int, seed: int | None) -> np.ndarray:
    """The first ``n`` of a ``seed``-ed permutation of ``pool``, in row order.

    The permutation depends only on ``len(pool)`` and ``seed``, so for
    ``n1 < n2`` the ``n1`` rows are a subset of the ``n2`` rows.
    """
    if n == len(pool):
        return pool
    perm = np.random.default_rng(seed).permutation(len(pool))
    return pool[np.sort(perm[:n])]


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``y`` (N,) ordered so that every contiguous run is class-stratified.

    Shuffle, then place the k-th of the n_c items of class c at position
    (k + 0.5) / n_c: a window of m items holds about m * n_c / N of class c.
    """
    perm = rng.permutation(len(y))
    labels = y[perm]
    counts = np.bincount(labels)
    by_class = np.argsort(labels, kind="stable")
    rank = np.empty(len(y))
    rank[by_class] = np.arange(len(y)) - np.repeat(np.cumsum(counts) - counts, counts)
    return perm[np.argsort((rank + 0.5) / counts[labels], kind="stable")]


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and scalars; refuses any other global."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> data uint8 (N, 3072), labels int64 (N,)."""
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the official files were pickled by Python 2.
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DatasetError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc
    except Exception as exc:  # truncation and corruption surface as many types
        raise DatasetError(
            f"CIFAR-10 batch {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            f"delete {path.parent} and download it again"
        ) from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"CIFAR-10 batch {path} is not a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR10_DIM):
        got = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        raise DatasetError(f"CIFAR-10 batch {path}: b'data' must be uint8 (N, {_CIFAR10_DIM}), got {got}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DatasetError(
            f"CIFAR-10 batch {path}: b'labels' must be {len(data)} integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= _CIFAR10_CLASSES):
        raise DatasetError(f"CIFAR-10 batch {path}: labels must be in 0..{_CIFAR10_CLASSES - 1}")
    return data, labels.astype(np.int64)


def _write_entry(entry: Path, splits: dict[str, _Split]) -> None:
    """Write the six arrays into a temp folder beside ``entry``, then rename it into place."""
    # mkdir (not mkdtemp, which is 0700) so the umask decides who may read a shared cache.
    staging = entry.parent / f".{entry.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    try:
        mean = _train_mean(splits["train"]).astype(np.float32)
        for split, s in splits.items():
            # Written through a file mapping: no second in-memory copy of CIFAR-10.
            out = np.lib.format.open_memmap(
                staging / f"X_{split}.npy", mode="w+", dtype=np.float32, shape=(len(s.idx), s.X.shape[1])
            )
            for start, stop in _chunks(len(s.idx)):
                out[start:stop] = s.X[s.idx[start:stop]].astype(np.float32) - mean
            out.flush()
            del out
            np.save(staging / f"y_{split}.npy", s.y[s.idx].astype(np.int64))
        try:
            # rename(2) of a folder is atomic: readers see no entry or a complete one.
            os.rename(staging, entry)
        except OSError:
            if not entry.is_dir():
                raise
            # Another process won the race (only possible where flock is a no-op).
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _train_mean(s: _Split) -> np.ndarray:
    """float64 (D,) mean of the float32 rows ``s.X[s.idx]``, a chunk at a time."""
    total = np.zeros(s.X.shape[1], dtype=np.float64)
    for start, stop in _chunks(len(s.idx)):
        total += s.X[s.idx[start:stop]].astype(np.float32).sum(axis=0, dtype=np.float64)
    return total / len(s.idx)


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, _CHUNK_ROWS):
        yield start, min(start + _CHUNK_ROWS, n)


def _write_atomic(path: Path, content: bytes) -> None:
    """Write a small file via a temp file in the same folder and ``os.replace``."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _open_entry(entry: Path) -> dict[str, np.ndarray]:
    try:
        return {key: np.load(entry / f"{key}.npy", mmap_mode="r") for key in KEYS}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cache entry {entry} is damaged ({exc}); delete that folder and retry") from exc


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (released by the kernel if we die)."""
    with open(lock_path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
