"""Minimum-Diameter Averaging: the mean of the ``n - f`` rows with the smallest diameter."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._subsets import (
    argmin_subset_weights,
    batch_size,
    count_subsets,
    removal_masks,
)
from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_f,
    check_updates,
    pairwise_sq_distances,
    weighted_rows,
)

DEFAULT_MAX_SUBSETS = 1 << 21


def mda(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    max_subsets: int = DEFAULT_MAX_SUBSETS,
    key: Key | None = None,
) -> torch.Tensor:
    """Weighted mean of the ``m - f`` active rows whose diameter (largest pairwise distance)
    is the smallest, found EXACTLY over all ``C(m, f)`` subsets (``m`` = active rows). The
    search is geometric (weights cannot buy a row into the subset); weights enter the mean.

    Every subset is scored from one distance matrix: its diameter is the first pair, in a
    list of ``O(m f)`` candidate pairs sorted by distance, whose rows are both kept (see
    ``_candidate_pairs``), so a subset costs ``O(m (f + 1))`` tensor work, in batches. Subsets tied exactly at the smallest diameter
    are averaged: ties are common (the diameter is one pair's distance), averaging keeps the
    result independent of row order and, by convexity, within MDA's error bound (ByzFL
    keeps the first tied subset in lexicographic order instead).
    Raises ``ValueError`` when ``C(m, f) > max_subsets`` or ``2f >= m``. Rows of weight 0
    are absent (they may hold NaN/Inf); ``key`` is unused.

    Extra memory: the ``[m, m]`` distances, one coordinate chunk (``_common``), batches of
    about 4 Mi booleans, and the ``[d]`` output; the input is never copied whole.

    El Mhamdi, Guerraoui, Rouault 2020, "Fast and Robust Distributed Learning in High
    Dimension" (SRDS).
    """
    del key
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    m = index.numel()
    rows = None if m == updates.shape[0] else index  # all active: no gather copy
    check_f(f, m, "mda")
    total = count_subsets(m, f, max_subsets, "mda")
    w_active = w.index_select(0, index)
    if f == 0:
        coeffs = w_active.to(torch.float64) / w_active.sum()
    else:
        dist = pairwise_sq_distances(updates, rows, center="row").cpu()
        dist = torch.maximum(dist, dist.T)  # exactly symmetric, so exact ties stay ties
        if not bool(torch.isfinite(dist).all()):
            raise ValueError("mda: active rows hold NaN/Inf (or values too large to square)")
        pair_a, pair_b, pair_dist = _candidate_pairs(dist, f)
        batch = min(total, batch_size(m, 3 * pair_a.numel()))

        # incidence[r, p] = 1 when row r is an end of pair p: removed @ incidence counts the
        # removed ends of every pair in one matrix product.
        incidence = torch.zeros(m, pair_a.numel())
        incidence[pair_a, torch.arange(pair_a.numel())] = 1.0
        incidence[pair_b, torch.arange(pair_b.numel())] = 1.0

        def scored():
            for removed in removal_masks(m, f, batch):
                intact = (removed.to(torch.float32) @ incidence) == 0
                # pairs are sorted by distance: the first with both rows kept is the diameter
                yield pair_dist[intact.to(torch.uint8).argmax(dim=1)], removed

        coeffs = argmin_subset_weights(scored(), w_active.cpu())
    full = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    full[index] = coeffs.to(full.device)
    return weighted_rows(updates, full, finite=rows is None and f > 0)  # f > 0: rows checked


def _candidate_pairs(dist: torch.Tensor, f: int) -> tuple[torch.Tensor, ...]:
    """The pairs that can be a diameter once ``f`` rows are removed, farthest first.

    The farthest kept row from a kept row ``i`` is among its ``f + 1`` farthest rows (at
    most ``f`` of them are removed), so the diameter of every subset is one of the pairs
    ``(i, j)`` with ``j`` among the ``f + 1`` farthest from ``i``: ``O(m f)`` pairs.
    """
    m = dist.shape[0]
    far = torch.argsort(dist, dim=1, descending=True)[:, : f + 1]
    near = torch.arange(m)[:, None].expand_as(far)
    lo, hi = torch.minimum(near, far).flatten(), torch.maximum(near, far).flatten()
    key = torch.unique(lo[lo != hi] * m + hi[lo != hi])
    a, b = key // m, key % m
    d = dist[a, b]
    order = torch.argsort(d, descending=True, stable=True)
    return a[order], b[order], d[order]


@attrs.frozen
class MDA(KernelReducer):
    """Reducer wrapping :func:`mda` (fields = its hyper-parameters)."""

    kernel = staticmethod(mda)
    f: int = attrs.field(default=1, validator=int_at_least(0))
    max_subsets: int = attrs.field(default=DEFAULT_MAX_SUBSETS, validator=int_at_least(1))
