"""Fashion-MNIST from Debian's dataset-fashion-mnist files, and the IDX reader."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch

import fedkit
from fedkit.tasks import fashion_mnist
from fedkit.tasks.data.fashion_mnist import DEFAULT_ROOT, read_fashion_mnist
from fedkit.tasks.data.idx import parse_idx, read_idx

needs_package = pytest.mark.skipif(
    not DEFAULT_ROOT.is_dir() and not os.environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist (scripts/setup does; required in CI)",
)


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def test_idx_reader_plain_and_gzipped(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(images, 0x08))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images, 0x08)))
    assert np.array_equal(read_idx(tmp_path / "a"), images)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), images)
    big_endian = np.array([1, -2, 70000], dtype=">i4")
    assert parse_idx(idx_bytes(big_endian, 0x0C)).tolist() == [1, -2, 70000]


def test_idx_reader_rejects_bad_files():
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bytes"):
        parse_idx(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="type code"):
        parse_idx(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 1) + b"\x00")


def test_missing_directory_names_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as err:
        fashion_mnist(4, root=tmp_path / "nowhere", key=fedkit.key(0))
    assert "nowhere" in str(err.value)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        read_fashion_mnist("train", tmp_path)


@needs_package
def test_reads_the_debian_files():
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = read_fashion_mnist(split)
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert torch.equal(torch.bincount(labels), torch.full((10,), n // 10))


@needs_package
def test_task_with_a_small_training_subset():
    task = fashion_mnist(5, partition="dirichlet", alpha=0.3, max_train=500, max_test=200, key=3)
    assert task.num_clients == 5 and sum(task.client_size(i) for i in range(5)) == 500
    assert task.test_x.shape == (200, 1, 28, 28) and task.test_x.dtype == torch.float32
    assert float(task.test_x.max()) <= 1.0 and float(task.test_x.min()) >= 0.0
    logits = task.apply(task.init(fedkit.key(0)), task.client_x[0])
    assert logits.shape == (task.client_size(0), 10)
    again = fashion_mnist(5, partition="dirichlet", alpha=0.3, max_train=500, max_test=200, key=3)
    assert all(torch.equal(a, b) for a, b in zip(task.client_x, again.client_x))
    images, labels = read_fashion_mnist("train")
    idx = task.meta["client_indices"][2]
    assert torch.equal(labels[idx], task.client_y[2])
    assert torch.equal(images[idx].unsqueeze(1).float() / 255, task.client_x[2])
