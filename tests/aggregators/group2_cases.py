"""The group-2 aggregation kernels as uniform test cases: ``call(U, w, f, key) -> Tensor[d]``.

Each case fixes the hyper-parameters the property tests use and states which properties hold
exactly for it (``KernelCase`` fields). Imported by the ``test_group2_*`` files.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
import torch

import fedkit
from fedkit.aggregators import (
    caf,
    clipped_clustering,
    dnc,
    fltrust,
    mda,
    monna,
    sign_guard,
    smea,
)


@attrs.frozen
class KernelCase:
    name: str
    call: Callable[..., torch.Tensor]  # (updates, weights, f, key) -> Tensor[d]
    keyed: bool = False
    # "hull": inside the coordinate-wise hull of the honest rows when <= f rows are outliers;
    # "hull0": inside the hull of the honest rows and the origin (rows are clipped);
    # "norm": norm at most the largest honest norm (documented bound); None: own file
    robustness: str | None = "hull"
    # how many huge outliers the robustness property covers (None: up to f)
    max_outliers: int | None = None
    # the output does not depend on row order (for keyed kernels: with the same key)
    permutation_invariant: bool = True


def _fltrust_mean_reference(updates, weights, f, key):
    # The reference is the weighted mean of the active rows (a stand-in for the server's
    # root-data update), appended as the last row.
    try:
        w = torch.ones(updates.shape[0], dtype=updates.dtype) if weights is None else weights
        active = torch.nonzero(w > 0).flatten()
        ref = (w[active, None] * updates[active]).sum(0) / w[active].sum()
    except (IndexError, RuntimeError):  # malformed input: let the kernel say what is wrong
        ref = torch.zeros(updates.shape[-1])
    return fltrust(updates, weights, reference=ref, key=key)


CASES = [
    KernelCase("mda", lambda u, w, f, k: mda(u, w, f=f, key=k)),
    # pivot = the first active row: a row index, so row order matters (mapped pivot: its file)
    KernelCase(
        "monna",
        lambda u, w, f, k: monna(u, w, f=f, pivot=_first_active(w), key=k),
        permutation_invariant=False,
    ),
    KernelCase("caf", lambda u, w, f, k: caf(u, w, f=f, key=k)),
    KernelCase("smea", lambda u, w, f, k: smea(u, w, f=f, key=k)),
    # DnC centres at the plain mean: two outliers of different sizes can pull it so far that
    # honest rows score above the smaller outlier (no hull guarantee beyond one outlier).
    KernelCase(
        "dnc",
        lambda u, w, f, k: dnc(u, w, f=f, iters=3, sub_dim=3, key=k),
        keyed=True,
        max_outliers=1,
    ),
    KernelCase(
        "clipped_clustering",
        lambda u, w, f, k: clipped_clustering(u, w, key=k),
        robustness="norm",
    ),
    KernelCase(
        "sign_guard",
        lambda u, w, f, k: sign_guard(u, w, coord_frac=0.5, key=k),
        keyed=True,
        robustness="hull0",
        permutation_invariant=False,  # ties between equally populated modes go to a row
    ),
    KernelCase(
        "fltrust", _fltrust_mean_reference, robustness=None
    ),  # needs an honest reference: own file
]
BY_NAME = {c.name: c for c in CASES}


def _first_active(weights) -> int:
    active = [] if weights is None else torch.nonzero(torch.as_tensor(weights) > 0)
    return int(active[0, 0]) if len(active) else 0


def largest_f(m: int) -> int:
    """The largest f the rules accept for ``m`` active rows (``2f < m``), at least 0."""
    return max(0, (m - 1) // 2)


def rows(seed: int, n: int, d: int, scale: float = 10.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.normal(0.0, scale, size=(n, d)), dtype=torch.float64)


def key_for(seed: int) -> fedkit.Key:
    return fedkit.key(seed)
