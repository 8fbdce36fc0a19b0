"""load_dataset: splits, nested subsets, validation, errors and the shared .npy cache.

CIFAR-10 cases run on tiny batch files in the official layout, written here
(10 rows per batch unless a test needs more); digits uses scikit-learn's
bundled set. Every test gets its own cache folder.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from sweep.data.datasets import DATASETS, KEYS, DatasetError, load_dataset, resolve_cache_dir, resolve_data_dir

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar10(root: Path, rows: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``root/cifar-10-batches-py`` with ``rows`` random rows per batch.

    Pickled at protocol 2 with bytes keys, like the official (Python 2) files.
    Returns the raw train uint8 (5*rows, 3072) / labels and test arrays.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    X = rng.integers(0, 256, (6 * rows, 3072), dtype=np.uint8)
    y = rng.integers(0, 10, 6 * rows)
    for i, name in enumerate(BATCHES):
        part = slice(i * rows, (i + 1) * rows)
        batch = {b"batch_label": name.encode(), b"labels": y[part].tolist(), b"data": X[part]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return {"X": X[: 5 * rows], "y": y[: 5 * rows], "X_test": X[5 * rows :], "y_test": y[5 * rows :]}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cifar(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "data"
    return root, write_cifar10(root)


def tiny(root: Path, cache: Path, **kw: object) -> dict[str, np.ndarray]:
    """load_dataset on the 50/10-row tiny CIFAR-10 with explicit sizes."""
    sizes = {"num_train": 40, "num_val": 10, "num_test": 10} | kw
    return load_dataset("cifar10", root, cache_dir=cache, **sizes)


def raw_train_rows(data: dict[str, np.ndarray], raw_val: np.ndarray) -> np.ndarray:
    """Undo the mean subtraction of X_train using val rows whose raw pixels are known."""
    mean = (raw_val.astype(np.float64) - data["X_val"]).mean(axis=0)
    rows = data["X_train"] + mean
    assert np.abs(rows - np.rint(rows)).max() < 1e-3, "X_train is not raw pixels minus one mean"
    return np.rint(rows).astype(np.uint8)


def row_ids(rows: np.ndarray, raw: np.ndarray) -> list[int]:
    """Index in ``raw`` of every row of ``rows`` (each must be there)."""
    where = {r.tobytes(): i for i, r in enumerate(raw)}
    return [where[r.tobytes()] for r in rows]


# --- digits -----------------------------------------------------------------

def test_digits_defaults_are_float32_rows_from_a_readonly_memmap(cache: Path) -> None:
    d = load_dataset("digits", cache_dir=cache)
    assert set(d) == set(KEYS)
    for split, n in [("train", 1197), ("val", 300), ("test", 300)]:
        X, y = d[f"X_{split}"], d[f"y_{split}"]
        assert X.shape == (n, 64) and X.dtype == np.float32 and X.flags.c_contiguous
        assert y.shape == (n,) and y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
        assert isinstance(X, np.memmap) and Path(X.filename).is_relative_to(cache)
        with pytest.raises(ValueError, match="read-only"):
            X[0, 0] = 1.0
    assert np.abs(d["X_train"].mean(axis=0, dtype=np.float64)).max() < 1e-4


def test_digits_splits_partition_the_bundled_set_in_0_255_units(cache: Path) -> None:
    d = load_dataset("digits", cache_dir=cache)
    X = np.concatenate([d["X_train"], d["X_val"], d["X_test"]])
    y = np.concatenate([d["y_train"], d["y_val"], d["y_test"]])
    # Every pixel is 0 in some image, so the column minimum gives back the
    # subtracted mean; one mean for all splits, or the grid below breaks.
    mean = -X.min(axis=0).astype(np.float64)
    assert np.allclose(mean, (d["X_train"] + mean).mean(axis=0), atol=1e-3)
    levels = (X + mean) * 16 / 255  # back to sklearn's 0..16 ints
    assert np.abs(levels - np.rint(levels)).max() < 1e-3
    ours = np.column_stack([np.rint(levels), y])
    ref_X, ref_y = load_digits(return_X_y=True)
    ref = np.column_stack([ref_X, ref_y])
    assert np.array_equal(np.unique(ours, axis=0), np.unique(ref, axis=0)) and len(ours) == len(ref)


def test_digits_val_and_test_are_stratified(cache: Path) -> None:
    d = load_dataset("digits", num_val=200, num_test=400, cache_dir=cache)
    share = np.bincount(load_digits().target) / 1797
    for split, n in [("val", 200), ("test", 400)]:
        counts = np.bincount(d[f"y_{split}"], minlength=10)
        # A plain random split misses by ~sqrt(n/10) = 4..6 per class.
        assert np.abs(counts - n * share).max() <= 2, (split, counts)


def train_ids(d: dict[str, np.ndarray], full: dict[str, np.ndarray]) -> set[int]:
    """Rows of ``full["X_train"]`` that make up ``d["X_train"]`` (same val/test images)."""
    # The val images are the same in both, so their offset is the difference of the two means.
    shift = (d["X_val"] - full["X_val"]).mean(axis=0)
    assert np.allclose(d["X_val"] - full["X_val"], shift, atol=1e-3)
    assert np.allclose(d["X_test"] - full["X_test"], shift, atol=1e-3)
    A, B = (d["X_train"] - shift).astype(np.float64), full["X_train"].astype(np.float64)
    dist = np.sqrt(np.maximum((A**2).sum(1)[:, None] - 2 * A @ B.T + (B**2).sum(1)[None, :], 0))
    idx = dist.argmin(axis=1)
    assert dist.min(axis=1).max() < 1e-2 and len(set(idx)) == len(A)  # all found, no row twice
    assert np.array_equal(d["y_train"], full["y_train"][idx])
    return set(idx.tolist())


def test_digits_training_subsets_are_nested_per_seed_and_val_test_fixed(cache: Path) -> None:
    full = load_dataset("digits", cache_dir=cache)
    ids = {n: train_ids(load_dataset("digits", num_train=n, seed=3, cache_dir=cache), full) for n in (50, 200, 800)}
    assert ids[50] < ids[200] < ids[800]
    other = train_ids(load_dataset("digits", num_train=200, seed=4, cache_dir=cache), full)
    assert len(other & ids[200]) < 150, "another seed picks another subset"


# --- CIFAR-10 layout on tiny files ------------------------------------------

def test_cifar10_splits_follow_cs231n(cifar: tuple[Path, dict[str, np.ndarray]], cache: Path) -> None:
    root, raw = cifar
    d = tiny(root, cache, num_train=None, num_test=7)
    mean = raw["X"][:40].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(d["X_train"], raw["X"][:40] - mean, atol=1e-4)  # rows 0..39
    np.testing.assert_allclose(d["X_val"], raw["X"][40:] - mean, atol=1e-4)  # the last num_val rows
    np.testing.assert_allclose(d["X_test"], raw["X_test"][:7] - mean, atol=1e-4)  # first num_test
    assert np.array_equal(d["y_train"], raw["y"][:40]) and np.array_equal(d["y_val"], raw["y"][40:])
    assert np.array_equal(d["y_test"], raw["y_test"][:7])
    assert d["X_train"].shape == (40, 3072) and d["X_train"].dtype == np.float32
    assert d["y_train"].dtype == np.int64 and d["X_test"].flags.c_contiguous


def test_cifar10_training_subsets_are_nested_prefixes_of_a_seeded_permutation(
    cifar: tuple[Path, dict[str, np.ndarray]], cache: Path
) -> None:
    root, raw = cifar
    ids = {}
    for n in (5, 17, 40):
        d = tiny(root, cache, num_train=n, seed=7)
        ids[n] = row_ids(raw_train_rows(d, raw["X"][40:]), raw["X"])
        assert np.array_equal(d["y_train"], raw["y"][ids[n]])
    perm = np.random.default_rng(7).permutation(40)
    assert ids[5] == sorted(perm[:5]) and ids[17] == sorted(perm[:17]) and ids[40] == list(range(40))
    other = row_ids(raw_train_rows(tiny(root, cache, num_train=17, seed=8), raw["X"][40:]), raw["X"])
    assert other != ids[17]


def test_whole_pool_is_one_cache_entry_for_every_seed(cache: Path) -> None:
    a = load_dataset("digits", seed=0, cache_dir=cache)
    b = load_dataset("digits", seed=5, cache_dir=cache)
    c = load_dataset("digits", num_train=1197, seed=9, cache_dir=cache)
    assert a["X_train"].filename == b["X_train"].filename == c["X_train"].filename
    assert load_dataset("digits", num_train=1196, seed=9, cache_dir=cache)["X_train"].filename != a["X_train"].filename


# --- validation -------------------------------------------------------------

def test_unknown_dataset_names_the_field_and_allowed_names(cache: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset must be one of \('digits', 'cifar10'\), got 'mnist'"):
        load_dataset("mnist", cache_dir=cache)
    assert DATASETS == ("digits", "cifar10")


@pytest.mark.parametrize("field", ["num_train", "num_val", "num_test"])
@pytest.mark.parametrize("bad", [0, -3, 1.5, "10", True])
def test_sizes_must_be_positive_ints(field: str, bad: object, cache: Path) -> None:
    with pytest.raises(ValueError, match=field):
        load_dataset("digits", cache_dir=cache, **{field: bad})


@pytest.mark.parametrize(
    ("sizes", "field"),
    [({"num_train": 1198}, "num_train"), ({"num_test": 1796}, "num_test"),
     ({"num_test": 1000, "num_val": 797}, "num_val"), ({"num_val": 400, "num_train": 1197}, "num_train")],
)
def test_digits_sizes_beyond_the_data_name_the_field(sizes: dict[str, int], field: str, cache: Path) -> None:
    with pytest.raises(ValueError, match=f"{field}=.*at most"):
        load_dataset("digits", cache_dir=cache, **sizes)
    assert not any(cache.glob("digits-*")), "nothing cached for a refused request"


@pytest.mark.parametrize(
    ("sizes", "field"),
    [({}, "num_val"), ({"num_val": 10}, "num_test"), ({"num_val": 10, "num_train": 41, "num_test": 10}, "num_train"),
     ({"num_val": 10, "num_train": 40, "num_test": 11}, "num_test"), ({"num_val": 50, "num_train": 1}, "num_val")],
)
def test_cifar10_sizes_beyond_the_files_name_the_field(
    cifar: tuple[Path, dict[str, np.ndarray]], cache: Path, sizes: dict[str, int], field: str
) -> None:
    root, _ = cifar
    # {} asks for the defaults (1 000 val rows) from 50-row files.
    with pytest.raises(ValueError, match=f"{field}=.*at most"):
        load_dataset("cifar10", root, cache_dir=cache, **sizes)


@pytest.mark.parametrize("bad", [-1, 2.0, None])
def test_seed_must_be_a_non_negative_int(bad: object, cache: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        load_dataset("digits", seed=bad, cache_dir=cache)  # type: ignore[arg-type]


# --- errors on missing or broken CIFAR-10 files ------------------------------

def test_missing_cifar10_says_where_and_how_to_get_it(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path / "nowhere", cache_dir=cache)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "sweep data download cifar10 --data-dir" in msg and "SWEEP_DATA_DIR" in msg
    assert isinstance(err.value, ValueError)
    assert not (tmp_path / "nowhere").exists(), "download=False must not create the folder"


def test_truncated_batch_is_named(cifar: tuple[Path, dict[str, np.ndarray]], cache: Path) -> None:
    root, _ = cifar
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="data_batch_3 is truncated or corrupt"):
        tiny(root, cache)
    assert not any(cache.glob("cifar10-*")), "no cache entry from a failed build"


def test_batch_with_wrong_row_width_is_named(cifar: tuple[Path, dict[str, np.ndarray]], cache: Path) -> None:
    root, _ = cifar
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((10, 1024), np.uint8), b"labels": [0] * 10}, protocol=2))
    with pytest.raises(DatasetError, match=r"test_batch: b'data' must be uint8 \(N, 3072\)"):
        tiny(root, cache)


class _MakesMarker:
    """Unpickling this calls open(path, 'w'): proof that code would have run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def test_batch_pickle_that_would_run_code_is_refused(
    cifar: tuple[Path, dict[str, np.ndarray]], cache: Path, tmp_path: Path
) -> None:
    root, _ = cifar
    payload = pickle.dumps({b"data": _MakesMarker(tmp_path / "ran"), b"labels": []}, protocol=2)
    pickle.loads(payload)  # plain pickle does run it ...
    assert (tmp_path / "ran").exists()
    (tmp_path / "ran").unlink()
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(payload)
    with pytest.raises(DatasetError, match=r"data_batch_2 .*refusing to load global"):
        tiny(root, cache)
    assert not (tmp_path / "ran").exists()  # ... load_dataset does not


# --- the cache ----------------------------------------------------------------

def test_cache_is_written_once_and_then_only_mapped(cifar: tuple[Path, dict[str, np.ndarray]], cache: Path) -> None:
    root, _ = cifar
    first = tiny(root, cache)
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == sorted(f"{k}.npy" for k in KEYS)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entries[0].iterdir()}
    second = tiny(root, cache)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entries[0].iterdir()} == before
    for key in KEYS:
        assert isinstance(second[key], np.memmap) and second[key].mode == "r"
        assert np.array_equal(first[key], second[key])
    tiny(root, cache, num_train=20)  # another size, another entry
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2


def test_replaced_source_files_are_not_served_from_an_old_entry(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "data"
    write_cifar10(root, seed=1)
    old = tiny(root, cache)
    os.rename(root / "cifar-10-batches-py", tmp_path / "old")
    raw = write_cifar10(root, seed=2)
    new = tiny(root, cache, num_train=None)
    assert not np.array_equal(old["y_train"], new["y_train"])
    np.testing.assert_allclose(new["X_val"] + raw["X"][:40].mean(axis=0), raw["X"][40:], atol=1e-3)


def test_data_and_cache_dirs_resolve_argument_then_env_then_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SWEEP_DATA_DIR", raising=False)
    monkeypatch.delenv("SWEEP_CACHE_DIR", raising=False)
    assert resolve_data_dir(None) == tmp_path / "xdg" / "dropout-sweep" / "data"
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "dropout-sweep" / "arrays"
    monkeypatch.setenv("SWEEP_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "env-cache"))
    assert resolve_data_dir(None) == tmp_path / "env-data"
    assert resolve_cache_dir(None) == tmp_path / "env-cache"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_load_dataset_reads_the_env_data_and_cache_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = write_cifar10(tmp_path / "env-data")
    monkeypatch.setenv("SWEEP_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "env-cache"))
    d = load_dataset("cifar10", num_train=40, num_val=10, num_test=10)
    assert np.array_equal(d["y_test"], raw["y_test"])
    assert Path(d["X_train"].filename).is_relative_to(tmp_path / "env-cache")


LOADER = """
import hashlib, sys, time
from pathlib import Path
import numpy as np
from sweep.data.datasets import KEYS, load_dataset
root, cache, go = sys.argv[1:4]
n_train, n_val, n_test = map(int, sys.argv[4:7])
while not Path(go).exists():
    time.sleep(0.001)
d = load_dataset("cifar10", root, num_train=n_train, num_val=n_val, num_test=n_test, seed=1, cache_dir=cache)
print(hashlib.sha256(b"".join(np.asarray(d[k]).tobytes() for k in KEYS)).hexdigest())
"""


def digest(d: dict[str, np.ndarray]) -> str:
    return hashlib.sha256(b"".join(np.asarray(d[k]).tobytes() for k in KEYS)).hexdigest()


def test_two_processes_building_one_key_at_once_leave_one_valid_entry(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "data"
    write_cifar10(root, rows=400)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", LOADER, str(root), str(cache), str(go), "1500", "500", "400"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(0.5)  # both interpreters up and polling, then release them together
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    names = [p.name for p in cache.iterdir()]
    assert not [n for n in names if n.endswith(".tmp")], names  # no staging left behind
    assert len([n for n in names if not n.startswith(".")]) == 1, names
    here = load_dataset("cifar10", root, num_train=1500, num_val=500, num_test=400, seed=1, cache_dir=cache)
    assert outs[0][0].strip() == outs[1][0].strip() == digest(here)
    fresh = load_dataset("cifar10", root, num_train=1500, num_val=500, num_test=400, seed=1,
                         cache_dir=tmp_path / "fresh")
    assert digest(fresh) == digest(here)


@pytest.mark.faults  # a process killed or signalled: the fault suite (keeps the default run under 10 min)
def test_a_writer_killed_mid_build_leaves_no_entry(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "data"
    raw = write_cifar10(root, rows=2000)  # ~150 MB of float32 to write: long enough to catch
    go = tmp_path / "go"
    go.touch()
    sizes = ["9000", "1000", "2000"]
    proc = subprocess.Popen([sys.executable, "-c", LOADER, str(root), str(cache), str(go), *sizes],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(cache.glob(".cifar10-*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(cache.glob(".cifar10-*.tmp")), "never saw the staging folder"
    assert not [p for p in cache.iterdir() if p.name.startswith("cifar10-")], "half-written entry in place"
    d = load_dataset("cifar10", root, num_train=9000, num_val=1000, num_test=2000, seed=1, cache_dir=cache)
    assert np.array_equal(d["y_test"], raw["y_test"])
    np.testing.assert_allclose(d["X_val"] - d["X_val"][0], raw["X"][-1000:] - raw["X"][-1000].astype(np.float32), atol=1e-4)
