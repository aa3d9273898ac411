"""Per-coordinate selection over coordinate chunks: medians, trimmed sums, means of the
values nearest a centre, weighted medians.

A chunk is taken transposed, ``[width, m]`` (one row per coordinate, the ``m`` client values
along the last, contiguous axis), so each selection runs over short contiguous rows. On CPU
(float32/float64) the chunk is a NumPy array: ``ndarray.sort``/``ndarray.partition`` are
many times faster than ``torch.sort``/``torch.kthvalue`` over many short rows (NumPy sorts a
short row with AVX-512 sorting networks where the CPU has them), and NumPy releases the
GIL, so chunks run on a small thread pool (``torch.get_num_threads()`` workers, at most
``MAX_WORKERS``). Rows of ``SORT_MIN`` to ``SORT_MAX`` values are sorted outright (one sort
costs about one partition there and yields every order statistic); others are partitioned
once per order statistic needed (:func:`order_`).
Elsewhere (GPU, half precision) the chunk is a torch tensor and a sort stands in for the
partition (a sorted row is partitioned at every position).

The row helpers are written once for both: ``xp`` is ``numpy`` or ``torch``, and only calls
that both spell the same way are used. Helpers ending in ``_`` reorder their ``block``
argument in place (it is always a private copy made by :func:`map_chunks`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from fedkit.core.rows import coordinate_chunks

SELECT_ELEMENTS = 1 << 20  # values per selection chunk (4 MiB in float32): stays in cache
# Rows of SORT_MIN..SORT_MAX values are sorted rather than partitioned: NumPy's sort of a
# short row (SIMD sorting networks where the CPU has them) costs about one partition, and a
# sorted row holds every order statistic at once (both middles of an even row, both cuts of
# a trimmed one). Below, one partition (an odd median) is cheaper; above, the m log m of a
# sort loses to partitioning (crossover near 2000 values on the AVX-512 dev box).
SORT_MIN, SORT_MAX = 8, 2048
MAX_WORKERS = 8  # chunks in flight at once on CPU (bounds the peak extra memory)
_NUMPY_DTYPES = (torch.float32, torch.float64)

Block = Any  # np.ndarray on CPU, torch.Tensor elsewhere


def _xp(block: Block):
    return np if isinstance(block, np.ndarray) else torch


def map_chunks(
    updates: torch.Tensor,
    index: torch.Tensor | None,
    fn: Callable[[Block], Block],
    *,
    elements: int = SELECT_ELEMENTS,
) -> torch.Tensor:
    """``out[cols] = fn(block)`` for every coordinate chunk, where ``block`` is a private
    transposed copy ``updates[index, cols]ᵀ`` (``[width, m]``; all rows when ``index`` is
    None) and ``fn`` returns ``[width]`` values. Returns ``out`` (``Tensor[d]``, the updates'
    dtype). Peak extra memory: ``workers`` chunks of ``elements`` values and what ``fn``
    allocates per chunk."""
    n, d = updates.shape
    m = n if index is None else index.numel()
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    chunks = list(coordinate_chunks(m, d, elements))
    if updates.device.type != "cpu" or updates.dtype not in _NUMPY_DTYPES:
        for cols in chunks:
            block = updates[:, cols] if index is None else updates[:, cols].index_select(0, index)
            out[cols] = fn(block.T.clone(memory_format=torch.contiguous_format))
        return out
    source = updates.detach().numpy()
    rows = None if index is None else index.numpy()
    target = out.numpy()

    def run(cols: slice) -> None:
        block = source[:, cols] if rows is None else source[rows, cols]
        target[cols] = fn(np.array(block.T, order="C"))  # always a copy: fn reorders it

    workers = min(len(chunks), MAX_WORKERS, max(1, torch.get_num_threads()))
    if workers == 1:
        for cols in chunks:
            run(cols)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, chunks))
    return out


def partition_(block: Block, kth: int) -> Block:
    """Reorder each row of ``block`` (``[w, m]``, in place) so that ``block[:, kth]`` is the
    row's ``kth`` smallest value (0-based), no larger value before it and no smaller one
    after (NaN sorts last). Returns ``block``."""
    if isinstance(block, np.ndarray):
        block.partition(kth, axis=1)
    else:
        block.copy_(torch.sort(block, dim=1).values)
    return block


def sorts_rows(block: Block) -> bool:
    """Whether :func:`order_` sorts ``block``'s rows (rather than partitioning them)."""
    return not isinstance(block, np.ndarray) or SORT_MIN <= block.shape[1] <= SORT_MAX


def order_(block: Block, *kth: int) -> Block:
    """Reorder each row of ``block`` (in place) so that every position in ``kth`` holds its
    order statistic (as :func:`partition_` for each, NaN last): by a full sort when
    :func:`sorts_rows` (then every position holds its order statistic), else by one
    partition per position, the later ones on the part left of the earlier (``kth``
    descending). Returns ``block``."""
    if sorts_rows(block):
        if isinstance(block, np.ndarray):
            block.sort(axis=1)
        else:
            block.copy_(torch.sort(block, dim=1).values)
        return block
    stop = block.shape[1]
    for k in sorted(set(kth), reverse=True):
        block[:, :stop].partition(k, axis=1)
        stop = k
    return block


def row_sums(block: Block) -> Block:
    """Sum of each row (``[w, m]`` → ``[w]``); on NumPy through ``einsum``, which sums a
    short strided row several times faster than ``ndarray.sum``."""
    if isinstance(block, np.ndarray):
        return np.einsum("ij->i", block)
    return block.sum(dim=1)


def median_(block: Block) -> Block:
    """Median of each row (``[w, m]`` → ``[w]``; ``block`` reordered in place): the middle
    value, or the mean of the two middle values for even ``m`` (as ``np.median``)."""
    m = block.shape[1]
    half = m // 2
    if m % 2:
        order_(block, half)
        upper = block[:, half]
        return upper.copy() if isinstance(block, np.ndarray) else upper.clone()
    order_(block, half, half - 1)
    return (block[:, half - 1] + block[:, half]) / 2


def trimmed_sum_(block: Block, f: int) -> Block:
    """Sum of each row without its ``f`` largest and ``f`` smallest values (``[w, m]`` →
    ``[w]``; ``block`` reordered in place; needs ``m > 2f``)."""
    m = block.shape[1]
    if f > 0:
        order_(block, m - f, f)  # the f largest now sit at the end, the f smallest at the start
    return row_sums(block[:, f : m - f])


def mean_nearest_(block: Block, center: Block, k: int) -> Block:
    """Per row, the mean of the ``k`` values of ``block`` (``[w, m]``) nearest ``center``
    (``[w]``). Values tied at the ``k``-th distance share the remaining places: they enter
    through their mean, so the result does not depend on the order of the values.
    Needs ``1 <= k <= m``; ``block`` is not reordered."""
    xp = _xp(block)
    if k == block.shape[1]:
        return block.sum(axis=1) / k
    dist = xp.abs(block - center[:, None])
    radius = partition_(dist.copy() if xp is np else dist.clone(), k - 1)[:, k - 1 : k]
    inside = dist < radius
    on_edge = dist == radius
    n_inside = inside.sum(axis=1)
    sum_inside = xp.where(inside, block, 0).sum(axis=1)
    mean_edge = xp.where(on_edge, block, 0).sum(axis=1) / on_edge.sum(axis=1)
    return (sum_inside + (k - n_inside) * mean_edge) / k


def weighted_median_(block: Block, weights: Block) -> Block:
    """Weighted median of each row (``[w, m]`` → ``[w]``; see
    :func:`fedkit.aggregators.median.median`) with positive float64 ``weights`` (``[m]``,
    same kind as ``block``): the midpoint of the first sorted value whose cumulative weight
    reaches half the total and the first whose cumulative weight exceeds it."""
    xp = _xp(block)
    m = block.shape[1]
    if xp is np:
        weights = np.asarray(weights)
        order = block.argsort(axis=1)
        values = np.take_along_axis(block, order, axis=1)
        cum = np.cumsum(weights[order], axis=1)
    else:
        values, order = torch.sort(block, dim=1)
        cum = torch.cumsum(weights.to(block.device)[order], dim=1)
    total = cum[:, -1:]
    lower = (2 * cum < total).sum(axis=1).clip(max=m - 1)
    upper = (2 * cum <= total).sum(axis=1).clip(max=m - 1)
    rows = np.arange(len(block)) if xp is np else torch.arange(len(block), device=block.device)
    return (values[rows, lower] + values[rows, upper]) / 2
