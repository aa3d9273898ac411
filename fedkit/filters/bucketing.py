"""Bucketing: average random groups of clients before a robust reducer."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._common import active_index, coordinate_chunks, gather_chunk
from fedkit.core.components import Transform, as_weights
from fedkit.core.keys import Key, permutation
from fedkit.filters._common import check_int, check_rows


def bucket_assignment(weights: torch.Tensor, *, s: int, key: Key) -> torch.Tensor:
    """Bucket of every row (int64, ``[n]``): the active rows in a random order (drawn from
    ``key``) are cut into consecutive buckets of ``s``; rows of weight 0 get -1."""
    s = check_int(s, "bucketing: s", 1)
    if key is None:
        raise ValueError("bucketing needs a key (it draws a random permutation)")
    index = active_index(weights)
    m = index.numel()
    if m == 0:
        raise ValueError("bucketing: every weight is zero, no row to put in a bucket")
    order = index.index_select(0, permutation(key, m, device=weights.device))
    bucket = torch.full(weights.shape, -1, dtype=torch.int64, device=weights.device)
    return bucket.index_copy_(0, order, torch.arange(m, device=weights.device) // s)


def bucket_means(
    updates: torch.Tensor, weights: torch.Tensor | None, bucket: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of each bucket in output row ``j`` (for bucket ``j``), with weight the
    bucket's total weight; output rows past the last bucket are zeros with weight 0."""
    updates, w = check_rows(updates, weights, "bucketing")
    n = updates.shape[0]
    if bucket.shape != (n,):
        raise ValueError(f"bucketing: bucket must have shape ({n},), got {tuple(bucket.shape)}")
    index = torch.nonzero(bucket >= 0).flatten()
    if index.numel() == 0:
        raise ValueError("bucketing: no row is assigned to a bucket")
    if not bool((w.index_select(0, index) > 0).all()):
        raise ValueError("bucketing: a row of weight 0 is assigned to a bucket")
    of = bucket.index_select(0, index)
    b = int(of.max()) + 1
    if b > n:
        raise ValueError(f"bucketing: bucket ids must be < n = {n}, got {b - 1}")
    totals = torch.zeros(n, dtype=w.dtype, device=w.device)
    totals.index_add_(0, of, w.index_select(0, index))
    coeffs = torch.zeros(b, index.numel(), dtype=torch.float64, device=updates.device)
    share = w.index_select(0, index).double() / totals.index_select(0, of).double()
    coeffs[of, torch.arange(index.numel(), device=updates.device)] = share
    coeffs = coeffs.to(updates.dtype)
    out = torch.zeros_like(updates)
    for cols in coordinate_chunks(index.numel(), updates.shape[1]):
        out[:b, cols] = coeffs @ gather_chunk(updates, index, cols)
    return out, totals


def bucketing(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    s: int,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the active rows with ``key``, cut them into ``⌈m/s⌉`` buckets of ``s`` (the
    last may be smaller) and replace them by the buckets' weighted means: output row ``j``
    is bucket ``j``'s mean with weight the bucket's total weight; the remaining rows are
    zeros of weight 0. The total weight and the weighted mean are preserved.

    Karimireddy, He and Jaggi 2022, Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing (ICLR).
    """
    _, w = check_rows(updates, weights, "bucketing")
    return bucket_means(updates, w, bucket_assignment(w, s=s, key=key))


@attrs.frozen
class Bucketing(Transform):
    """Component for :func:`bucketing`. Its info holds ``"bucket"`` (each input row's
    bucket, -1 for rows of weight 0) and ``"empty"`` (output rows holding no bucket); the
    emptied rows are not rejections."""

    s: int = attrs.field(validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)])

    def __call__(self, updates, weights, state, key):
        w = as_weights(weights, updates.shape[0], updates)
        bucket = bucket_assignment(w, s=self.s, key=key)
        out, totals = bucket_means(updates, w, bucket)
        empty = torch.arange(totals.numel(), device=totals.device) > int(bucket.max())
        return (out, totals), state, {"bucket": bucket, "empty": empty}
