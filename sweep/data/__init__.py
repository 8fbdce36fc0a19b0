"""Datasets: CIFAR-10 in its official layout and scikit-learn's digits, as float32 rows.

- `datasets`: `load_dataset(name, ...)` -> X_train, y_train, X_val, y_val, X_test, y_test (nested seeded subsets, memory-mapped cache)
- `download`: `download_cifar10` (verified archive) and where data folders are
"""

from typing import TYPE_CHECKING

from sweep._lazy import lazy_exports

if TYPE_CHECKING:
    from .datasets import load_dataset
    from .download import DatasetError, download_cifar10

__all__ = ['DatasetError', 'download_cifar10', 'load_dataset']

__getattr__, __dir__ = lazy_exports(__name__, {'load_dataset': '.datasets', 'download_cifar10': '.download', 'DatasetError': '.download'})
