"""`DataSpec`: the five settings that pick a dataset's arrays, carried as one value.

A sweep, its workers, an ablation's cells and the cost estimate all load data
through `spec.load()`, so the settings are named once (sweep.config's
`SweepConfig.data` builds the sweep's; an ablation cell's is that with its
size and subset seed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class DataSpec:
    """Which arrays: the dataset, its folder (CIFAR-10), training and validation rows, the subset seed."""

    name: str
    data_dir: str | None = None
    num_train: int | None = None  # None: the whole training split
    num_val: int | None = None  # None: the dataset's default validation split
    seed: int = 0  # which nested training subset (the rows are the first num_train of one seeded order)

    def subset(self, num_train: int | None, seed: int) -> DataSpec:
        """The same data with another training-set size and subset seed (an ablation cell's)."""
        return replace(self, num_train=num_train, seed=seed)

    def load(self) -> dict[str, np.ndarray]:
        """X_train, y_train, X_val, y_val, X_test, y_test (sweep.data.datasets.load_dataset; cached)."""
        from sweep.data.datasets import load_dataset

        return load_dataset(self.name, data_dir=self.data_dir, num_train=self.num_train, num_val=self.num_val,
                            seed=self.seed)
