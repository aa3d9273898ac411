"""Shared helpers for filter kernels: input checks, row norms, row scaling.

Filters see only the rows with positive weight ("active" rows); rows of weight 0 pass
through unchanged and keep weight 0. Work along the coordinates is chunked (see
``fedkit.aggregators._common``), so a filter needs at most one ``[n, d]`` output tensor.
"""

from __future__ import annotations

import math

import torch

from fedkit.aggregators._common import coordinate_chunks
from fedkit.core.checks import check_rows as _check_rows
from fedkit.core.components import as_weights


def check_rows(
    updates: torch.Tensor, weights: torch.Tensor | None, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``updates: Tensor[n, d]`` (floating point) and return it with its weights as
    a float tensor ``[n]`` (ones when None). All-zero weights are allowed here. The shared
    check: :func:`fedkit.core.checks.check_rows`."""
    return _check_rows(updates, weights, name)


def check_int(value: object, name: str, low: int) -> int:
    """``value`` as an int ``>= low`` or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_f(f: object, active: int, name: str) -> int:
    """The number of Byzantine rows ``f``: an int with ``0 <= f < active``."""
    f = check_int(f, f"{name}: f", 0)
    if f >= active:
        raise ValueError(f"{name}: f={f} is too large for {active} active rows (need f < {active})")
    return f


def row_norms(updates: torch.Tensor) -> torch.Tensor:
    """L2 norm of every row (float64, ``[n]``), accumulated over coordinate chunks."""
    n, d = updates.shape
    acc = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(n, d):
        acc += torch.linalg.vector_norm(updates[:, cols], dim=1, dtype=torch.float64).square()
    return acc.sqrt()


def finite_rows(updates: torch.Tensor) -> torch.Tensor:
    """BoolTensor ``[n]``: True where every entry of the row is finite (no NaN, no Inf)."""
    n, d = updates.shape
    ok = torch.ones(n, dtype=torch.bool, device=updates.device)
    for cols in coordinate_chunks(n, d):
        ok &= torch.isfinite(updates[:, cols]).all(dim=1)
    return ok


def require_finite(norms: torch.Tensor, active: torch.Tensor, name: str) -> None:
    """Raise if an active row has a non-finite norm (it holds a NaN or an Inf)."""
    bad = active & ~torch.isfinite(norms)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise ValueError(
            f"{name}: rows {rows} contain NaN or Inf; put Sanitize() before {name} in the chain"
        )


def check_positive(value: float, name: str) -> float:
    """``value`` as a finite float ``> 0`` or a clear error."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def rescale(
    updates: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows multiplied by ``scale[n]`` (one new tensor; rows with scale 1 are copied exactly).
    When no row changes, the input tensor itself is returned (filters never write into it)."""
    w = as_weights(weights, updates.shape[0], updates).clone()
    if bool((scale == 1).all()):
        return updates, w
    return updates * scale.to(updates.dtype)[:, None], w
