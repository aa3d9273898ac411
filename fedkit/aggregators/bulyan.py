"""Bulyan: iterated Krum selection, then a coordinate-wise trimmed mean around the median."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._select import map_chunks, mean_nearest_, median_
from fedkit.aggregators.krum import active_sq_distances, rank_rows, sum_of_nearest
from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import active_index, check_f_bound, check_updates


def iterated_krum(dist: torch.Tensor, f: int, count: int) -> torch.Tensor:
    """Positions (int64, in selection order) of ``count`` rows picked one at a time by Krum
    on the shrinking set: each step scores the ``r`` remaining rows with their
    ``max(1, r − f − 2)`` nearest remaining neighbours (at most ``r − 1``), takes the lowest
    (ties as in :func:`~fedkit.aggregators.krum.rank_rows`; Flower takes the lower index)
    and removes it. ``dist`` (``[m, m]``) is reused, never recomputed; the loop runs over
    the selection steps, each one tensor op over the remaining rows."""
    m = dist.shape[0]
    remaining = torch.ones(m, dtype=torch.bool, device=dist.device)
    chosen = []
    for step in range(count):
        r = m - step
        k = min(max(1, r - f - 2), r - 1)
        left = torch.nonzero(remaining).flatten()
        among = dist.index_select(0, left).index_select(1, left)
        best = left[rank_rows(sum_of_nearest(among, k), among)[0]]
        chosen.append(best)
        remaining[best] = False
    return torch.stack(chosen) if chosen else torch.empty(0, dtype=torch.int64)


def bulyan(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> torch.Tensor:
    """Bulyan: select ``θ = n_active − 2f`` rows by Krum iterated on the shrinking set (one
    distance matrix for all steps), then in each coordinate average the ``β = θ − 2f``
    selected values nearest the selected values' median (``Tensor[d]``). Needs
    ``n_active >= 4f + 3``.

    Krum's neighbour count in a step with ``r`` rows left is ``max(1, r − f − 2)``, as in
    Flower's ``aggregate_bulyan``. Values tied at the last kept distance enter through their
    mean (order-independent; Flower keeps an arbitrary one). Weights only decide which rows are present (weight 0 = absent);
    the selected values count equally, as in the paper and Flower. ``key`` is unused.

    Peak extra memory: the Krum distances' chunk (as :func:`~fedkit.aggregators.krum.krum`),
    then per worker thread about five transposed chunks of the ``θ`` selected rows
    (``SELECT_ELEMENTS`` values, 4 MiB each in float32); nothing proportional to ``d``
    besides the output.

    El Mhamdi, Guerraoui, Rouault 2018, The Hidden Vulnerability of Distributed Learning in
    Byzantium (ICML).
    """
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    m = index.numel()
    check_f_bound(f, m, factor=4, extra=3, who="bulyan")
    theta = m - 2 * f
    beta = theta - 2 * f
    picked = iterated_krum(active_sq_distances(updates, index), f, theta)
    rows = torch.sort(index[picked]).values  # ascending: chunk gathers read memory in order
    return map_chunks(updates, rows, lambda block: mean_nearest_(block, median_(block), beta))


@attrs.frozen
class Bulyan(KernelReducer):
    """Component for :func:`bulyan`."""

    kernel = staticmethod(bulyan)
    f: int = attrs.field(validator=int_at_least(0))
