"""Nearest Neighbour Mixing (NNM)."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import int_at_least
from fedkit.core.components import Transform
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    coordinate_chunks,
    gather_chunk,
    pairwise_sq_distances,
)
from fedkit.filters._common import check_f, check_rows


def nnm_mixing(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, f: int
) -> torch.Tensor:
    """The ``[m, m]`` mixing matrix (float64) over the ``m`` active rows: row ``i`` holds
    ``1/(m − f)`` at the ``m − f`` active rows nearest to row ``i`` (itself included)."""
    updates, w = check_rows(updates, weights, "nnm")
    index = active_index(w)
    m = index.numel()
    f = check_f(f, m, "nnm")
    rows = None if m == updates.shape[0] else index  # every row active: no gathered copies
    dist = pairwise_sq_distances(updates, rows, center="row")  # robust to huge outlier rows
    if not bool(torch.isfinite(dist).all()):
        raise ValueError("nnm: active rows contain NaN or Inf; put Sanitize() before NNM")
    dist.fill_diagonal_(-1.0)  # a row is always its own nearest neighbour, even among duplicates
    k = m - f
    neighbours = torch.topk(dist, k, dim=1, largest=False).indices
    mix = torch.zeros(m, m, dtype=torch.float64, device=updates.device)
    return mix.scatter_(1, neighbours, 1.0 / k)


def nnm(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each active row by the plain average of its ``m − f`` nearest active rows
    (Euclidean, itself included; ``m`` = number of active rows). Distances come from one
    Gram matrix; rows of weight 0 pass through unchanged; weights are unchanged.

    Allouah et al. 2023, Fixing by Mixing: A Recipe for Optimal Byzantine ML under
    Heterogeneity (AISTATS).
    """
    updates, w = check_rows(updates, weights, "nnm")
    mix = nnm_mixing(updates, w, f=f).to(updates.dtype)
    index = active_index(w)
    rows = None if index.numel() == updates.shape[0] else index
    out = updates.clone()
    for cols in coordinate_chunks(index.numel(), updates.shape[1]):
        out[:, cols].index_copy_(0, index, mix @ gather_chunk(updates, rows, cols))
    return out, w.clone()


@attrs.frozen
class NNM(Transform):
    """Component for :func:`nnm` (it never rejects a row, so its info is empty)."""

    f: int = attrs.field(validator=int_at_least(0))

    def __call__(self, updates, weights, state, key):
        return nnm(updates, weights, f=self.f, key=key), state, {}
