"""Input checks shared by the server optimizer kernels."""

from __future__ import annotations

import math

import torch

from fedkit.core.checks import floating_tensor, number_in


def check_delta(delta: torch.Tensor, name: str) -> torch.Tensor:
    """``delta`` must be a floating ``Tensor[d]`` (the aggregate of the client updates)."""
    return floating_tensor(delta, name, "the aggregate", "[d]")


def like_delta(buffer: torch.Tensor, delta: torch.Tensor, what: str, name: str) -> torch.Tensor:
    """A state buffer moved to ``delta``'s dtype and device, checked to have its shape."""
    if not isinstance(buffer, torch.Tensor) or buffer.shape != delta.shape:
        shape = tuple(buffer.shape) if isinstance(buffer, torch.Tensor) else type(buffer).__name__
        raise ValueError(
            f"{name}: state {what} has shape {shape}, the aggregate {tuple(delta.shape)}; "
            "was the state made by init(d) for this d?"
        )
    return buffer.to(dtype=delta.dtype, device=delta.device)


def check_real(
    value: float,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """``value`` as a float inside the given interval, or a clear error."""
    value = float(value)
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (math.isfinite(value) and lo_ok and hi_ok):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value}")
    return value


unit_interval = number_in(0.0, 1.0, closed="left")
"""attrs validator for decay rates: ``0 <= value < 1``."""
