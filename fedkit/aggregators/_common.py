"""Shared helpers for aggregation kernels: input checks, coordinate chunks, distances.

Memory: kernels never copy the whole ``[n, d]`` input. Work along the coordinates happens
in chunks of about ``CHUNK_ELEMENTS`` elements (``n * chunk_width``), so the extra memory a
kernel needs is a small multiple of one chunk plus its ``[d]`` output, whatever ``d`` is.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fedkit.core.components import as_weights

CHUNK_ELEMENTS = 1 << 22  # 4 Mi elements per chunk: 16 MiB in float32


def check_updates(updates: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``updates: Tensor[n, d]`` (floating) and return ``(updates, weights)`` with
    weights as a float tensor ``[n]`` (ones when None). At least one weight must be positive."""
    if not isinstance(updates, torch.Tensor):
        raise TypeError(f"updates must be a torch.Tensor, got {type(updates).__name__}")
    if updates.ndim != 2:
        raise ValueError(f"updates must have shape [n, d], got {tuple(updates.shape)}")
    if not torch.is_floating_point(updates):
        raise TypeError(f"updates must be floating point, got {updates.dtype}")
    n = updates.shape[0]
    if n == 0:
        raise ValueError("updates has no rows (n = 0)")
    w = as_weights(weights, n, updates)
    if not bool((w > 0).any()):
        raise ValueError("every weight is zero: no client to aggregate")
    return updates, w


def active_index(weights: torch.Tensor) -> torch.Tensor:
    """Indices of the rows with positive weight (the rows that exist for a kernel)."""
    return torch.nonzero(weights > 0, as_tuple=False).flatten()


def chunk_width(n: int, d: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Number of coordinates per chunk so that ``n * width`` is about ``elements``."""
    return max(1, min(d, elements // max(n, 1)))


def coordinate_chunks(n: int, d: int, elements: int = CHUNK_ELEMENTS) -> Iterator[slice]:
    """Slices covering ``range(d)`` in chunks of :func:`chunk_width` coordinates."""
    width = chunk_width(n, d, elements)
    for start in range(0, d, width):
        yield slice(start, min(d, start + width))


def gather_chunk(updates: torch.Tensor, index: torch.Tensor | None, cols: slice) -> torch.Tensor:
    """``updates[index, cols]`` (a copy of one chunk only); all rows when ``index`` is None."""
    block = updates[:, cols]
    return block if index is None else block.index_select(0, index)


def gram(updates: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix ``X Xᵀ`` (float64, ``[m, m]``) of the rows ``index`` after subtracting
    their mean (distances are translation invariant; centering limits cancellation)."""
    m = updates.shape[0] if index is None else index.numel()
    acc = torch.zeros(m, m, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(m, updates.shape[1]):
        block = gather_chunk(updates, index, cols)
        block = block - block.mean(dim=0, keepdim=True)
        if block.dtype != torch.float64:
            block = block.to(torch.float32)
        acc += (block @ block.T).to(torch.float64)
    return acc


def pairwise_sq_distances(updates: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``[m, m]`` (float64) between the rows ``index`` of
    ``updates``, from one chunked Gram matrix (no Python loop over pairs)."""
    g = gram(updates, index)
    sq = torch.diagonal(g)
    dist = sq[:, None] + sq[None, :] - 2.0 * g
    dist.clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist


def sq_distances_to(updates: torch.Tensor, point: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Squared distances (float64, ``[m]``) from rows ``index`` of ``updates`` to ``point``."""
    m = updates.shape[0] if index is None else index.numel()
    acc = torch.zeros(m, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(m, updates.shape[1]):
        diff = gather_chunk(updates, index, cols) - point[cols]
        acc += diff.pow(2).sum(dim=1, dtype=torch.float64)
    return acc


def weighted_rows(updates: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``Σ_i coeffs[i] · updates[i]`` as ``Tensor[d]`` in the updates' dtype; rows with
    coefficient 0 are skipped (so an Inf/NaN in an excluded row never leaks in)."""
    index = torch.nonzero(coeffs != 0, as_tuple=False).flatten()
    c = coeffs.index_select(0, index).to(updates.dtype)
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    for cols in coordinate_chunks(index.numel(), updates.shape[1]):
        out[cols] = c @ gather_chunk(updates, index, cols)
    return out
