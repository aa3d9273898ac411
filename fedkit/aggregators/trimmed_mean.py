"""Coordinate-wise trimmed mean."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._select import map_chunks, trimmed_sum_
from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import active_index, check_f_bound, check_updates


def trimmed_mean(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> torch.Tensor:
    """Coordinate-wise trimmed mean: in each coordinate drop the ``f`` largest and the ``f``
    smallest values of the active rows and average the ``n_active − 2f`` others
    (``Tensor[d]``, the updates' dtype). Needs ``n_active >= 2f + 1``.

    Weights only decide which rows are present (weight 0 = absent); the kept values are
    averaged with equal weight, as in the paper and Flower's FedTrimmedAvg (a weighted
    average would let one client's claimed example count outweigh the trimming). Flower
    takes a proportion instead of ``f``: ``proportiontocut = p`` is ``f = int(p · n)``.
    ``key`` is unused.

    Peak extra memory: per worker thread, one transposed chunk of ``SELECT_ELEMENTS`` values
    (4 MiB in float32), partitioned in place; nothing proportional to ``d`` besides the
    output.

    Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates (ICML).
    """
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    m = index.numel()
    check_f_bound(f, m, factor=2, extra=1, who="trimmed_mean")
    rows = None if m == updates.shape[0] else index
    return map_chunks(updates, rows, lambda block: trimmed_sum_(block, f) / (m - 2 * f))


@attrs.frozen
class TrimmedMean(KernelReducer):
    """Component for :func:`trimmed_mean`."""

    kernel = staticmethod(trimmed_mean)
    f: int = attrs.field(validator=int_at_least(0))
