"""Per-client L2 norm clipping."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import positive
from fedkit.core.components import Transform
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.keys import Key
from fedkit.filters._common import check_positive, check_rows, require_finite, rescale, row_norms


@renamed_arguments(max_norm="clip_norm")
def clip_scales(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, clip_norm: float
) -> torch.Tensor:
    """Per-row factors (float64, ``[n]``) that bring every active row's L2 norm down to at
    most ``clip_norm``: ``min(1, clip_norm / ‖u_i‖)``; 1 for rows of weight 0."""
    updates, w = check_rows(updates, weights, "clip")
    clip_norm = check_positive(clip_norm, "clip: clip_norm")
    norms = row_norms(updates)
    active = w > 0
    require_finite(norms, active, "clip")
    over = active & (norms > clip_norm)
    return torch.where(over, clip_norm / norms, torch.ones_like(norms))


@renamed_arguments(max_norm="clip_norm")
def clip(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    clip_norm: float,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each active row ``u_i`` to ``u_i · min(1, clip_norm / ‖u_i‖₂)``; rows already
    within the bound (and rows of weight 0) are returned unchanged, weights too.

    Norm clipping of client contributions as in DP-FedAvg (McMahan et al. 2018, Learning
    Differentially Private Recurrent Language Models).
    """
    return rescale(updates, weights, clip_scales(updates, weights, clip_norm=clip_norm))


@renamed_arguments(max_norm="clip_norm")
@attrs.frozen
class Clip(Transform):
    """Component for :func:`clip`; reports the rows it scaled down under ``"clipped"``."""

    clip_norm: float = attrs.field(converter=float, validator=positive())

    def __call__(self, updates, weights, state, key):
        scale = clip_scales(updates, weights, clip_norm=self.clip_norm)
        return rescale(updates, weights, scale), state, {"clipped": scale < 1}
