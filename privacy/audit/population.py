"""The synthetic clients of an audit: canaries whose updates the auditor knows, and honest
clients whose updates are fresh random vectors every round.

A canary's update is a random direction scaled to ``norm`` (the clip norm): in a dimension
``d`` much larger than the number of canaries the directions are nearly orthogonal
(``⟨u_i, u_j⟩ / norm² ~ N(0, 1/d)``), so a canary's projection of the released aggregate
measures that canary alone. Honest rows are Gaussian with per-coordinate standard deviation
``norm / √d`` (norm close to ``norm``; the chain's clipping bounds them).

(Andrew et al. 2024, One-shot Empirical Privacy Estimation for Federated Learning, use such
random canary directions for client-level DP.)
"""

from __future__ import annotations

import math

import attrs
import torch

from fedkit.core.keys import Key, normal
from privacy.mechanisms.clipping import check_positive


def _check_size(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@attrs.frozen
class Population:
    """``num_clients`` client slots with ``dim``-dimensional updates of norm about
    ``update_norm``; honest clients report ``honest_examples`` examples, canaries
    ``canary_examples`` (a reducer that weights by example counts sees these)."""

    num_clients: int
    dim: int
    update_norm: float
    honest_examples: int = 10
    canary_examples: int = 10

    def __attrs_post_init__(self) -> None:
        _check_size("num_clients", self.num_clients, 1)
        _check_size("dim", self.dim, 1)
        check_positive("update_norm", self.update_norm)
        _check_size("honest_examples", self.honest_examples, 1)
        _check_size("canary_examples", self.canary_examples, 1)


def canary_updates(
    key: Key, count: int, dim: int, *, norm: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``Tensor[count, dim]``: uniformly random directions of L2 norm ``norm``."""
    _check_size("count", count)
    _check_size("dim", dim, 1)
    check_positive("norm", norm)
    g = normal(key, (count, dim), dtype=torch.float64)
    return (g * (norm / torch.linalg.vector_norm(g, dim=1, keepdim=True))).to(dtype)


def honest_updates(
    key: Key, count: int, dim: int, *, norm: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``Tensor[count, dim]``: Gaussian rows with per-coordinate std ``norm / √dim``."""
    _check_size("count", count)
    _check_size("dim", dim, 1)
    check_positive("norm", norm)
    return normal(key, (count, dim), std=norm / math.sqrt(dim), dtype=dtype)
