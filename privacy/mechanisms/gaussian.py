"""Central DP: Gaussian noise on the aggregate, calibrated to the clipped mean's sensitivity.

With rows clipped to ``C``, weights at most 1 and the fixed-denominator mean over ``m``
expected clients, one client changes the aggregate by at most ``C / m`` (add/remove
adjacency, the one the accountants assume). Adding ``N(0, (z·C/m)² I)`` is then the
Gaussian mechanism with noise multiplier ``z``, which is what
:mod:`privacy.accounting` takes as ``noise_multiplier`` (one step per round, sample rate
``m / N``).
"""

from __future__ import annotations

import attrs
import torch

from fedkit.core.components import ServerTransform
from fedkit.core.keys import Key, normal
from privacy.mechanisms.clipping import check_non_negative, check_positive


def gaussian_noise_std(
    *, noise_multiplier: float, clip_norm: float, expected_clients: float
) -> float:
    """The noise standard deviation ``z · C / m`` for the mean over ``m`` expected clients."""
    z = check_non_negative("noise_multiplier", noise_multiplier)
    c = check_positive("clip_norm", clip_norm)
    m = check_positive("expected_clients", expected_clients)
    return z * c / m


def gaussian_noise(
    aggregate: torch.Tensor,
    *,
    noise_multiplier: float,
    clip_norm: float,
    expected_clients: float,
    key: Key,
) -> torch.Tensor:
    """``aggregate + N(0, (z·C/m)² I)``: the Gaussian mechanism on a clipped mean.

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """
    if not isinstance(aggregate, torch.Tensor) or not torch.is_floating_point(aggregate):
        raise TypeError("aggregate must be a floating-point torch.Tensor")
    if key is None:
        raise ValueError("gaussian_noise needs a key: DP noise cannot be drawn without one")
    std = gaussian_noise_std(
        noise_multiplier=noise_multiplier, clip_norm=clip_norm, expected_clients=expected_clients
    )
    if std == 0.0:
        return aggregate.clone()
    noise = normal(key, aggregate.shape, std=std, dtype=torch.float64, device=aggregate.device)
    return (aggregate.to(torch.float64) + noise).to(aggregate.dtype)


@attrs.frozen
class GaussianNoise(ServerTransform):
    """Server transform adding ``N(0, (z·C/m)²)`` to every coordinate of the aggregate;
    ``info["noise_std"]`` is the standard deviation used.

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """

    noise_multiplier: float = attrs.field(converter=float)
    clip_norm: float = attrs.field(converter=float)
    expected_clients: float = attrs.field(converter=float)

    def __attrs_post_init__(self) -> None:
        gaussian_noise_std(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            expected_clients=self.expected_clients,
        )

    def __call__(self, updates, weights, state, key):
        out = gaussian_noise(
            updates,
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            expected_clients=self.expected_clients,
            key=key,
        )
        std = gaussian_noise_std(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            expected_clients=self.expected_clients,
        )
        return out, state, {"noise_std": std}
