"""Local DP: every client clips its own update and adds noise before it leaves the client.

* ``"gaussian"``: L2 clip to ``C``, then ``N(0, (z·C)²)`` per coordinate;
* ``"laplace"``: L1 clip to ``C``, then ``Laplace(0, z·C)`` per coordinate.

Local DP protects one client's whole update against everyone, the server included: any two
updates a client could send lie in a ball of diameter ``2C``, so the per-round guarantee is
``ε = 2/z`` (Laplace, δ = 0) and, for the Gaussian, the (ε, δ) of the analytic Gaussian
mechanism with ``Δ/σ = 2/z`` (:func:`local_dp_epsilon`). Composition over rounds is the
accountant's job; noise this size makes the aggregate noisy (the mean of ``m`` rows keeps
noise ``z·C/√m``).
"""

from __future__ import annotations

import math

import attrs
import torch
from scipy.optimize import brentq
from scipy.special import log_ndtr

from fedkit.core.components import Transform
from fedkit.core.keys import Key, normal, split, uniform
from privacy.mechanisms.clipping import check_non_negative, check_positive, clip_rows

MECHANISMS = {"gaussian": "l2", "laplace": "l1"}


def laplace(k: Key, shape: tuple[int, ...], *, scale: float, dtype=torch.float64) -> torch.Tensor:
    """Laplace(0, scale) samples, as ``scale · (E₁ − E₂)`` with two keyed exponentials."""
    k1, k2 = split(k, 2)
    e1 = -torch.log1p(-uniform(k1, shape, dtype=torch.float64))  # U in [0,1): 1-U in (0,1]
    e2 = -torch.log1p(-uniform(k2, shape, dtype=torch.float64))
    return (scale * (e1 - e2)).to(dtype)


def local_dp(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    clip_norm: float,
    noise_multiplier: float,
    mechanism: str = "gaussian",
    key: Key,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip each active row (L2 for Gaussian, L1 for Laplace) to ``clip_norm`` and add keyed
    noise of standard deviation (Gaussian) or scale (Laplace) ``noise_multiplier · clip_norm``
    to every row.

    Returns ``(noised, scale)`` with ``scale`` the clipping factors (``< 1``: clipped).

    (Dwork & Roth 2014, The Algorithmic Foundations of Differential Privacy.)
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {sorted(MECHANISMS)}, got {mechanism!r}")
    c = check_positive("clip_norm", clip_norm)
    z = check_non_negative("noise_multiplier", noise_multiplier)
    if key is None:
        raise ValueError("local_dp needs a key: DP noise cannot be drawn without one")
    clipped, scale = clip_rows(updates, weights, clip_norm=c, norm=MECHANISMS[mechanism])
    if z == 0.0:
        return clipped, scale
    shape = tuple(updates.shape)
    if mechanism == "gaussian":
        noise = normal(key, shape, std=z * c, dtype=torch.float64)
    else:
        noise = laplace(key, shape, scale=z * c)
    return (clipped.to(torch.float64) + noise.to(updates.device)).to(updates.dtype), scale


def local_dp_epsilon(
    noise_multiplier: float, mechanism: str = "gaussian", delta: float = 0.0
) -> float:
    """Per-client, per-round ε of :func:`local_dp` (any two inputs differ by at most ``2C``).

    Laplace: ``ε = 2/z`` (pure DP, ``delta`` ignored). Gaussian: the smallest ε with
    ``Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ) ≤ δ`` for ``μ = 2/z`` (needs ``0 < δ < 1``).

    (Balle & Wang 2018, Improving the Gaussian Mechanism for Differential Privacy:
    Analytical Calibration and Optimal Denoising.)
    """
    z = check_non_negative("noise_multiplier", noise_multiplier)
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {sorted(MECHANISMS)}, got {mechanism!r}")
    if z == 0.0:
        return math.inf
    if mechanism == "laplace":
        return 2.0 / z
    if not 0.0 < delta < 1.0:
        raise ValueError(f"the Gaussian mechanism needs 0 < delta < 1, got {delta!r}")
    mu = 2.0 / z

    def excess(eps: float) -> float:
        a = log_ndtr(mu / 2 - eps / mu)
        b = eps + log_ndtr(-mu / 2 - eps / mu)
        return math.exp(a) - math.exp(b) - delta

    if excess(0.0) <= 0.0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0.0:
        hi *= 2.0
    return float(brentq(excess, 0.0, hi, xtol=1e-12, rtol=1e-10))


@attrs.frozen
class LocalDP(Transform):
    """Transform: :func:`local_dp` on every row (each client's own clip and noise);
    reports ``"clipped"``. Its per-round ε is :func:`local_dp_epsilon`.

    (Dwork & Roth 2014, The Algorithmic Foundations of Differential Privacy.)
    """

    clip_norm: float = attrs.field(converter=float)
    noise_multiplier: float = attrs.field(converter=float)
    mechanism: str = "gaussian"

    def __attrs_post_init__(self) -> None:
        check_positive("clip_norm", self.clip_norm)
        check_non_negative("noise_multiplier", self.noise_multiplier)
        if self.mechanism not in MECHANISMS:
            raise ValueError(
                f"mechanism must be one of {sorted(MECHANISMS)}, got {self.mechanism!r}"
            )

    def __call__(self, updates, weights, state, key):
        noised, scale = local_dp(
            updates,
            weights,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            mechanism=self.mechanism,
            key=key,
        )
        return (noised, weights), state, {"clipped": (scale < 1) & (weights > 0)}
