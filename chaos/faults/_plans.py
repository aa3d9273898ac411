"""Shared pieces of the fault models: argument checks and plan building."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from fedkit.core.keys import Key
from fedkit.protocols import FAULT_KINDS, FaultKind, FaultPlan


def check_probability(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must lie in [0, 1], got {value!r}"
        )


def check_positive_int(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be an int >= 1, got {value!r}"
        )


def check_call(round: int, clients: Any, key: Any) -> torch.Tensor:
    """The sampled ids as a CPU int64 vector; a clear error for bad arguments."""
    if isinstance(round, bool) or not isinstance(round, int):
        raise TypeError(f"round must be an int, got {type(round).__name__}")
    if not isinstance(key, Key):
        raise TypeError(f"key must be a fedkit Key, got {type(key).__name__}")
    if not isinstance(clients, torch.Tensor) or clients.ndim != 1 or clients.dtype != torch.int64:
        what = (
            f"{clients.dtype} tensor of shape {tuple(clients.shape)}"
            if isinstance(clients, torch.Tensor)
            else type(clients).__name__
        )
        raise ValueError(f"clients must be a 1-D int64 tensor of client ids, got {what}")
    return clients.cpu()


def plan_where(
    mask: torch.Tensor,
    kind: FaultKind,
    reason: str | tuple[str, ...],
    *,
    detail: torch.Tensor | None = None,
    latency: torch.Tensor | None = None,
) -> FaultPlan:
    """A plan with ``kind`` where ``mask`` is True and NONE elsewhere; ``reason`` is one label
    for every struck client or one per client; ``detail``/``latency`` default to zeros."""
    m = int(mask.numel())
    labels = (reason,) * m if isinstance(reason, str) else reason
    zeros = torch.zeros(m, dtype=torch.int64)
    return FaultPlan(
        kind=torch.where(mask, FAULT_KINDS.index(kind), zeros),
        latency=torch.zeros(m, dtype=torch.float64)
        if latency is None
        else latency.to(torch.float64),
        detail=zeros if detail is None else torch.where(mask, detail.to(torch.int64), zeros),
        reason=tuple(
            label if hit else "none" for label, hit in zip(labels, mask.tolist(), strict=True)
        ),
    )
