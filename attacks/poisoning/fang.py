"""Fang et al.'s local model poisoning attacks, tailored to Krum and to trimmed mean /
coordinate-wise median, in update space: a row ``u`` stands for the local model
``w_Re + u`` around the current global model ``w_Re``, and ``s = sign(μ)`` is the direction
in which the honest updates would move each parameter.

The Krum attack starts from the global model (``center="global"``, the paper: update 0) or,
as in Shejwalkar & Houmansadr 2021's re-implementation, from the honest mean
(``center="mean"``). From the global model it succeeds when the honest updates' spread
dominates their mean (as with stochastic gradients in high dimension); from the mean it
succeeds far more often, since the mean is the most central point for Krum."""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch

from attacks.poisoning._common import (
    Attack,
    check_honest,
    check_positive,
    honest_mean,
    honest_std,
    require_key,
)
from fedkit.aggregators.krum import krum_scores
from fedkit.core.keys import Key, normal, uniform
from fedkit.core.rows import pairwise_sq_distances, sq_distances_to

Center = Literal["global", "mean"]


def _center(honest: torch.Tensor, center: Center) -> torch.Tensor:
    if center == "global":
        return honest.new_zeros(honest.shape[1])
    if center == "mean":
        return honest_mean(honest)
    raise ValueError(f"fang_krum: center must be 'global' or 'mean', got {center!r}")


def fang_krum_bound(honest: torch.Tensor, num_byzantine: int, center: Center = "global") -> float:
    """The paper's upper bound on ``λ`` with ``m = h + c`` clients, ``c = num_byzantine``:

    ``λ <= min_i Σ_{l ∈ Γ_i} ‖g_l − g_i‖ / ((m − 2c − 1)·√d) + max_i ‖g_i − o‖ / √d``

    where ``Γ_i`` holds the ``m − c − 2`` honest rows nearest to ``g_i`` and ``o`` is the
    starting point (the global model, update 0, or the honest mean). The first term is left
    out when ``m − 2c − 1 < 1`` or ``m − c − 2 < 1`` (too few honest rows to define it)."""
    h, d = honest.shape
    c = num_byzantine
    origin = _center(honest, center)
    if d == 0:
        return 0.0
    norms = sq_distances_to(honest, origin).sqrt()
    bound = float(norms.max()) / math.sqrt(d)
    neighbours, denom = h - 2, h - c - 1
    if neighbours >= 1 and denom >= 1:
        dist = pairwise_sq_distances(honest).sqrt()
        nearest = torch.sort(dist, dim=1).values[:, 1 : 1 + neighbours].sum(dim=1)
        bound += float(nearest.min()) / (denom * math.sqrt(d))
    return bound


def fang_krum(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    f: int | None = None,
    lambda_min: float = 1e-5,
    radius: float = 0.0,
    center: Center = "global",
    key: Key | None = None,
) -> torch.Tensor:
    """Byzantine rows ``o − λ·s`` with ``o`` the ``center`` (module doc), plus, for rows
    2..b, offsets of norm ``radius`` in random directions drawn from ``key`` (the paper's
    crafted models near the first one). ``λ`` starts at :func:`fang_krum_bound` and is halved
    until Krum (``f`` Byzantine, default ``num_byzantine``) applied to the honest rows and the
    Byzantine rows selects a Byzantine row, or ``λ < lambda_min`` (then the rows of the last
    ``λ`` tried are returned). Krum is :func:`fedkit.aggregators.krum.krum_scores`, with ties
    going to the lower index (an honest row); it needs ``h + b >= 2f + 3``, so with partial
    knowledge (``h = b`` own rows) pass a smaller ``f``.

    Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust Federated Learning
    (USENIX Security).
    """
    b = check_honest(honest, num_byzantine, "fang_krum")
    lambda_min = check_positive(lambda_min, "fang_krum: lambda_min")
    radius = float(radius)
    if not radius >= 0 or math.isinf(radius):
        raise ValueError(f"fang_krum: radius must be finite and >= 0, got {radius}")
    h, d = honest.shape
    if b == 0:
        return honest.new_zeros(0, d)
    s = torch.sign(honest_mean(honest))
    origin = _center(honest, center)
    offsets = honest.new_zeros(b, d)
    if radius > 0 and b > 1:
        noise = normal(
            require_key(key, "fang_krum with radius > 0"), (b - 1, d), dtype=torch.float64
        )
        noise = noise / torch.linalg.vector_norm(noise, dim=1, keepdim=True).clamp_min(1e-300)
        offsets[1:] = (radius * noise).to(honest.dtype).to(honest.device)
    lam = fang_krum_bound(honest, b, center)
    while True:
        rows = offsets + (origin - lam * s)
        scores = krum_scores(torch.cat([honest, rows]), None, f=b if f is None else f)
        if int(torch.argmin(scores)) >= h or lam < lambda_min:
            return rows
        lam /= 2.0


def fang_trimmed_mean(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    scale: float = 2.0,
    bounds: Literal["extremes", "moments"] = "extremes",
    key: Key | None = None,
) -> torch.Tensor:
    """Per coordinate ``j``, Byzantine values drawn uniformly (from ``key``) beyond the honest
    values, on the side opposite to ``s_j = sign(μ_j)``:

    * ``bounds="extremes"`` (full knowledge): where ``s_j < 0``, in ``[max_j, scale·max_j]``
      if ``max_j > 0`` else ``[max_j, max_j/scale]``; where ``s_j >= 0``, in
      ``[min_j/scale, min_j]`` if ``min_j > 0`` else ``[scale·min_j, min_j]``;
    * ``bounds="moments"`` (the paper's partial-knowledge variant): in ``[μ_j + 3σ_j,
      μ_j + 4σ_j]`` where ``s_j < 0`` and ``[μ_j − 4σ_j, μ_j − 3σ_j]`` elsewhere.

    The same attack targets trimmed mean and coordinate-wise median.

    Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust Federated Learning
    (USENIX Security).
    """
    b = check_honest(honest, num_byzantine, "fang_trimmed_mean")
    scale = check_positive(scale, "fang_trimmed_mean: scale")
    if scale < 1:
        raise ValueError(f"fang_trimmed_mean: scale must be >= 1, got {scale}")
    mu = honest_mean(honest)
    up = mu < 0  # the honest updates decrease these parameters: push them up
    if bounds == "extremes":
        top, bottom = honest.amax(dim=0), honest.amin(dim=0)
        up_far = torch.where(top > 0, top * scale, top / scale)
        down_far = torch.where(bottom > 0, bottom / scale, bottom * scale)
        start = torch.where(up, top, down_far)
        end = torch.where(up, up_far, bottom)
    elif bounds == "moments":
        sigma = honest_std(honest, "fang_trimmed_mean with bounds='moments'")
        start = torch.where(up, mu + 3 * sigma, mu - 4 * sigma)
        end = torch.where(up, mu + 4 * sigma, mu - 3 * sigma)
    else:
        raise ValueError(
            f"fang_trimmed_mean: bounds must be 'extremes' or 'moments', got {bounds!r}"
        )
    u = uniform(
        require_key(key, "fang_trimmed_mean"),
        (b, honest.shape[1]),
        dtype=honest.dtype,
        device=honest.device,
    )
    return start + u * (end - start)


@attrs.frozen
class FangKrum(Attack):
    """Attack value for :func:`fang_krum`."""

    kernel = staticmethod(fang_krum)
    f: int | None = None
    lambda_min: float = 1e-5
    radius: float = 0.0
    center: str = attrs.field(default="global", validator=attrs.validators.in_(("global", "mean")))


@attrs.frozen
class FangTrimmedMean(Attack):
    """Attack value for :func:`fang_trimmed_mean` (also the attack on the median)."""

    kernel = staticmethod(fang_trimmed_mean)
    scale: float = 2.0
    bounds: str = attrs.field(
        default="extremes", validator=attrs.validators.in_(("extremes", "moments"))
    )
