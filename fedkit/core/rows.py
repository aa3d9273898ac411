"""Row helpers shared by the kernels of fedkit and its suites (aggregators, filters, privacy
mechanisms, attacks): input checks, coordinate chunks, Gram matrices and distances, row norms
and rescaling of ``[n, d]`` update tensors.

Memory: kernels never copy the whole ``[n, d]`` input. Work along the coordinates happens
in chunks of about ``CHUNK_ELEMENTS`` elements (``n * chunk_width``), so the extra memory a
kernel needs is a small multiple of one chunk plus its ``[d]`` output, whatever ``d`` is.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fedkit.core.checks import check_rows
from fedkit.core.components import as_weights
from fedkit.core.keys import Key, generator

CHUNK_ELEMENTS = 1 << 22  # 4 Mi elements per chunk: 16 MiB in float32
_GRAM_DTYPES = (torch.float32, torch.float64)


def check_updates(
    updates: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``updates: Tensor[n, d]`` (floating) and return ``(updates, weights)`` with
    weights as a float tensor ``[n]`` (ones when None). At least one weight must be positive
    (:func:`fedkit.core.checks.check_rows`)."""
    return check_rows(updates, weights, "", require_active=True)


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
    if index is None:
        return updates[:, cols]
    # Advanced indexing, not ``updates[:, cols].index_select(0, index)``: on a strided
    # column slice index_select takes a slow path (about 20x slower on CPU).
    return updates[index, cols]


def gram(
    updates: torch.Tensor,
    index: torch.Tensor | None = None,
    *,
    center: str = "mean",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gram matrix ``Y Yᵀ`` (float64, ``[m, m]``) of the rows ``index`` after translating them.

    ``center`` picks the translation (any one gives the same distances; it only limits
    cancellation in float32):

    * ``"mean"``: subtract the rows' mean;
    * ``"row"``: in each coordinate chunk subtract the row whose chunk norm is the median
      one — robust: a few huge outlier rows cannot pull the centre away from the others,
      so distances between ordinary rows keep their precision (also cheaper than the mean);
    * ``"none"``: no translation (inner products of the raw rows, e.g. for cosines).

    Each chunk's product runs in ``dtype`` (default: float64 for float64 rows, else float32;
    a chunk whose float32 product overflows is redone in float64); sums are float64.
    """
    if center not in ("mean", "row", "none"):
        raise ValueError(f"center must be 'mean', 'row' or 'none', got {center!r}")
    m = updates.shape[0] if index is None else index.numel()
    acc = torch.zeros(m, m, dtype=torch.float64, device=updates.device)
    buffer = None  # the centred chunk, reused (a fresh 16 MiB block per chunk costs page faults)
    for cols in coordinate_chunks(m, updates.shape[1]):
        block = gather_chunk(updates, index, cols)
        private = index is not None  # a gathered chunk is a copy: centre it in place
        want = dtype or (block.dtype if block.dtype in _GRAM_DTYPES else torch.float32)
        if block.dtype != want:
            block, private = block.to(want), True
        if center != "none":
            if center == "mean":
                shift = block.mean(dim=0, keepdim=True)
            else:
                norms = torch.linalg.vector_norm(block, dim=1)
                pivot = torch.kthvalue(norms.cpu(), (m + 1) // 2).indices
                shift = block[int(pivot)].clone()
            if private:
                block = block.sub_(shift)
            else:
                if buffer is None or buffer.dtype != block.dtype:
                    buffer = torch.empty_like(block, memory_format=torch.contiguous_format)
                block = torch.sub(block, shift, out=buffer[:, : block.shape[1]])
        prod = block @ block.T
        if block.dtype != torch.float64 and not bool(torch.isfinite(prod).all()):
            block = block.to(torch.float64)  # float32 overflow (huge rows): redo in float64
            prod = block @ block.T
        acc += prod.to(torch.float64)
    return acc


def pairwise_sq_distances(
    updates: torch.Tensor, index: torch.Tensor | None = None, *, center: str = "mean"
) -> torch.Tensor:
    """Squared Euclidean distances ``[m, m]`` (float64) between the rows ``index`` of
    ``updates``, from one chunked Gram matrix (no Python loop over pairs); ``center`` as in
    :func:`gram`."""
    return gram_sq_distances(gram(updates, index, center=center))


def gram_sq_distances(g: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[m, m]`` from a Gram matrix ``g`` (``|a|² + |b|² −
    2a·b``, clamped at 0, zero diagonal)."""
    sq = torch.diagonal(g)
    dist = sq[:, None] + sq[None, :] - 2.0 * g
    dist.clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist


def sq_distances_to(
    updates: torch.Tensor, point: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared distances (float64, ``[m]``) from rows ``index`` of ``updates`` to ``point``."""
    m = updates.shape[0] if index is None else index.numel()
    acc = torch.zeros(m, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(m, updates.shape[1]):
        block = gather_chunk(updates, index, cols)
        # squares summed in the rows' dtype (a float64 sum would first copy the chunk to
        # float64); the differences are only that precise anyway
        sq = torch.sub(block, point[cols]).square_().sum(dim=1).to(torch.float64)
        if block.dtype != torch.float64 and not bool(torch.isfinite(sq).all()):
            # float32 overflow (huge rows): redo this chunk in float64
            sq = (block.to(torch.float64) - point[cols].to(torch.float64)).pow(2).sum(dim=1)
        acc += sq
    return acc


def weighted_rows(
    updates: torch.Tensor, coeffs: torch.Tensor, *, finite: bool = False
) -> torch.Tensor:
    """``Σ_i coeffs[i] · updates[i]`` as ``Tensor[d]`` in the updates' dtype; rows with
    coefficient 0 are skipped (so an Inf/NaN in an excluded row never leaks in).

    ``finite=True`` promises that every row is finite (the caller checked): then all rows
    are multiplied, zeros included, which avoids copying the nonzero rows out chunk by chunk.
    """
    if finite:
        index = torch.arange(updates.shape[0], device=coeffs.device)
    else:
        index = torch.nonzero(coeffs != 0, as_tuple=False).flatten()
    c = coeffs.index_select(0, index).to(updates.dtype)
    rows = None if index.numel() == updates.shape[0] else index  # all rows: no gather copy
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    for cols in coordinate_chunks(index.numel(), updates.shape[1]):
        torch.mv(gather_chunk(updates, rows, cols).T, c, out=out[cols])
    return out


def row_sq_norms(updates: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean norms (float64, ``[m]``) of the rows ``index`` of ``updates``."""
    m = updates.shape[0] if index is None else index.numel()
    acc = torch.zeros(m, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(m, updates.shape[1]):
        block = gather_chunk(updates, index, cols)
        acc += torch.linalg.vector_norm(block, dim=1).to(torch.float64).square()
    return acc


def check_f(f: int, m: int, who: str) -> None:
    """Raise unless ``f`` is an int with ``0 <= f`` and ``2f < m`` (``m`` active rows)."""
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise ValueError(f"{who}: f must be a non-negative int, got {f!r}")
    if 2 * f >= m:
        raise ValueError(
            f"{who}: needs more than 2f active rows (positive weight): got {m} for f={f}"
        )


def sample_coordinates(key: Key | None, d: int, size: int, who: str) -> torch.Tensor | None:
    """``size`` distinct coordinates of ``range(d)`` drawn uniformly with ``key``, sorted
    (int64); None when ``size >= d`` (every coordinate, no key needed).

    For ``size <= d / 8``: uniform draws with replacement until ``size`` distinct values
    are seen, then ``size`` of those at random — uniform over subsets by symmetry, in
    ``O(size)`` time and memory where a permutation of ``range(d)`` costs ``O(d)``.
    """
    if size >= d:
        return None
    if key is None:
        raise ValueError(f"{who} samples {size} of {d} coordinates: it needs a key")
    gen = generator(key)
    if 8 * size > d:
        return torch.sort(torch.randperm(d, generator=gen)[:size]).values
    pool = torch.empty(0, dtype=torch.int64)
    while pool.numel() < size:
        more = torch.randint(0, d, (2 * (size - pool.numel()) + 16,), generator=gen)
        pool = torch.unique(torch.cat([pool, more]))
    pick = pool[torch.randperm(pool.numel(), generator=gen)[:size]]
    return torch.sort(pick).values


def check_f_bound(f: int, m: int, *, factor: int, extra: int, who: str) -> None:
    """Raise unless ``f`` is a non-negative int and the ``m`` active rows (positive weight)
    satisfy ``m >= factor * f + extra`` (the rule's bound, named in the message)."""
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise ValueError(f"{who}: f must be a non-negative int, got {f!r}")
    need = factor * f + extra
    if m < need:
        raise ValueError(
            f"{who} needs n_active >= {factor}f + {extra} = {need} rows with positive weight "
            f"for f={f}, got n_active={m}"
        )


def row_norms(updates: torch.Tensor) -> torch.Tensor:
    """L2 norm of every row (float64, ``[n]``), accumulated over coordinate chunks."""
    n, d = updates.shape
    acc = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(n, d):
        acc += torch.linalg.vector_norm(updates[:, cols], dim=1, dtype=torch.float64).square()
    return acc.sqrt()


def finite_rows(updates: torch.Tensor) -> torch.Tensor:
    """BoolTensor ``[n]``: True where every entry of the row is finite (no NaN, no Inf)."""
    n, d = updates.shape
    ok = torch.ones(n, dtype=torch.bool, device=updates.device)
    for cols in coordinate_chunks(n, d):
        ok &= torch.isfinite(updates[:, cols]).all(dim=1)
    return ok


def require_finite(norms: torch.Tensor, active: torch.Tensor, name: str) -> None:
    """Raise if an active row has a non-finite norm (it holds a NaN or an Inf)."""
    bad = active & ~torch.isfinite(norms)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise ValueError(
            f"{name}: rows {rows} contain NaN or Inf; put Sanitize() before {name} in the chain"
        )


def rescale(
    updates: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows multiplied by ``scale[n]`` (one new tensor; rows with scale 1 are copied exactly).
    When no row changes, the input tensor itself is returned (filters never write into it)."""
    w = as_weights(weights, updates.shape[0], updates).clone()
    if bool((scale == 1).all()):
        return updates, w
    return updates * scale.to(updates.dtype)[:, None], w
