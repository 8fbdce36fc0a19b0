"""load_dataset('cifar10') on the real 60 000 images (``pytest -m cifar10``).

Needs SWEEP_DATA_DIR pointing at a folder with ``cifar-10-batches-py``, e.g.
built by ``python ../shared/data/build_cifar10.py DIR``. The arrays are built
into a fresh cache folder, so the whole build path runs (~5 s).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sweep.data.datasets import load_dataset

pytestmark = pytest.mark.cifar10
BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def folder() -> Path:
    env = os.environ.get("SWEEP_DATA_DIR", "")
    path = Path(env) / "cifar-10-batches-py"
    if not env or not (path / "test_batch").is_file():
        pytest.fail(
            f"SWEEP_DATA_DIR={env!r} has no cifar-10-batches-py: build it with "
            "`python ../shared/data/build_cifar10.py DIR` and set SWEEP_DATA_DIR=DIR"
        )
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("arrays")
    yield path
    shutil.rmtree(path)  # ~650 MB; pytest would keep it among its last three temp roots


@pytest.fixture(scope="module")
def full(folder: Path, cache: Path) -> dict[str, np.ndarray]:
    return load_dataset("cifar10", cache_dir=cache)  # data dir from SWEEP_DATA_DIR


@pytest.fixture(scope="module")
def raw(folder: Path) -> dict[str, np.ndarray]:
    """The batches read independently, with plain pickle (trusted local files)."""
    def read(name: str) -> dict[bytes, object]:
        with open(folder / name, "rb") as f:
            return pickle.load(f, encoding="bytes")

    train = [read(n) for n in BATCHES]
    test = read("test_batch")
    return {
        "X": np.concatenate([b[b"data"] for b in train]),
        "y": np.concatenate([b[b"labels"] for b in train]),
        "X_test": np.asarray(test[b"data"]),
        "y_test": np.asarray(test[b"labels"]),
    }


def test_cs231n_sizes_and_dtypes(full: dict[str, np.ndarray]) -> None:
    for split, n in [("train", 49_000), ("val", 1_000), ("test", 1_000)]:
        X, y = full[f"X_{split}"], full[f"y_{split}"]
        assert X.shape == (n, 3072) and X.dtype == np.float32 and X.flags.c_contiguous
        assert y.shape == (n,) and y.dtype == np.int64
        assert not X.flags.writeable and isinstance(X, np.memmap)


def test_labels_cover_ten_roughly_balanced_classes(full: dict[str, np.ndarray]) -> None:
    for split, n in [("train", 49_000), ("val", 1_000), ("test", 1_000)]:
        counts = np.bincount(full[f"y_{split}"], minlength=10)
        assert len(counts) == 10 and full[f"y_{split}"].min() == 0
        assert counts.min() > 0.6 * n / 10 and counts.max() < 1.4 * n / 10, (split, counts)
    train = np.bincount(full["y_train"])
    assert train.min() > 0.95 * 4_900 and train.max() < 1.05 * 4_900, train


def test_training_mean_is_subtracted(full: dict[str, np.ndarray]) -> None:
    mean = full["X_train"].mean(axis=0, dtype=np.float64)
    assert np.abs(mean).max() < 1e-3
    # Val/test are shifted by the same training mean, not centred on their own.
    assert 0 < np.abs(full["X_val"].mean(axis=0, dtype=np.float64)).mean() < 20


def test_rows_match_an_independent_read_of_the_batches(
    full: dict[str, np.ndarray], raw: dict[str, np.ndarray]
) -> None:
    mean = raw["X"][:49_000].mean(axis=0, dtype=np.float64)
    for i in (0, 12_345, 48_999):
        np.testing.assert_allclose(full["X_train"][i], raw["X"][i] - mean, atol=1e-3)
    np.testing.assert_allclose(full["X_val"], raw["X"][49_000:] - mean, atol=1e-3)
    np.testing.assert_allclose(full["X_test"], raw["X_test"][:1_000] - mean, atol=1e-3)
    assert np.array_equal(full["y_train"], raw["y"][:49_000])
    assert np.array_equal(full["y_val"], raw["y"][49_000:])
    assert np.array_equal(full["y_test"], raw["y_test"][:1_000])


def test_smaller_training_sets_are_nested(folder: Path, cache: Path, raw: dict[str, np.ndarray]) -> None:
    where = {row.tobytes(): i for i, row in enumerate(raw["X"][:49_000])}
    ids = {}
    for n in (1_000, 5_000):
        d = load_dataset("cifar10", folder.parent, num_train=n, seed=0, cache_dir=cache)
        shift = (raw["X"][49_000:].astype(np.float64) - d["X_val"]).mean(axis=0)  # = this subset's mean
        pixels = np.rint(d["X_train"] + shift).astype(np.uint8)
        ids[n] = {where[row.tobytes()] for row in pixels}
        assert len(ids[n]) == n
    assert ids[1_000] < ids[5_000]
