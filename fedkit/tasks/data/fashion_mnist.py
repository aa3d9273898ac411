"""Fashion-MNIST from local IDX files, by default where Debian's ``dataset-fashion-mnist``
package installs them (gzipped): ``/usr/share/datasets/fashion-mnist/{train,t10k}-
{images-idx3,labels-idx1}-ubyte.gz``. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from fedkit.tasks.data.idx import read_idx

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _locate(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    where = f"directory {root} does not exist" if not root.is_dir() else f"not found in {root}"
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz): {where}. Install the Debian package "
        f"{DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}) or pass root= a directory "
        "holding the IDX files."
    )


def read_fashion_mnist(
    split: Literal["train", "test"] = "train", root: str | Path = DEFAULT_ROOT
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``uint8[N, 28, 28]`` and labels ``int64[N]`` of one split (60000 train,
    10000 test).

    Xiao et al. 2017, Fashion-MNIST: a novel image dataset for benchmarking machine
    learning algorithms.
    """
    if split not in _STEMS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    image_stem, label_stem = _STEMS[split]
    images = torch.from_numpy(read_idx(_locate(root, image_stem)))
    labels = torch.from_numpy(read_idx(_locate(root, label_stem))).to(torch.int64)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Fashion-MNIST {split} in {root}: images {tuple(images.shape)} and labels "
            f"{tuple(labels.shape)} do not match"
        )
    return images, labels
