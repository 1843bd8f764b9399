"""Dataset file formats parsed by hand: IDX (MNIST/FashionMNIST) and CIFAR-10 batches."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from qtrain import data


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(blob)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_from_a_directory(tmp_path, compress):
    rng = np.random.default_rng(0)
    sfx = ".gz" if compress else ""
    xtr, ytr = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    xte, yte = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", xtr, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", ytr, compress)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", xte, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", yte, compress)
    for name in ("mnist", "fashion-mnist"):
        ds = data.load_dataset(name, root=tmp_path)
        assert ds.x_train.shape == (20, 1, 28, 28) and ds.y_test.tolist() == yte.tolist()
        np.testing.assert_allclose(ds.x_train[3, 0].numpy(), (xtr[3] / 255 - 0.1307) / 0.3081, atol=1e-5)


def test_a_truncated_idx_file_and_missing_files_are_named(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 2, 2)), False)
    blob = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(blob[:-3])
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        _write_idx(tmp_path / name, np.zeros((4,) if "labels" in name else (4, 2, 2)), False)
    with pytest.raises(data.DatasetUnavailable, match=r"cannot read its files \(ValueError: .*header says"):
        data.load_dataset("mnist", root=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(data.DatasetUnavailable, match="cannot read its files"):
        data.load_dataset("mnist", root=tmp_path)
    for stale in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                  "train-images-idx3-ubyte.gz"):
        (tmp_path / stale).unlink()
    with pytest.raises(data.DatasetUnavailable, match=r"train-labels-idx1-ubyte\[.gz\] not found"):
        data.load_dataset("mnist", root=tmp_path)
    with pytest.raises(data.DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist", root=tmp_path / "nowhere")


def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072)).astype(np.uint8), rng.integers(0, 10, n)


def test_cifar10_binary_and_python_batches_agree(tmp_path):
    batches = [_cifar_arrays(4, i) for i in range(6)]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    (tmp_path / "bin" / "cifar-10-batches-bin").mkdir(parents=True)
    (tmp_path / "py" / "cifar-10-batches-py").mkdir(parents=True)
    for name, (x, y) in zip(names, batches):
        rec = np.concatenate([y[:, None].astype(np.uint8), x], axis=1)
        rec.tofile(tmp_path / "bin" / "cifar-10-batches-bin" / f"{name}.bin")
        with open(tmp_path / "py" / "cifar-10-batches-py" / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y.tolist()}, f)
    a = data.load_dataset("cifar10", root=tmp_path / "bin")
    b = data.load_dataset("cifar10", root=tmp_path / "py")
    assert a.x_train.shape == (20, 3, 32, 32) and a.y_test.shape == (4,)
    assert (a.x_train == b.x_train).all() and (a.y_train == b.y_train).all()
    assert a.y_test.tolist() == batches[-1][1].tolist()
    assert float(a.x_train.min()) >= -1 and float(a.x_train.max()) <= 1


def test_cifar10_python_batches_cannot_run_code(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(data.DatasetUnavailable, match="refusing to load builtins.print"):
        data.load_dataset("cifar10", root=tmp_path)
    with pytest.raises(data.DatasetUnavailable, match="pass the directory"):
        data.load_dataset("cifar10")


@pytest.mark.skipif(not Path(data.FASHION_DIR).is_dir(), reason="Debian package dataset-fashion-mnist not installed "
                    "(.ci/run installs it; the IDX parser itself is tested above)")
def test_fashion_mnist_from_the_debian_package():
    ds = data.load_dataset("fashion-mnist")
    assert (len(ds.y_train), len(ds.y_test)) == (60000, 10000)
    assert ds.x_train.shape[1:] == (1, 28, 28)
