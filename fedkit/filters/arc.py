"""Adaptive Robust Clipping (ARC)."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import int_at_least
from fedkit.core.components import Transform
from fedkit.core.keys import Key
from fedkit.filters._common import check_f, check_rows, require_finite, rescale, row_norms


def arc_num_clipped(active: int, f: int) -> int:
    """How many rows ARC clips among ``active`` rows: ``k = ⌊2 (f / n) (n − f)⌋``."""
    return (2 * f * (active - f)) // active


def arc_scales(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, f: int
) -> torch.Tensor:
    """Per-row factors (float64, ``[n]``): the ``k`` active rows of largest norm get
    ``τ / ‖u_i‖`` with ``τ`` the ``(k+1)``-th largest active norm; every other row gets 1."""
    updates, w = check_rows(updates, weights, "arc")
    active = w > 0
    n_active = int(active.sum())
    f = check_f(f, n_active, "arc")
    k = arc_num_clipped(n_active, f)
    ones = torch.ones(updates.shape[0], dtype=torch.float64, device=updates.device)
    if k == 0:
        return ones
    norms = row_norms(updates)
    require_finite(norms, active, "arc")
    threshold = torch.topk(norms[active], k + 1).values[k]
    over = active & (norms > threshold)
    return torch.where(over, threshold / norms, ones)


def arc(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive Robust Clipping: with ``n`` active rows, clip the ``k = ⌊2 (f/n)(n − f)⌋``
    rows of largest L2 norm to the ``(k+1)``-th largest norm; other rows and the weights
    are unchanged (rows of weight 0 take no part).

    Allouah et al. 2024, Boosting Robustness by Clipping Gradients in Distributed Learning
    (arXiv:2405.14432).
    """
    return rescale(updates, weights, arc_scales(updates, weights, f=f))


@attrs.frozen
class ARC(Transform):
    """Component for :func:`arc`; reports the rows it scaled down under ``"clipped"``."""

    f: int = attrs.field(validator=int_at_least(0))

    def __call__(self, updates, weights, state, key):
        scale = arc_scales(updates, weights, f=self.f)
        return rescale(updates, weights, scale), state, {"clipped": scale < 1}
