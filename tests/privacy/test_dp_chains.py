"""DP components inside fedkit.chain, in both orders with robust aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from strategies import keys

import fedkit
from fedkit.aggregators.median import Median, median
from fedkit.aggregators.trimmed_mean import TrimmedMean, trimmed_mean
from fedkit.filters.sanitize import Sanitize
from privacy.mechanisms import (
    AdaptiveClipMean,
    ClipUpdates,
    FixedMean,
    GaussianNoise,
    LocalDP,
    UniformWeights,
    clip_rows,
    dp_fedavg,
    fixed_denominator_mean,
    gaussian_noise,
    local_dp,
)


def _round(n: int = 8, d: int = 6, byzantine: int = 1, seed: int = 0) -> torch.Tensor:
    """Honest updates around 1 plus ``byzantine`` huge rows at the end."""
    rng = np.random.default_rng(seed)
    u = rng.normal(1.0, 0.1, size=(n, d))
    u[n - byzantine :] = 1e4
    return torch.as_tensor(u)


@given(keys)
def test_robust_then_dp_is_the_noised_robust_aggregate_of_clipped_rows(k):
    u, c, z, m = _round(), 2.0, 1.0, 8.0
    chain = fedkit.chain(
        ClipUpdates(clip_norm=c), UniformWeights(), TrimmedMean(f=1), GaussianNoise(z, c, m)
    )
    out, _, info = chain(u, torch.full((8,), 5.0, dtype=u.dtype), None, k)
    robust = trimmed_mean(clip_rows(u, clip_norm=c)[0], torch.ones(8, dtype=u.dtype), f=1)
    noise_key = fedkit.split(k, 4)[3]  # the chain gives component i the key split(k, n)[i]
    expected = gaussian_noise(
        robust, noise_multiplier=z, clip_norm=c, expected_clients=m, key=noise_key
    )
    torch.testing.assert_close(out, expected)
    assert bool(info["clipped"][-1])  # the Byzantine row was clipped
    assert info["3.GaussianNoise.noise_std"] == pytest.approx(z * c / m)


@given(keys)
def test_dp_then_robust_is_the_robust_aggregate_of_private_rows(k):
    u = _round()
    chain = fedkit.chain(LocalDP(clip_norm=2.0, noise_multiplier=0.5), Median())
    out, _, info = chain(u, None, None, k)
    private, _ = local_dp(u, clip_norm=2.0, noise_multiplier=0.5, key=fedkit.split(k, 2)[0])
    torch.testing.assert_close(out, median(private))
    assert bool(info["clipped"][-1])


def test_clipping_bounds_a_byzantine_client_in_either_order():
    u = _round(byzantine=1)
    honest = u[:-1]
    k = fedkit.key(0)
    # noise off: what remains is the effect of clipping + the aggregator
    dp_mean = fedkit.chain(*dp_fedavg(2.0, 0.0, 8.0))(u, None, None, k)[0]
    plain_mean = u.mean(0)
    assert float(torch.linalg.vector_norm(dp_mean)) <= 8 * 2.0 / 8.0 + 1e-9  # Σ‖row‖/m
    assert float(torch.linalg.vector_norm(plain_mean)) > 1e3
    robust = fedkit.chain(ClipUpdates(2.0), Median())(u, None, None, k)[0]
    clipped_honest_median = median(clip_rows(honest, clip_norm=2.0)[0])
    assert float(torch.linalg.vector_norm(robust - clipped_honest_median)) < 0.3


def test_filters_before_dp_fedavg_exclude_corrupted_clients():
    u = _round(byzantine=0)
    u[2, 3] = float("nan")
    chain = fedkit.chain(
        Sanitize(), *dp_fedavg(clip_norm=1.0, noise_multiplier=0.0, expected_clients=8.0)
    )
    out, _, info = chain(u, torch.arange(1.0, 9.0, dtype=u.dtype), None, fedkit.key(1))
    keep = torch.ones(8, dtype=u.dtype)
    keep[2] = 0.0
    expected = fixed_denominator_mean(
        clip_rows(u.nan_to_num(0.0), keep, clip_norm=1.0)[0], keep, expected_weight=8.0
    )
    torch.testing.assert_close(out, expected)
    assert info["rejected"]["nonfinite"].tolist() == [i == 2 for i in range(8)]
    assert torch.equal(info["accepted"], keep > 0)


def test_adaptive_clip_mean_state_threads_through_the_chain():
    u = _round(byzantine=0)
    chain = fedkit.chain(
        Sanitize(),
        UniformWeights(),
        AdaptiveClipMean(noise_multiplier=1.0, expected_clients=8.0, count_noise_std=2.0),
    )
    state = chain.init(u.shape[1])
    root, norms = fedkit.key(4), []
    for r in range(30):
        _, state, info = chain(u, None, state, fedkit.fold_in(root, r))
        norms.append(float(state[-1]))
        assert float(info["2.AdaptiveClipMean.clip_norm"]) == pytest.approx(norms[-2] if r else 0.1)
    assert norms[-1] > 10 * 0.1  # every row (norm ≈ 2.45) was clipped at first: C grew


def test_chain_order_is_checked():
    with pytest.raises(ValueError, match="cannot follow"):
        fedkit.chain(GaussianNoise(1.0, 1.0, 4.0), FixedMean(4.0))
    with pytest.raises(ValueError, match="cannot follow"):
        fedkit.chain(FixedMean(4.0), ClipUpdates(1.0))


def test_dp_fedavg_with_capped_example_weights_bounds_a_large_client_at_weight_one():
    # McMahan et al. 2018: weights min(n_k / ŵ, 1), a fixed denominator, so one client moves
    # the noise-free release by at most C / expected_weight whatever it claims
    chain = fedkit.chain(*dp_fedavg(1.0, 0.0, 4.0, uniform_weights=False, weight_cap=10.0))
    u = torch.ones(3, 5, dtype=torch.float64)
    small = chain(u, torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64), None, fedkit.key(0))[0]
    torch.testing.assert_close(small, torch.full((5,), 3 * 0.5 / 5**0.5 / 4.0, dtype=torch.float64))
    huge = chain(u, torch.tensor([5.0, 5.0, 1e9], dtype=torch.float64), None, fedkit.key(0))[0]
    assert float((huge - small).norm()) <= 1.0 / 4.0 + 1e-12


def test_dp_fedavg_refuses_raw_example_weights_and_a_cap_it_would_not_use():
    with pytest.raises(ValueError, match="weight_cap"):
        dp_fedavg(1.0, 1.0, 10.0, uniform_weights=False)
    with pytest.raises(ValueError, match="weight_cap is only used"):
        dp_fedavg(1.0, 1.0, 10.0, weight_cap=5.0)
