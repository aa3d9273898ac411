"""Inner product manipulation (IPM)."""

from __future__ import annotations

import attrs
import torch

from attacks.poisoning._common import (
    Attack,
    check_honest,
    check_positive,
    honest_mean,
    repeat_row,
)
from fedkit.core.keys import Key


def ipm(
    honest: torch.Tensor, *, num_byzantine: int, epsilon: float = 0.1, key: Key | None = None
) -> torch.Tensor:
    """Every Byzantine row is ``−ε · μ``: small ``ε`` makes the inner product of the aggregate
    with the true mean negative while staying close to the honest rows.

    Xie et al. 2019, Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product
    Manipulation (UAI).
    """
    b = check_honest(honest, num_byzantine, "ipm")
    epsilon = check_positive(epsilon, "ipm: epsilon")
    return repeat_row(honest_mean(honest) * -epsilon, b)


@attrs.frozen
class IPM(Attack):
    """Attack value for :func:`ipm`."""

    kernel = staticmethod(ipm)
    epsilon: float = 0.1
