"""The fixed-denominator mean: ``Σ_i w_i u_i / W`` with ``W`` the *expected* total weight.

Dividing by a public constant (the expected number of clients ``q·N`` for uniform
weights) instead of the realised ``Σ w_i`` keeps the sensitivity data-independent: adding
or removing one client with ``‖u‖ ≤ C`` and ``w ≤ 1`` moves the result by at most ``C / W``
in L2. The estimate is unbiased for the mean over the population when clients are sampled
independently with probability ``q``.
"""

from __future__ import annotations

import attrs
import torch

from fedkit.core.components import Reducer, as_weights
from fedkit.core.keys import Key
from fedkit.core.rows import weighted_rows
from privacy.mechanisms.clipping import check_positive, check_rows


def check_unit_weights(weights: torch.Tensor) -> None:
    """A clear error unless every weight is at most 1 (the sensitivity bound needs it)."""
    if bool((weights > 1.0 + 1e-9).any()):
        raise ValueError(
            f"DP averaging needs weights in [0, 1] (max is {float(weights.max()):g}): put "
            "UniformWeights() or CapWeights(weight_cap) before the reducer"
        )


def fixed_denominator_mean(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    expected_weight: float,
    key: Key | None = None,
) -> torch.Tensor:
    """``Σ_i w_i · u_i / expected_weight`` (``Tensor[d]``; zeros when no client is active).
    Weights must lie in [0, 1] (see :mod:`privacy.mechanisms.weights`).

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """
    check_rows(updates, "fixed_denominator_mean")
    check_positive("expected_weight", expected_weight)
    w = as_weights(weights, updates.shape[0], updates)
    check_unit_weights(w)
    return weighted_rows(updates, w / float(expected_weight))


@attrs.frozen
class FixedMean(Reducer):
    """Reducer: the fixed-denominator mean :func:`fixed_denominator_mean`.

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """

    expected_weight: float = attrs.field(converter=float)

    def __attrs_post_init__(self) -> None:
        check_positive("expected_weight", self.expected_weight)

    def __call__(self, updates, weights, state, key):
        out = fixed_denominator_mean(updates, weights, expected_weight=self.expected_weight)
        return out, state, {}
