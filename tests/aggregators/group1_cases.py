"""The group-1 aggregation kernels as uniform test cases: ``call(U, w, n_active, key)``.

Each case fixes the hyper-parameters the property tests use (``f`` the largest the rule
allows for ``n_active`` rows) and says which properties hold exactly for it. Imported by the
``test_group1_*`` files.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
import torch

from fedkit.aggregators import (
    bulyan,
    centered_clipping,
    geometric_median,
    krum,
    meamed,
    mean,
    median,
    multi_krum,
    trimmed_mean,
)


def f_krum(n: int) -> int:
    return max(0, (n - 3) // 2)


def f_half(n: int) -> int:
    return max(0, (n - 1) // 2)


def f_bulyan(n: int) -> int:
    return max(0, (n - 3) // 4)


@attrs.frozen
class KernelCase:
    name: str
    call: Callable[..., torch.Tensor]  # (updates, weights, n_active, key) -> Tensor[d]
    f_of: Callable[[int], int] | None = None  # Byzantine rows tolerated for n_active rows
    min_n: int = 1  # fewest active rows the case accepts
    # exactly inside the coordinate-wise hull of the honest rows with <= f huge outliers
    hull: bool = False
    # n identical rows give that row (centered clipping: only when clip_norm covers the distance)
    identical: bool = True
    # out(U + t) = out(U) + t (centered clipping: only with the centre moved too)
    translation: bool = True
    # iterative in floating point: permuting rows changes rounding, compare loosely
    loose: bool = False


CASES = [
    KernelCase("mean", lambda u, w, n, k: mean(u, w, key=k)),
    KernelCase("median", lambda u, w, n, k: median(u, w, key=k), f_of=f_half, hull=True),
    KernelCase(
        "trimmed_mean",
        lambda u, w, n, k: trimmed_mean(u, w, f=f_half(n), key=k),
        f_of=f_half,
        hull=True,
    ),
    KernelCase(
        "meamed", lambda u, w, n, k: meamed(u, w, f=f_half(n), key=k), f_of=f_half, hull=True
    ),
    KernelCase(
        "krum", lambda u, w, n, k: krum(u, w, f=f_krum(n), key=k), f_of=f_krum, min_n=3, hull=True
    ),
    KernelCase(
        "multi_krum",
        lambda u, w, n, k: multi_krum(u, w, f=f_krum(n), m=n - f_krum(n), key=k),
        f_of=f_krum,
        min_n=3,
        hull=True,
    ),
    KernelCase(
        "bulyan",
        lambda u, w, n, k: bulyan(u, w, f=f_bulyan(n), key=k),
        f_of=f_bulyan,
        min_n=3,
        hull=True,
    ),
    KernelCase(
        "geometric_median",
        lambda u, w, n, k: geometric_median(u, w, tol=1e-12, key=k),
        loose=True,
    ),
    KernelCase(
        "centered_clipping",
        lambda u, w, n, k: centered_clipping(u, w, clip_norm=5.0, iters=3, key=k),
        identical=False,
        translation=False,
    ),
]
BY_NAME = {c.name: c for c in CASES}


def outlier_rows(rng: np.random.Generator, count: int, d: int, magnitude: float, colluding: bool):
    """``count`` rows of huge finite values (random signs), all equal when ``colluding``."""
    if colluding:
        row = magnitude * rng.choice([-1.0, 1.0], size=d) * rng.uniform(1.0, 2.0, size=d)
        return np.tile(row, (count, 1))
    return (
        magnitude
        * rng.choice([-1.0, 1.0], size=(count, d))
        * rng.uniform(1.0, 2.0, size=(count, d))
    )
