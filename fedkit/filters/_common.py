"""Shared helpers for filter kernels: input checks, row norms, row scaling.

Filters see only the rows with positive weight ("active" rows); rows of weight 0 pass
through unchanged and keep weight 0. Work along the coordinates is chunked (see
``fedkit.core.rows``), so a filter needs at most one ``[n, d]`` output tensor.
"""

from __future__ import annotations

import math

import torch

from fedkit.core.checks import check_rows as _check_rows
from fedkit.core.rows import finite_rows, require_finite, rescale, row_norms  # noqa: F401 (re-exported)


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


def check_positive(value: float, name: str) -> float:
    """``value`` as a finite float ``> 0`` or a clear error."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value
