"""Input checks shared by the data-poisoning functions."""

from __future__ import annotations

import torch


def check_labels(y: torch.Tensor, name: str) -> torch.Tensor:
    """``y`` must be a 1-D integer tensor of class labels."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: labels must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim != 1:
        raise ValueError(f"{name}: labels must be 1-D, got shape {tuple(y.shape)}")
    if torch.is_floating_point(y) or y.dtype == torch.bool or torch.is_complex(y):
        raise TypeError(f"{name}: labels must be an integer tensor, got {y.dtype}")
    return y


def check_class(value: object, num_classes: int | None, name: str) -> int:
    """``value`` as a class index (an int in ``[0, num_classes)`` when that is known)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int class index, got {type(value).__name__}")
    if value < 0 or (num_classes is not None and value >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValueError(f"{name} must be a class index in {bound}, got {value}")
    return value
