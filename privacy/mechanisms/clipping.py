"""Per-client norm clipping: the step that bounds each client's influence (its sensitivity).

Every DP mechanism here starts by scaling each active update row to norm at most
``clip_norm`` (L2 for Gaussian noise, L1 for Laplace noise); a row already inside the ball
is unchanged. The L2 case is fedkit's own clipping kernel (:mod:`fedkit.filters.clip`);
active rows holding NaN/Inf raise (put ``fedkit.filters.Sanitize`` first).
"""

from __future__ import annotations

import math

import attrs
import torch

from fedkit.core.checks import check_rows as _check_filter_rows
from fedkit.core.checks import check_rows as _shared_check_rows
from fedkit.core.components import Transform
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.rows import require_finite, rescale
from fedkit.filters.clip import clip_scales

NORMS = ("l2", "l1")


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is finite and > 0."""
    v = float(value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return v


def check_non_negative(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is finite and >= 0."""
    v = float(value)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return v


def check_rows(updates: torch.Tensor, who: str = "clip_rows") -> None:
    """A clear error unless ``updates`` is a floating ``Tensor[n, d]`` (``n = 0`` allowed);
    the shared check :func:`fedkit.core.checks.check_rows`, messages prefixed by ``who``."""
    _shared_check_rows(updates, None, who, allow_empty=True)


@renamed_arguments(max_norm="clip_norm")
def clip_scales_l1(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, clip_norm: float
) -> torch.Tensor:
    """Per-row factors ``min(1, clip_norm / ‖u_i‖₁)`` (float64, 1 for rows of weight 0)."""
    updates, w = _check_filter_rows(updates, weights, "clip_l1")
    clip_norm = check_positive("clip_norm", clip_norm)
    norms = torch.linalg.vector_norm(updates, ord=1, dim=1, dtype=torch.float64)
    active = w > 0
    require_finite(norms, active, "clip_l1")
    over = active & (norms > clip_norm)
    return torch.where(over, clip_norm / norms, torch.ones_like(norms))


def clip_rows(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    clip_norm: float,
    norm: str = "l2",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each active row ``u_i`` by ``min(1, C / ‖u_i‖)`` (L2 or L1) so ``‖u_i‖ ≤ C``.

    Returns ``(clipped, scale)`` with ``scale`` the float64 factors (``scale < 1`` exactly
    for the active rows that were scaled down). Rows of weight 0 are left unchanged.

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    check_rows(updates)
    if norm == "l2":
        scale = clip_scales(updates, weights, clip_norm=check_positive("clip_norm", clip_norm))
    elif norm == "l1":
        scale = clip_scales_l1(updates, weights, clip_norm=check_positive("clip_norm", clip_norm))
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    clipped, _ = rescale(updates, weights, scale)
    return clipped, scale


@attrs.frozen
class ClipUpdates(Transform):
    """Clip every active client update to L2 norm ``clip_norm`` (fedkit's clipping kernel
    under the DP mechanisms' parameter name); reports ``"clipped"``.

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """

    clip_norm: float = attrs.field(converter=float)

    def __attrs_post_init__(self) -> None:
        check_positive("clip_norm", self.clip_norm)

    def __call__(self, updates, weights, state, key):
        clipped, scale = clip_rows(updates, weights, clip_norm=self.clip_norm)
        return (clipped, weights), state, {"clipped": scale < 1}
