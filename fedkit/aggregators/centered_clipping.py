"""Centered clipping: average the rows' offsets from a centre, each clipped to a norm bound."""

from __future__ import annotations

import math

import attrs
import torch

from fedkit.core.checks import int_at_least, positive
from fedkit.core.components import Reducer
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_updates,
    coordinate_chunks,
    gather_chunk,
    sq_distances_to,
)


@renamed_arguments(tau="clip_norm")
def centered_clipping_with_mask(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    clip_norm: float,
    iters: int = 1,
    center: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`centered_clipping` and the rows it scaled down (``BoolTensor[n]``, True where
    ``‖x_i − v‖ > clip_norm`` in some iteration)."""
    updates, w = check_updates(updates, weights)
    if not (
        isinstance(clip_norm, int | float)
        and not isinstance(clip_norm, bool)
        and math.isfinite(clip_norm)
        and clip_norm > 0
    ):
        raise ValueError(
            f"centered_clipping: clip_norm must be a finite number > 0, got {clip_norm!r}"
        )
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"centered_clipping: iters must be an int >= 1, got {iters!r}")
    n, d = updates.shape
    if center is not None and tuple(center.shape) != (d,):
        raise ValueError(
            f"centered_clipping: center must have shape ({d},), got {tuple(center.shape)}"
        )
    index = active_index(w)
    m = index.numel()
    rows = None if m == n else index
    share = w.index_select(0, index).to(torch.float64)
    share = share / share.sum()
    v = torch.zeros(d, dtype=updates.dtype, device=updates.device)
    if center is not None:
        v.copy_(center)
    clipped = torch.zeros(n, dtype=torch.bool, device=updates.device)
    for _ in range(iters):
        dist = sq_distances_to(updates, v, rows).sqrt_()
        scale = (clip_norm / dist).clamp_(max=1.0)  # distance 0 gives inf, clamped to 1
        clipped[index] |= scale < 1.0
        coeffs = share * scale
        keep = float(1.0 - coeffs.sum())
        c = coeffs.to(updates.dtype)
        # v ← v + Σ c_i (x_i − v) = (1 − Σ c_i) v + Σ c_i x_i, in place, chunk by chunk
        for cols in coordinate_chunks(m, d):
            moved = torch.mv(gather_chunk(updates, rows, cols).T, c)
            v[cols].mul_(keep).add_(moved)
    return v, clipped


@renamed_arguments(tau="clip_norm")
def centered_clipping(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    clip_norm: float,
    iters: int = 1,
    center: torch.Tensor | None = None,
    key: Key | None = None,
) -> torch.Tensor:
    """Centered clipping: from ``v = center`` (zeros when None), ``iters`` times
    ``v ← v + Σ_i w̃_i (x_i − v) · min(1, clip_norm / ‖x_i − v‖)`` with ``w̃_i = w_i / Σ w`` over
    the active rows (``Tensor[d]``). Each step moves ``v`` by at most ``clip_norm``, and a row can
    pull it by at most ``w̃_i · clip_norm`` whatever its size. Weights count as shares of that
    average; a row of weight 0 is absent. ``key`` is unused.

    The paper runs it on worker momenta with the previous round's aggregate as ``center``;
    :class:`CenteredClipping` keeps that aggregate as its state.

    Peak extra memory: one coordinate chunk (its float64 copy when float32 distances
    overflow); ``v`` is the output buffer, updated in place.

    Karimireddy, He, Jaggi 2021, Learning from History for Byzantine Robust Optimization
    (ICML).
    """
    return centered_clipping_with_mask(
        updates, weights, clip_norm=clip_norm, iters=iters, center=center
    )[0]


@renamed_arguments(tau="clip_norm")
@attrs.frozen
class CenteredClipping(Reducer):
    """Component for :func:`centered_clipping` whose state is the previous round's aggregate,
    used as the next round's ``center`` (zeros before the first round), as the paper does
    with worker momentum. ``info["clipped"]`` marks the rows scaled down."""

    clip_norm: float = attrs.field(validator=positive())
    iters: int = attrs.field(default=1, validator=int_at_least(1))

    def init(self, d: int) -> torch.Tensor:
        return torch.zeros(d)

    def __call__(self, updates, weights, state, key):
        center = None if state is None else state.to(device=updates.device, dtype=updates.dtype)
        out, clipped = centered_clipping_with_mask(
            updates, weights, clip_norm=self.clip_norm, iters=self.iters, center=center
        )
        return out, out, {"clipped": clipped}
