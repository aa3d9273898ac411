"""Coordinate-wise (weighted) median."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._select import SELECT_ELEMENTS, map_chunks, median_, weighted_median_
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import active_index, check_updates


def median(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, key: Key | None = None
) -> torch.Tensor:
    """Coordinate-wise median of the active rows (``Tensor[d]``, the updates' dtype).

    With equal positive weights it is the ordinary median: the middle value, or the mean of
    the two middle values for an even count (as ``np.median`` and Flower's FedMedian). With
    unequal weights it is the weighted median, the midpoint of the lower and the upper
    weighted medians: in each coordinate, with ``W = Σ w_i`` over the active rows,
    ``lower = min{v : Σ_{x_i <= v} w_i >= W/2}`` and ``upper = min{v : Σ_{x_i <= v} w_i > W/2}``.
    Every point of ``[lower, upper]`` minimises ``Σ_i w_i |x_i − v|``; with equal weights the
    midpoint is the ordinary median. Weight sums are float64 (exact for integer counts).
    A row of weight 0 is absent. ``key`` is unused.

    Peak extra memory: per worker thread (at most 8), one transposed chunk of
    ``SELECT_ELEMENTS`` values (4 MiB in float32); with unequal weights a quarter chunk with
    its sort order and cumulative weights (about 2.5x a chunk). Nothing proportional to ``d``
    besides the output.

    Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates (ICML).
    """
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    active_w = w.index_select(0, index).to(torch.float64)
    rows = None if index.numel() == updates.shape[0] else index
    if bool((active_w == active_w[0]).all()):
        return map_chunks(updates, rows, median_)
    return map_chunks(
        updates,
        rows,
        lambda block: weighted_median_(block, active_w),
        elements=SELECT_ELEMENTS // 4,
    )


@attrs.frozen
class Median(KernelReducer):
    """Component for :func:`median` (FedMedian)."""

    kernel = staticmethod(median)
