"""SMEA: the mean of the ``n - f`` rows whose covariance has the smallest top eigenvalue."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._subsets import (
    argmin_subset_weights,
    batch_size,
    count_subsets,
    removal_masks,
)
from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_f,
    check_updates,
    gram,
    weighted_rows,
)

DEFAULT_MAX_SUBSETS = 1 << 16


def smea(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    max_subsets: int = DEFAULT_MAX_SUBSETS,
    key: Key | None = None,
) -> torch.Tensor:
    """Weighted mean of the ``m - f`` active rows whose empirical covariance
    ``(1/|S|) Σ_S (x_i - μ_S)(x_i - μ_S)ᵀ`` has the smallest largest eigenvalue, found
    EXACTLY over all ``C(m, f)`` subsets (``m`` = active rows). The search treats active
    rows alike (a large weight buys no influence over it); weights enter the final mean.

    One ``m × m`` Gram matrix ``K`` is read from the data; a subset's top eigenvalue is that
    of the centred ``(1/|S|) H K_S H`` (``|S| × |S|``, ``H = I - 11ᵀ/|S|``), computed for
    batches of subsets at once with ``torch.linalg.eigvalsh``. Subsets tied exactly at the
    minimum are averaged (independent of row order). ByzFL estimates each eigenvalue with
    one power-method step from a fresh random vector, so its choice is random for ``d > 1``;
    for ``d = 1`` the two agree. Raises ``ValueError`` when ``C(m, f) > max_subsets`` or
    ``2f >= m``. Rows of weight 0 are absent (they may hold NaN/Inf); ``key`` is unused.

    Extra memory: one coordinate chunk (``_common``), batches of about 4 Mi float64 for the
    subset matrices, the ``[d]`` output.

    Allouah, Guerraoui, Gupta, Pinot, Stephan 2023, "On the Privacy-Robustness-Utility
    Trilemma in Distributed Learning" (ICML).
    """
    del key
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    m = index.numel()
    rows = None if m == updates.shape[0] else index  # all active: no gather copy
    check_f(f, m, "smea")
    total = count_subsets(m, f, max_subsets, "smea")
    w_active = w.index_select(0, index).cpu().to(torch.float64)
    if f == 0:
        coeffs = w_active / w_active.sum()
    else:
        k = gram(updates, rows, center="row").cpu()
        if not bool(torch.isfinite(k).all()):
            raise ValueError("smea: active rows hold NaN/Inf (or values too large to square)")
        k = (k + k.T) / 2
        size = m - f
        batch = min(total, batch_size(m, 3 * size * size))

        def scored():
            for removed in removal_masks(m, f, batch):
                kept = torch.nonzero(~removed)[:, 1].view(-1, size)  # rows in order
                sub = k[kept[:, :, None], kept[:, None, :]]
                row_mean = sub.mean(dim=2)
                centred = (
                    sub
                    - row_mean[:, :, None]
                    - row_mean[:, None, :]
                    + row_mean.mean(dim=1)[:, None, None]
                )
                yield torch.linalg.eigvalsh(centred / size)[:, -1], removed

        coeffs = argmin_subset_weights(scored(), w_active)
    full = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    full[index] = coeffs.to(full.device)
    return weighted_rows(updates, full, finite=rows is None and f > 0)  # f > 0: rows checked


@attrs.frozen
class SMEA(KernelReducer):
    """Reducer wrapping :func:`smea` (fields = its hyper-parameters)."""

    kernel = staticmethod(smea)
    f: int = attrs.field(default=1, validator=int_at_least(0))
    max_subsets: int = attrs.field(default=DEFAULT_MAX_SUBSETS, validator=int_at_least(1))
