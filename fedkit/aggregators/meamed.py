"""Mean around the median (MeaMed)."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._select import map_chunks, mean_nearest_, median_
from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import active_index, check_f_bound, check_updates


def meamed(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> torch.Tensor:
    """Mean around the median: in each coordinate, the mean of the ``n_active − f`` values
    nearest the coordinate's median (``Tensor[d]``, the updates' dtype). Needs
    ``n_active >= 2f + 1`` so that the median is one of the honest majority's values.

    Values tied at the last kept distance enter through their mean (order-independent).
    Weights only decide which rows are present (weight 0 = absent); kept values count
    equally. ``key`` is unused.

    Peak extra memory: per worker thread, about five transposed chunks of ``SELECT_ELEMENTS``
    values (4 MiB each in float32: the chunk, its distances to the median, a partitioned
    copy of them, masked sums); nothing proportional to ``d`` besides the output.

    Xie, Koyejo, Gupta 2018, Generalized Byzantine-tolerant SGD (arXiv:1802.10116).
    """
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    m = index.numel()
    check_f_bound(f, m, factor=2, extra=1, who="meamed")
    rows = None if m == updates.shape[0] else index
    return map_chunks(updates, rows, lambda block: mean_nearest_(block, median_(block), m - f))


@attrs.frozen
class MeaMed(KernelReducer):
    """Component for :func:`meamed`."""

    kernel = staticmethod(meamed)
    f: int = attrs.field(validator=int_at_least(0))
