"""DP-FedAvg with fixed clipping as a tuple of chain components.

``chain(*dp_fedavg(C, z, m))`` is: clip every update to ``C`` → weights to 1 → the
fixed-denominator mean over ``m`` expected clients → Gaussian noise ``N(0, (z·C/m)²)``.

Sensitivity. Under add/remove-one-client adjacency the clipped sum ``Σ_i w_i u_i`` moves by
at most ``C · w_max``. With uniform weights (``w_max = 1``) and the public denominator ``m``
the aggregate moves by at most ``C/m``, so the noise ``z·C/m`` gives the Gaussian mechanism
with multiplier ``z`` per round; account for it with sample rate ``m / N`` and one step per
round (:func:`privacy.accounting.central_dp_event`).

With example-count weights the weighted mean ``Σ w_i u_i / Σ w_i`` has sensitivity
``C · w_max / Σw``: it depends on private counts and can be close to ``C`` when one client
holds most examples. Pass ``uniform_weights=False`` together with a public ``weight_cap``
ŵ to use McMahan et al.'s capped weights ``min(n_k/ŵ, 1) ≤ 1``; then ``expected_clients``
must be the expected total *capped* weight ``q · Σ_k min(n_k/ŵ, 1)``.
"""

from __future__ import annotations

from fedkit.core.components import Component
from privacy.mechanisms.clipping import ClipUpdates
from privacy.mechanisms.fixed_mean import FixedMean
from privacy.mechanisms.gaussian import GaussianNoise
from privacy.mechanisms.weights import CapWeights, UniformWeights


def dp_fedavg(
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    *,
    uniform_weights: bool = True,
    weight_cap: float | None = None,
) -> tuple[Component, ...]:
    """The components of DP-FedAvg with fixed clipping, in chain order.

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """
    if uniform_weights:
        if weight_cap is not None:
            raise ValueError("weight_cap is only used with uniform_weights=False")
        weighting: Component = UniformWeights()
    else:
        if weight_cap is None:
            raise ValueError(
                "uniform_weights=False needs a public weight_cap ŵ (weights become "
                "min(n_k/ŵ, 1)); raw example counts would make the sensitivity data-dependent"
            )
        weighting = CapWeights(weight_cap=weight_cap)
    return (
        ClipUpdates(clip_norm=clip_norm),
        weighting,
        FixedMean(expected_weight=expected_clients),
        GaussianNoise(
            noise_multiplier=noise_multiplier,
            clip_norm=clip_norm,
            expected_clients=expected_clients,
        ),
    )
