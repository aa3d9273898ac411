"""Client weights for DP averaging: uniform, or capped as in McMahan et al. 2018.

With a weighted average the influence of one client grows with its weight, so the noise
must be calibrated to the largest weight any client can have. Two DP-correct choices:

* :class:`UniformWeights` (the default of :func:`~privacy.mechanisms.dp_fedavg`): every
  active client counts once; the sum of clipped rows has L2 sensitivity ``C``;
* :class:`CapWeights`: McMahan et al.'s ``w_k = min(n_k / ŵ, 1)`` with a public cap ``ŵ``;
  every weight is at most 1, so the weighted sum still has sensitivity ``C``.

Raw example counts must not be used unmodified: a client's count is private data, and the
sensitivity ``C · w_max / Σw`` would depend on it.
"""

from __future__ import annotations

import attrs
import torch

from fedkit.core.components import Transform
from privacy.mechanisms.clipping import check_positive


def uniform_weights(weights: torch.Tensor) -> torch.Tensor:
    """1 for every client with a positive weight, 0 for the excluded ones."""
    return (weights > 0).to(weights.dtype)


def cap_weights(weights: torch.Tensor, *, weight_cap: float) -> torch.Tensor:
    """``min(w / weight_cap, 1)``: weights scaled by a public cap and bounded by 1.

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """
    check_positive("weight_cap", weight_cap)
    return torch.clamp(weights / weight_cap, max=1.0)


@attrs.frozen
class UniformWeights(Transform):
    """Set every active client's weight to 1 (excluded clients stay at 0)."""

    def __call__(self, updates, weights, state, key):
        return (updates, uniform_weights(weights)), state, {}


@attrs.frozen
class CapWeights(Transform):
    """Replace each weight ``w`` by ``min(w / weight_cap, 1)`` (public cap ``ŵ``).

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """

    weight_cap: float = attrs.field(converter=float)

    def __attrs_post_init__(self) -> None:
        check_positive("weight_cap", self.weight_cap)

    def __call__(self, updates, weights, state, key):
        return (updates, cap_weights(weights, weight_cap=self.weight_cap)), state, {}
