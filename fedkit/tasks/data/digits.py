"""scikit-learn's handwritten digits (1797 8x8 images, shipped with scikit-learn, offline).

The images are read straight from the CSV that ``sklearn.datasets.load_digits`` reads
(``sklearn/datasets/data/digits.csv.gz``: 64 pixel values 0..16, then the label), which
avoids importing scikit-learn (seconds of scipy imports); if the file is not where it is
expected, ``load_digits`` itself is used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch


def _digits_csv() -> Path | None:
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = _digits_csv()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        if table.shape == (1797, 65):
            return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``x: float32[N, 1, 8, 8]`` scaled to [0, 1] and ``y: int64[N]``
    in 0..9, in scikit-learn's order.

    Alpaydin & Kaynak 1998, Optical recognition of handwritten digits (UCI).
    """
    images, target = _digits_arrays()
    x = torch.as_tensor(images, dtype=torch.float32).div(16.0).unsqueeze(1)
    y = torch.as_tensor(target, dtype=torch.int64)
    return x, y
