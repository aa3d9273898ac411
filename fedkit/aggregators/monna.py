"""MoNNA: the mean of the ``n - f`` nearest neighbours of a trusted pivot row."""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch

from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer, RoundContext, require_context
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_f,
    check_updates,
    coordinate_chunks,
    gather_chunk,
    weighted_rows,
)


def monna(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    pivot: int | torch.Tensor = 0,
    key: Key | None = None,
) -> torch.Tensor:
    """Weighted mean of the ``m - f`` active rows nearest (Euclidean) to the pivot, the one
    update the caller trusts (``m`` = active rows). ``pivot`` is a row index (a peer's own
    row, as in the paper's decentralised setting: it must be active and counts among the
    ``m - f``) or a ``Tensor[d]`` outside the rows (the server's own update on its trusted
    root data: the ``m - f`` client rows nearest to it are averaged, the pivot itself is not).

    Rows tied at the boundary distance share the remaining places equally (fractional
    membership), so the result does not depend on row order; ByzFL breaks such ties
    arbitrarily (``argpartition``). Rows of weight 0 are absent (they may hold NaN/Inf);
    ``key`` is unused. Raises ``ValueError`` when ``2f >= m`` or the pivot is absent.

    Distances are ``‖x_i‖² - 2 x_i·x_p + ‖x_p‖²`` per chunk (the formula of ByzFL's
    ``torch.cdist``): two cheap passes, float32 rounding relative to ``‖x_i‖²``.

    Extra memory: one coordinate chunk (``_common``), ``O(m)`` numbers and the ``[d]``
    output.

    Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan 2023, "Robust Collaborative
    Learning with Linear Gradient Overhead" (ICML).
    """
    del key
    updates, w = check_updates(updates, weights)
    n, d = updates.shape
    if isinstance(pivot, torch.Tensor):
        if pivot.shape != (d,) or not bool(torch.isfinite(pivot).all()):
            raise ValueError(
                f"monna: a pivot tensor must be finite with shape ({d},), got {tuple(pivot.shape)}"
            )
        point = pivot.to(device=updates.device, dtype=updates.dtype)
    elif not isinstance(pivot, int) or isinstance(pivot, bool) or not -n <= pivot < n:
        raise ValueError(
            f"monna: pivot must be a row index in [0, {n}) or a Tensor[d], got {pivot!r}"
        )
    else:
        pivot %= n
        if not bool(w[pivot] > 0):
            raise ValueError(f"monna: pivot row {pivot} has weight 0 (absent)")
        point = updates[pivot]
    index = active_index(w)
    m = index.numel()
    rows = None if m == updates.shape[0] else index  # all active: no gather copy
    check_f(f, m, "monna")
    dist = _sq_distances_to_point(updates, rows, point).cpu()
    if not bool(torch.isfinite(dist).all()):
        raise ValueError("monna: active rows hold NaN/Inf (or values too large to square)")
    k = m - f
    boundary = torch.kthvalue(dist, k).values
    inside = dist < boundary
    tied = dist == boundary
    share = (k - int(inside.sum())) / int(tied.sum())
    member = inside.to(torch.float64) + share * tied.to(torch.float64)
    mass = member * w.index_select(0, index).cpu().to(torch.float64)
    full = torch.zeros(n, dtype=torch.float64, device=updates.device)
    full[index] = (mass / mass.sum()).to(full.device)
    return weighted_rows(updates, full, finite=rows is None)


def _sq_distances_to_point(
    updates: torch.Tensor, rows: torch.Tensor | None, point: torch.Tensor
) -> torch.Tensor:
    """``‖x_i - p‖²`` (float64 ``[m]``) for the rows ``rows`` (all if None), chunk by
    chunk as ``‖x_i‖² - 2 x_i·p + ‖p‖²``: one matrix-vector product and one norm pass,
    no ``[m, chunk]`` difference (a chunk that overflows float32 is redone in float64)."""
    m = updates.shape[0] if rows is None else rows.numel()
    acc = torch.zeros(m, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(m, updates.shape[1]):
        block, piece = gather_chunk(updates, rows, cols), point[cols]
        if block.dtype not in (torch.float32, torch.float64):
            block, piece = block.float(), piece.float()
        part = _expanded_sq_distances(block, piece)
        if block.dtype != torch.float64 and not bool(torch.isfinite(part).all()):
            part = _expanded_sq_distances(block.double(), piece.double())
        acc += part
    return acc.clamp_(min=0.0)


def _expanded_sq_distances(block: torch.Tensor, piece: torch.Tensor) -> torch.Tensor:
    sq = torch.linalg.vector_norm(block, dim=1).double().square()
    return sq - 2.0 * (block @ piece).double() + float(torch.linalg.vector_norm(piece)) ** 2


def _check_pivot(instance, attribute, value) -> None:
    if value == "server":
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"MoNNA.pivot must be 'server' or a row index, got {value!r}")


@attrs.frozen
class MoNNA(KernelReducer):
    """Reducer wrapping :func:`monna`. ``pivot="server"`` (the default): the pivot is the
    server's own update on its trusted root data (``context.reference``, from
    ``Strategy(root_examples=...)``), so no client can steer which rows are kept; an int
    pivot is a row index (a peer's own update in a decentralised run; in a server run it
    is some client's reply, which the adversary may control)."""

    kernel = staticmethod(monna)
    uses_context: ClassVar[bool] = True
    f: int = attrs.field(default=1, validator=int_at_least(0))
    pivot: int | str = attrs.field(default="server", validator=_check_pivot)

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self.pivot == "server"

    def __call__(self, updates, weights, state, key, *, context: RoundContext | None = None):
        pivot = self.pivot
        if pivot == "server":
            pivot = require_context(context, "MoNNA(pivot='server')", reference=True).reference
        return monna(updates, weights, f=self.f, pivot=pivot, key=key), state, {}
