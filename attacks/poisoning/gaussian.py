"""Gaussian attack: Byzantine rows drawn from an isotropic Gaussian."""

from __future__ import annotations

import attrs
import torch

from attacks.poisoning._common import (
    Attack,
    check_honest,
    check_positive,
    honest_mean,
    require_key,
)
from fedkit.core.keys import Key, normal


def gaussian(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    sigma: float = 1.0,
    around_mean: bool = False,
    key: Key | None = None,
) -> torch.Tensor:
    """Byzantine rows drawn independently from ``N(c, σ² I)`` with ``c = 0`` (default) or,
    with ``around_mean``, ``c = μ`` the honest mean.

    Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent (NeurIPS).
    """
    b = check_honest(honest, num_byzantine, "gaussian")
    sigma = check_positive(sigma, "gaussian: sigma")
    noise = normal(
        require_key(key, "gaussian"),
        (b, honest.shape[1]),
        std=sigma,
        dtype=honest.dtype,
        device=honest.device,
    )
    return noise + honest_mean(honest) if around_mean else noise


@attrs.frozen
class Gaussian(Attack):
    """Attack value for :func:`gaussian`."""

    kernel = staticmethod(gaussian)
    sigma: float = 1.0
    around_mean: bool = False
