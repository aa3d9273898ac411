"""Adaptive clipping: the clip norm tracks a quantile of the client update norms.

Each round every active client reports the bit ``b_i = [‖u_i‖ ≤ C]``; the server forms the
noisy fraction ``b̃ = (Σ_i (b_i − ½) + N(0, σ_b²)) / m + ½`` and moves the clip norm
geometrically, ``C ← C · exp(−η (b̃ − γ))``, so that a fraction ``γ`` of the updates ends
up unclipped. The count query on ``b_i − ½`` has sensitivity ½, so releasing it with noise
``σ_b`` next to the mean with noise multiplier ``z_Δ`` costs as much as one Gaussian
mechanism with multiplier ``z`` when ``z_Δ = (z⁻² − (2σ_b)⁻²)^{-1/2}``; the accountant is fed
``z``.

Design. The noise on the mean needs the current ``C``, but in a chain a server transform
sees neither the transforms' state nor their info. So the full DP algorithm is one reducer,
:class:`AdaptiveClipMean` (clip to ``C`` → fixed-denominator mean → noise ``z_Δ·C/m`` → update
``C``), whose state is ``C``; filters may run before it. :class:`AdaptiveClip` is the
transform alone (clip to the adaptive ``C`` and update it, no noise on the rows), for
robustness-only use or in front of a robust reducer. Both keep ``C`` in the returned state
(a 0-d float64 tensor), never on the component.
"""

from __future__ import annotations

import math

import attrs
import torch

from fedkit.core.components import Reducer, Transform, as_weights
from fedkit.core.keys import Key, normal, split
from privacy.mechanisms.clipping import check_non_negative, check_positive, clip_rows
from privacy.mechanisms.fixed_mean import fixed_denominator_mean
from privacy.mechanisms.gaussian import gaussian_noise


def split_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """The noise multiplier ``z_Δ = (z⁻² − (2σ_b)⁻²)^{-1/2}`` left for the mean when the
    clipped-count query takes noise ``σ_b`` out of a total budget ``z`` (0 when ``z = 0``).

    (Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping.)
    """
    z = check_non_negative("noise_multiplier", noise_multiplier)
    sigma_b = check_non_negative("count_noise_std", count_noise_std)
    if z == 0.0:
        return 0.0
    if 2.0 * sigma_b <= z:
        raise ValueError(
            f"count_noise_std must exceed noise_multiplier / 2 = {z / 2:g} for the split "
            f"z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2) to exist, got {sigma_b:g}"
        )
    return (z**-2 - (2.0 * sigma_b) ** -2) ** -0.5


def unclipped_fraction(
    unclipped: torch.Tensor,
    weights: torch.Tensor,
    *,
    count_noise_std: float,
    expected_clients: float | None,
    key: Key | None,
) -> torch.Tensor:
    """The noisy fraction ``b̃`` of active clients whose bit ``unclipped`` (``‖u_i‖ ≤ C``) is
    set, as a 0-d float64 tensor; the denominator is ``expected_clients`` or, when None, the
    number of active clients.

    (Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping.)
    """
    sigma_b = check_non_negative("count_noise_std", count_noise_std)
    active = weights > 0
    centred = torch.where(active, unclipped.to(torch.float64) - 0.5, 0.0).sum()
    if sigma_b > 0.0:
        if key is None:
            raise ValueError("a noisy clipped count (count_noise_std > 0) needs a key")
        centred = centred + normal(key, (), std=sigma_b, dtype=torch.float64, device=centred.device)
    if expected_clients is None:
        m = active.sum().to(torch.float64).clamp(min=1.0)
    else:
        m = torch.tensor(check_positive("expected_clients", expected_clients), dtype=torch.float64)
    return centred / m + 0.5


def next_clip_norm(
    clip_norm: torch.Tensor, fraction: torch.Tensor, *, target_quantile: float, clip_lr: float
) -> torch.Tensor:
    """The geometric update ``C · exp(−η (b̃ − γ))``.

    (Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping.)
    """
    return clip_norm * torch.exp(-clip_lr * (fraction - target_quantile))


def adaptive_clip(
    updates: torch.Tensor,
    weights: torch.Tensor | None,
    clip_norm: torch.Tensor,
    *,
    target_quantile: float = 0.5,
    clip_lr: float = 0.2,
    count_noise_std: float = 0.0,
    expected_clients: float | None = None,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip the rows to the current ``clip_norm`` and compute the next one.

    Returns ``(clipped, next_clip_norm, was_clipped, fraction)``.

    (Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping.)
    """
    _check_quantile_and_lr(target_quantile, clip_lr)
    w = as_weights(weights, updates.shape[0], updates)
    clipped, scale = clip_rows(updates, w, clip_norm=float(clip_norm))
    was_clipped = scale < 1
    fraction = unclipped_fraction(
        ~was_clipped,
        w,
        count_noise_std=count_noise_std,
        expected_clients=expected_clients,
        key=key,
    )
    new_c = next_clip_norm(clip_norm, fraction, target_quantile=target_quantile, clip_lr=clip_lr)
    return clipped, new_c, was_clipped, fraction


def adaptive_clip_mean(
    updates: torch.Tensor,
    weights: torch.Tensor | None,
    clip_norm: torch.Tensor,
    *,
    noise_multiplier: float,
    expected_clients: float,
    target_quantile: float = 0.5,
    clip_lr: float = 0.2,
    count_noise_std: float | None = None,
    key: Key,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """DP-FedAvg with adaptive clipping for one round: clip to ``C``, fixed-denominator mean
    over ``expected_clients``, Gaussian noise ``z_Δ·C/m``, then the clip-norm update from the
    noisy count (``count_noise_std`` defaults to ``m/20`` as in the paper; with
    ``noise_multiplier = 0``, no DP, the count is exact).

    Returns ``(aggregate, next_clip_norm, was_clipped, fraction)``.

    (Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping.)
    """
    sigma_b = default_count_noise_std(count_noise_std, expected_clients)
    z_delta = split_noise_multiplier(noise_multiplier, sigma_b)
    if key is None:
        raise ValueError("adaptive_clip_mean needs a key for its noise")
    count_key, noise_key = split(key, 2)
    clipped, new_c, was_clipped, fraction = adaptive_clip(
        updates,
        weights,
        clip_norm,
        target_quantile=target_quantile,
        clip_lr=clip_lr,
        count_noise_std=sigma_b if z_delta > 0 else 0.0,
        expected_clients=expected_clients,
        key=count_key,
    )
    mean = fixed_denominator_mean(clipped, weights, expected_weight=expected_clients)
    noised = gaussian_noise(
        mean,
        noise_multiplier=z_delta,
        clip_norm=float(clip_norm),
        expected_clients=expected_clients,
        key=noise_key,
    )
    return noised, new_c, was_clipped, fraction


def default_count_noise_std(count_noise_std: float | None, expected_clients: float) -> float:
    """``count_noise_std``, or the paper's default ``m / 20`` when None."""
    m = check_positive("expected_clients", expected_clients)
    return (
        m / 20.0
        if count_noise_std is None
        else check_non_negative("count_noise_std", count_noise_std)
    )


def _check_quantile_and_lr(target_quantile: float, clip_lr: float) -> None:
    if not 0.0 <= target_quantile <= 1.0:
        raise ValueError(f"target_quantile must lie in [0, 1], got {target_quantile!r}")
    check_non_negative("clip_lr", clip_lr)


def _check_state(state: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(state, dtype=torch.float64)
    if c.ndim != 0 or not bool(c > 0) or not math.isfinite(float(c)):
        raise ValueError(f"adaptive clipping state must be a positive 0-d clip norm, got {state!r}")
    return c


@attrs.frozen
class AdaptiveClip(Transform):
    """Transform: clip rows to the clip norm held in the state and update it towards the
    ``target_quantile`` of the norms (noisy count with ``count_noise_std``). Reports
    ``"clipped"``, ``"clip_norm"`` (the C used) and ``"unclipped_fraction"``.

    (Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping.)
    """

    target_quantile: float = 0.5
    clip_lr: float = 0.2
    initial_clip: float = 0.1
    count_noise_std: float = 0.0
    expected_clients: float | None = None

    def __attrs_post_init__(self) -> None:
        _check_quantile_and_lr(self.target_quantile, self.clip_lr)
        check_positive("initial_clip", self.initial_clip)
        check_non_negative("count_noise_std", self.count_noise_std)
        if self.expected_clients is not None:
            check_positive("expected_clients", self.expected_clients)

    def init(self, d: int) -> torch.Tensor:
        return torch.tensor(float(self.initial_clip), dtype=torch.float64)

    def __call__(self, updates, weights, state, key):
        c = _check_state(state)
        clipped, new_c, was_clipped, fraction = adaptive_clip(
            updates,
            weights,
            c,
            target_quantile=self.target_quantile,
            clip_lr=self.clip_lr,
            count_noise_std=self.count_noise_std,
            expected_clients=self.expected_clients,
            key=key,
        )
        info = {"clipped": was_clipped, "clip_norm": c, "unclipped_fraction": fraction}
        return (clipped, weights), new_c, info


@attrs.frozen
class AdaptiveClipMean(Reducer):
    """Reducer: DP-FedAvg with adaptive clipping (:func:`adaptive_clip_mean`); the state is
    the clip norm. Weights must lie in [0, 1] (put :class:`UniformWeights` before it).
    ``noise_multiplier`` is the total ``z`` that the accountant is fed. The default
    ``count_noise_std = m/20`` needs ``m > 10·z``; with few clients pass a larger one.

    (Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping.)
    """

    noise_multiplier: float
    expected_clients: float
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    initial_clip: float = 0.1
    count_noise_std: float | None = None

    def __attrs_post_init__(self) -> None:
        _check_quantile_and_lr(self.target_quantile, self.clip_lr)
        check_positive("initial_clip", self.initial_clip)
        sigma_b = default_count_noise_std(self.count_noise_std, self.expected_clients)
        split_noise_multiplier(self.noise_multiplier, sigma_b)

    def init(self, d: int) -> torch.Tensor:
        return torch.tensor(float(self.initial_clip), dtype=torch.float64)

    def __call__(self, updates, weights, state, key):
        c = _check_state(state)
        out, new_c, was_clipped, fraction = adaptive_clip_mean(
            updates,
            weights,
            c,
            noise_multiplier=self.noise_multiplier,
            expected_clients=self.expected_clients,
            target_quantile=self.target_quantile,
            clip_lr=self.clip_lr,
            count_noise_std=self.count_noise_std,
            key=key,
        )
        sigma_b = default_count_noise_std(self.count_noise_std, self.expected_clients)
        z_delta = split_noise_multiplier(self.noise_multiplier, sigma_b)
        info = {
            "clipped": was_clipped,
            "clip_norm": c,
            "unclipped_fraction": fraction,
            "noise_std": z_delta * float(c) / self.expected_clients,
        }
        return out, new_c, info
