"""Weighted mean (FedAvg's aggregation)."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import check_updates, weighted_rows


def mean(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, key: Key | None = None
) -> torch.Tensor:
    """Weighted mean ``Σ_i w_i x_i / Σ_i w_i`` of the rows (``Tensor[d]``, the updates' dtype).

    Weights count as example counts (FedAvg); a row of weight 0 is absent (its values, even
    NaN/Inf, never enter). ``key`` is unused (deterministic).

    Peak extra memory: one coordinate chunk (``CHUNK_ELEMENTS`` values) when some rows have
    weight 0, nothing beyond the ``[d]`` output otherwise.

    McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from
    Decentralized Data (AISTATS).
    """
    updates, w = check_updates(updates, weights)
    w = w.to(torch.float64)
    return weighted_rows(updates, w / w.sum())


@attrs.frozen
class Mean(KernelReducer):
    """Component for :func:`mean` (FedAvg)."""

    kernel = staticmethod(mean)
