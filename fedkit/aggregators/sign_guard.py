"""SignGuard: norm filter, sign-statistics clustering, clipped mean of the majority."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import number_in, optional
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import (
    CHUNK_ELEMENTS,
    active_index,
    check_updates,
    gather_chunk,
    row_sq_norms,
    sample_coordinates,
    weighted_rows,
)

MEAN_SHIFT_STEPS = 100
SAME_POINT = 1e-12


def sign_guard(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    lower: float = 0.1,
    upper: float = 3.0,
    coord_frac: float = 0.1,
    bandwidth: float | None = None,
    key: Key | None = None,
) -> torch.Tensor:
    """Keep the active rows that pass a norm filter AND fall in the largest sign cluster;
    return the weighted mean of the kept rows clipped to the median norm.

    1. Norm filter: ``lower · M <= ‖x_i‖ <= upper · M`` with ``M`` the median active norm.
    2. Sign features: fractions of positive, zero and negative entries of each row on
       ``max(1, int(coord_frac · d))`` coordinates drawn with ``key`` (all coordinates and
       no key needed when that is ``d``).
    3. Clustering: flat-kernel mean shift in feature space, every row a seed, run to
       convergence (at most 100 steps, each one ``m × m`` tensor op); rows whose modes lie
       within ``bandwidth`` of the mode reached by the most rows form the kept cluster.
       ``bandwidth=None`` estimates it as the paper's code does (scikit-learn's
       ``estimate_bandwidth`` with quantile 0.5): the mean distance from each row's
       features to its ``⌊m/2⌋``-th nearest (itself included). Ties in cluster size go to
       the lowest row. This replaces scikit-learn's MeanShift (binned seeds, greedy merging
       of centres) with a deterministic rule of the same kind.
    4. Clipping: every kept row is scaled to norm at most ``M``; the mean is weighted.

    If no row passes both filters the result is the zero vector (no update). Same key,
    same output. Rows of weight 0 are absent (they may hold NaN/Inf).

    Extra memory: one coordinate chunk of the sampled block (``_common.CHUNK_ELEMENTS``),
    ``O(m²)`` numbers, the sampled coordinate index (``int64``) and the ``[d]`` output.

    Xu, Huang, Wu, Yang, Zhang 2022, "SignGuard: Byzantine-robust Federated Learning
    through Collaborative Malicious Gradient Filtering" (ICDCS).
    """
    updates, w = check_updates(updates, weights)
    if not 0.0 <= lower <= upper:
        raise ValueError(f"sign_guard: need 0 <= lower <= upper, got {lower!r}, {upper!r}")
    if not 0.0 < coord_frac <= 1.0:
        raise ValueError(f"sign_guard: coord_frac must lie in (0, 1], got {coord_frac!r}")
    if bandwidth is not None and not bandwidth >= 0.0:
        raise ValueError(f"sign_guard: bandwidth must be >= 0 or None, got {bandwidth!r}")
    index = active_index(w)
    rows = None if index.numel() == updates.shape[0] else index  # no gather copy
    d = updates.shape[1]
    norms = row_sq_norms(updates, rows).cpu().sqrt()
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("sign_guard: active rows hold NaN/Inf (or values too large)")
    median = float(torch.quantile(norms, 0.5))
    by_norm = (norms >= lower * median) & (norms <= upper * median)
    coords = sample_coordinates(key, d, max(1, int(coord_frac * d)), "sign_guard")
    features = _sign_features(updates, index, rows, coords)
    by_sign = _largest_mode(features, bandwidth)
    kept = by_norm & by_sign
    if not bool(kept.any()):
        return torch.zeros(d, dtype=updates.dtype, device=updates.device)
    full = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    scale = torch.where(norms > median, median / norms, torch.ones_like(norms))
    mass = w.index_select(0, index).cpu().to(torch.float64) * kept
    full[index] = (mass * scale / mass.sum()).to(full.device)
    return weighted_rows(updates, full, finite=rows is None)


def _sign_features(
    updates: torch.Tensor,
    index: torch.Tensor,
    rows: torch.Tensor | None,
    coords: torch.Tensor | None,
) -> torch.Tensor:
    """Fractions of positive, zero and negative entries (float64 ``[m, 3]``) of the rows
    ``index`` (``rows``: the same, or None when they are all rows) on ``coords`` (all
    coordinates if None), read chunk by chunk."""
    m = index.numel()
    total = updates.shape[1] if coords is None else coords.numel()
    width = max(1, CHUNK_ELEMENTS // max(1, m))
    counts = torch.zeros(m, 3, dtype=torch.float64, device=updates.device)
    for start in range(0, total, width):
        if coords is None:
            block = gather_chunk(updates, rows, slice(start, start + width))
        else:
            cols = coords[start : start + width].to(updates.device)
            block = updates[:, cols] if rows is None else updates[index[:, None], cols[None, :]]
        counts[:, 0] += (block > 0).sum(dim=1)
        counts[:, 1] += (block == 0).sum(dim=1)
        counts[:, 2] += (block < 0).sum(dim=1)
    return (counts / total).cpu()


def _largest_mode(features: torch.Tensor, bandwidth: float | None) -> torch.Tensor:
    """Mask of the rows in the most populated mean-shift mode (flat kernel)."""
    m = features.shape[0]
    gaps = _distances(features, features)
    if bandwidth is None:
        bandwidth = float(torch.kthvalue(gaps, max(1, m // 2), dim=1).values.mean())
    # Features are multiples of 1 / (sampled coordinates): gaps below SAME_POINT are
    # rounding (e.g. a mode that is the mean of equal features), not distance.
    bandwidth += SAME_POINT
    modes = features
    for _ in range(MEAN_SHIFT_STEPS):
        near = (_distances(modes, features) <= bandwidth).to(features.dtype)
        moved = near @ features / near.sum(dim=1, keepdim=True)
        done = torch.equal(moved, modes)
        modes = moved
        if done:
            break
    together = _distances(modes, modes) <= bandwidth
    best = int(torch.argmax(together.sum(dim=1)))  # first row among the most populated
    return together[best]


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distances (equal points are at distance 0, not rounding noise)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


@attrs.frozen
class SignGuard(KernelReducer):
    """Reducer wrapping :func:`sign_guard` (fields = its hyper-parameters)."""

    kernel = staticmethod(sign_guard)
    lower: float = attrs.field(default=0.1, validator=number_in(0.0))
    upper: float = attrs.field(default=3.0, validator=number_in(0.0))
    coord_frac: float = attrs.field(default=0.1, validator=number_in(0.0, 1.0, closed="right"))
    bandwidth: float | None = attrs.field(default=None, validator=optional(number_in(0.0)))

    def __attrs_post_init__(self) -> None:
        if self.lower > self.upper:
            raise ValueError(
                f"SignGuard needs lower <= upper, got lower={self.lower!r}, upper={self.upper!r}"
            )
